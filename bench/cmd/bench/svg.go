package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// chartRow is one scenario of the chart: edgeproxy's headline figure as a
// multiple of nginx's and of HAProxy's.
type chartRow struct {
	Label            string
	VsNginx, VsHAP   float64
	Unit             string
	HigherWouldBeBad bool // always true here: every figure is a cost
}

const (
	colNginx   = "#2e8b57"
	colHAProxy = "#3b6fb6"
)

// renderChart draws a horizontal grouped bar chart, plain SVG, with a
// dashed line at 1.0 (parity). Missing ratios are written as n/a.
func renderChart(title, subtitle string, rows []chartRow) string {
	const (
		width    = 860
		labelW   = 300
		rightPad = 70
		top      = 92
		rowH     = 50
		barH     = 15
	)
	plotW := float64(width - labelW - rightPad)
	maxV := 1.5
	for _, r := range rows {
		for _, v := range []float64{r.VsNginx, r.VsHAP} {
			if !math.IsNaN(v) && !math.IsInf(v, 0) && v*1.08 > maxV {
				maxV = v * 1.08
			}
		}
	}
	step := 0.25
	switch {
	case maxV > 8:
		step = 2
	case maxV > 4:
		step = 1
	case maxV > 2:
		step = 0.5
	}
	maxV = math.Ceil(maxV/step) * step
	x := func(v float64) float64 { return float64(labelW) + plotW*v/maxV }
	height := top + rowH*len(rows) + 46

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="12" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="12" y="40" fill="#555">%s</text>`+"\n", html.EscapeString(subtitle))
	// Legend.
	fmt.Fprintf(&b, `<rect x="%d" y="50" width="12" height="12" fill="%s"/><text x="%d" y="60">edgeproxy ÷ nginx</text>`+"\n", labelW, colNginx, labelW+17)
	fmt.Fprintf(&b, `<rect x="%d" y="50" width="12" height="12" fill="%s"/><text x="%d" y="60">edgeproxy ÷ HAProxy</text>`+"\n", labelW+150, colHAProxy, labelW+167)

	plotBottom := top + rowH*len(rows)
	// Grid and axis labels.
	for v := 0.0; v <= maxV+1e-9; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e3e3e3"/>`+"\n", x(v), top-6, x(v), plotBottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s×</text>`+"\n", x(v), plotBottom+16, trimFloat(v))
	}
	for i, r := range rows {
		y0 := top + i*rowH
		if i%2 == 1 {
			fmt.Fprintf(&b, `<rect x="0" y="%d" width="%d" height="%d" fill="#f7f7f7" fill-opacity="0.6"/>`+"\n", y0-4, labelW-6, rowH)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-10, y0+14, html.EscapeString(r.Label))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#777" font-size="10.5">%s</text>`+"\n", labelW-10, y0+29, html.EscapeString(r.Unit))
		for j, v := range []float64{r.VsNginx, r.VsHAP} {
			col := colNginx
			if j == 1 {
				col = colHAProxy
			}
			y := y0 + j*(barH+4)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#999">n/a</text>`+"\n", labelW+4, y+barH-3)
				continue
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y, x(v)-float64(labelW), barH, col)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" stroke="#ffffff" stroke-width="3" paint-order="stroke">%.2f×</text>`+"\n", x(v)+4, y+barH-3, v)
		}
	}
	// Parity line.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n", x(1), top-8, x(1), plotBottom+2)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#c0392b" font-size="11">parity</text>`+"\n", x(1)+4, top-10)
	fmt.Fprintf(&b, `<text x="12" y="%d" fill="#555" font-size="11">Lower is better: below 1.0× edgeproxy needs less CPU (or memory) than the peer for the same work.</text>`+"\n", plotBottom+36)
	b.WriteString("</svg>\n")
	return b.String()
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
