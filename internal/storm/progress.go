package storm

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// ttyRedraw is the redraw period on a terminal: ten frames a second reads
// as live without the storm's own CPU showing up in the numbers.
const ttyRedraw = 100 * time.Millisecond

// progressDisplay draws the storm's progress from its own goroutine, reading
// only the aggregate's atomics, until stop.
type progressDisplay struct {
	w     io.Writer
	tty   bool
	st    *stormState
	start time.Time
	quit  chan struct{}
	done  chan struct{}
}

// startProgress starts the display; with a nil writer it returns one whose
// stop does nothing.
func startProgress(w io.Writer, interval time.Duration, st *stormState) *progressDisplay {
	p := &progressDisplay{w: w, st: st, start: time.Now()}
	if w == nil {
		return p
	}
	p.tty = isTerminal(w)
	if p.tty {
		interval = ttyRedraw
	}
	p.quit, p.done = make(chan struct{}), make(chan struct{})
	go p.loop(interval)
	return p
}

func (p *progressDisplay) loop(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.draw()
		case <-p.quit:
			p.draw()
			if p.tty {
				io.WriteString(p.w, "\n")
			}
			return
		}
	}
}

func (p *progressDisplay) draw() {
	done, errs := p.st.agg.done.Load(), p.st.agg.errors.Load()
	elapsed := time.Since(p.start)
	if p.tty {
		// \x1b[K clears what a longer previous frame left behind.
		io.WriteString(p.w, "\r"+progressBar(done, int64(p.st.total), errs, elapsed)+"\x1b[K")
		return
	}
	fmt.Fprintf(p.w, "storm: %s\n", progressLine(done, int64(p.st.total), errs, elapsed))
}

// stop draws a last frame and waits for the goroutine to end.
func (p *progressDisplay) stop() {
	if p.quit == nil {
		return
	}
	close(p.quit)
	<-p.done
}

// progressBar is one terminal frame: a bar, then the numbers.
func progressBar(done, total, errs int64, elapsed time.Duration) string {
	const width = 30
	filled := 0
	if total > 0 {
		filled = int(min(done, total) * width / total)
	}
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	return "[" + bar + "] " + progressLine(done, total, errs, elapsed)
}

func progressLine(done, total, errs int64, elapsed time.Duration) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	return fmt.Sprintf("%d/%d conns, %.0f/s, %d errors, %s", done, total, rate, errs,
		elapsed.Round(100*time.Millisecond))
}

// isTerminal reports whether w is a character device. golang.org/x/term
// would ask the tty driver; the mode bit is enough to choose between a
// redrawn bar and log lines, and keeps a dependency out.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
