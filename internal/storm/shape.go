package storm

import (
	"fmt"
	"strconv"
	"strings"
)

// Shape names one way a connection ends. Each is a shape from docs/incident.md.
type Shape string

const (
	// CNJunkHold sends a complete request, close_notify, then junk bytes
	// behind it on the socket, and holds the connection open for Hold.
	CNJunkHold Shape = "cn-junk-hold"
	// CNJunkFIN is CNJunkHold with a TCP FIN instead of the hold.
	CNJunkFIN Shape = "cn-junk-fin"
	// CNJunkRST is CNJunkHold with a TCP RST instead of the hold.
	CNJunkRST Shape = "cn-junk-rst"
	// FINMidBody announces a body, sends half of it, then close_notify and
	// FIN.
	FINMidBody Shape = "fin-mid-body"
	// CompleteCN sends a complete request, then close_notify, and expects
	// the whole response anyway.
	CompleteCN Shape = "complete-cn"
	// KeepAlive makes RequestsPerConn ordinary requests on one connection.
	KeepAlive Shape = "keepalive"
)

// Shapes lists every shape in the order reports print them.
func Shapes() []Shape {
	return []Shape{CNJunkHold, CNJunkFIN, CNJunkRST, FINMidBody, CompleteCN, KeepAlive}
}

func knownShape(s Shape) bool {
	for _, k := range Shapes() {
		if k == s {
			return true
		}
	}
	return false
}

// Outcome is how one connection ended, seen from the client.
type Outcome string

const (
	// OK means the shape got what a correct server gives it; see each
	// shape's rule in conn.go.
	OK Outcome = "ok"
	// ResponseTruncated means part of a response arrived, then the
	// connection ended or stalled.
	ResponseTruncated Outcome = "response_truncated"
	// Reset means the server reset the connection before any response.
	Reset Outcome = "reset"
	// Timeout means the connection reached Timeout (or, for cn-junk-hold,
	// the end of Hold) still waiting for the server.
	Timeout Outcome = "timeout"
	// Refused means the dial was refused.
	Refused Outcome = "refused"
	// TLSError means the handshake or a record failed.
	TLSError Outcome = "tls_error"
	// ClosedEarly means the server closed cleanly before any response.
	ClosedEarly Outcome = "closed_early"
	// Other is anything else; the first such error per shape is kept in
	// the report.
	Other Outcome = "other"
)

// Outcomes lists every outcome in the order reports print them.
func Outcomes() []Outcome {
	return []Outcome{OK, ResponseTruncated, Reset, Timeout, Refused, TLSError, ClosedEarly, Other}
}

// ShapeWeight is a shape and its share of the connections.
type ShapeWeight struct {
	Shape  Shape
	Weight int
}

func allShapes(weight int) []ShapeWeight {
	var out []ShapeWeight
	for _, s := range Shapes() {
		out = append(out, ShapeWeight{s, weight})
	}
	return out
}

// maxWeightSum bounds the precomputed shape cycle.
const maxWeightSum = 10000

// ParseShapes reads the -shapes flag: "all", or a comma list of shape names,
// each optionally "=WEIGHT". "all" gives every shape not otherwise named
// weight 1, so "all,keepalive=5" and "all,cn-junk-rst=0" both work.
func ParseShapes(s string) ([]ShapeWeight, error) {
	weights := map[Shape]int{}
	all := false
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if item == "all" {
			all = true
			continue
		}
		name, w, hasWeight := strings.Cut(item, "=")
		sh := Shape(strings.TrimSpace(name))
		if !knownShape(sh) {
			return nil, fmt.Errorf("storm: unknown shape %q (known: %s, all)", name, shapeList())
		}
		weight := 1
		if hasWeight {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 0 || n > maxWeightSum {
				return nil, fmt.Errorf("storm: shape %s: weight %q must be an integer from 0 to %d", sh, w, maxWeightSum)
			}
			weight = n
		}
		weights[sh] = weight
	}
	var out []ShapeWeight
	for _, sh := range Shapes() {
		w, named := weights[sh]
		if !named && all {
			w, named = 1, true
		}
		if named {
			out = append(out, ShapeWeight{sh, w})
		}
	}
	if _, err := newShapeCycle(out); err != nil {
		return nil, err
	}
	return out, nil
}

func shapeList() string {
	var names []string
	for _, s := range Shapes() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

// newShapeCycle spreads the weights over one cycle with smooth weighted
// round-robin (nginx's upstream algorithm), so connection i gets
// cycle[i%len(cycle)] and a 3:1 mix interleaves instead of arriving in
// blocks. Deterministic: two runs with one config storm alike.
func newShapeCycle(ws []ShapeWeight) ([]Shape, error) {
	total := 0
	for _, w := range ws {
		if !knownShape(w.Shape) {
			return nil, fmt.Errorf("storm: unknown shape %q", w.Shape)
		}
		if w.Weight < 0 {
			return nil, fmt.Errorf("storm: shape %s has a negative weight", w.Shape)
		}
		total += w.Weight
	}
	if total == 0 {
		return nil, fmt.Errorf("storm: no shape has a positive weight")
	}
	if total > maxWeightSum {
		return nil, fmt.Errorf("storm: shape weights add up to %d, more than %d", total, maxWeightSum)
	}
	current := make([]int, len(ws))
	cycle := make([]Shape, 0, total)
	for range total {
		best := -1
		for i, w := range ws {
			current[i] += w.Weight
			if w.Weight > 0 && (best < 0 || current[i] > current[best]) {
				best = i
			}
		}
		current[best] -= total
		cycle = append(cycle, ws[best].Shape)
	}
	return cycle, nil
}
