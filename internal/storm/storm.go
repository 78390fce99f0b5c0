// Package storm generates, at volume, the connection shapes that triggered
// the incident in docs/incident.md (close_notify with junk behind it, then a hold,
// FIN or RST; FIN mid-body; close_notify after a complete request) plus
// ordinary keep-alive traffic as a control, against a TLS or plain HTTP port,
// and reports what the client saw and what the target paid for it: outcomes
// and latencies per shape, the target's CPU during the storm and during an
// idle window after it (a spinning connection shows up as idle CPU), its open
// descriptors, and the deltas of its spurious-wakeup counters.
//
// Run is the whole tool; `edgeproxy storm` only parses flags and prints, and
// regression tests call Run in-process against a proxy in another process.
// Targets must be loopback unless Config.AllowRemote is set.
package storm

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Run storms cfg.Target and returns the report. progress, when non-nil,
// gets a live progress bar if it is a terminal and a line every
// cfg.ProgressInterval otherwise. On cancellation of ctx Run stops starting
// connections, closes the ones in flight, and returns what it has with
// ctx's error; the connections it closed are counted in Report.Aborted only.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	addrs, err := resolveTarget(ctx, cfg.Target, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	if cfg.MetricsURL != "" {
		if err := checkURL(ctx, cfg.MetricsURL, cfg.AllowRemote); err != nil {
			return nil, err
		}
	}
	cycle, err := newShapeCycle(cfg.Shapes)
	if err != nil {
		return nil, err
	}
	obs := newObserver(cfg)
	defer obs.close()
	before, err := obs.sample(ctx)
	if err != nil {
		return nil, err
	}

	rep := newReport(cfg)
	rep.FDsBefore = before.fds
	st := &stormState{agg: newAggregate(), total: cfg.Count}
	pr := startProgress(progress, cfg.ProgressInterval, st)
	start := time.Now()
	st.run(ctx, newRunner(cfg, addrs), cycle, start.Add(cfg.Duration), cfg.Concurrency)
	rep.Elapsed = time.Since(start)
	pr.stop()

	mid, err := obs.sample(ctx)
	rep.warn("after the storm", err)
	after := mid
	if cfg.Idle > 0 && obs.active() && ctx.Err() == nil {
		if progress != nil {
			fmt.Fprintf(progress, "storm: idle window %s\n", cfg.Idle)
		}
		idleStart := time.Now()
		wait(ctx, cfg.Idle)
		rep.IdleWindow = time.Since(idleStart)
		after, err = obs.sample(ctx)
		rep.warn("after the idle window", err)
	}

	st.agg.fill(rep)
	rep.Started = int(min(st.started.Load(), int64(cfg.Count)))
	rep.StoppedByDuration = st.expired.Load()
	rep.observe(cfg.Counters, before, mid, after)
	return rep, ctx.Err()
}

// stormState is what the workers share: the next connection index, and the
// aggregate that the progress display reads.
type stormState struct {
	agg     *aggregate
	total   int
	next    atomic.Int64
	started atomic.Int64
	expired atomic.Bool
}

// run starts connections from concurrency workers until Count have started,
// the duration cap passes, or ctx is cancelled, then waits for all of them.
// Connection i gets shape cycle[i%len(cycle)].
func (st *stormState) run(ctx context.Context, r *runner, cycle []Shape, stopAt time.Time, concurrency int) {
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				if time.Now().After(stopAt) {
					st.expired.Store(true)
					return
				}
				i := st.next.Add(1) - 1
				if i >= int64(st.total) {
					return
				}
				st.started.Add(1)
				st.agg.add(r.one(ctx, cycle[i%int64(len(cycle))]))
			}
		})
	}
	wg.Wait()
}

// wait sleeps for d or until ctx is done.
func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// aggregate collects results from all workers. A mutex is fine: one lock per
// connection is nothing next to a TLS handshake.
type aggregate struct {
	done   atomic.Int64 // counted connections, for progress
	errors atomic.Int64 // counted connections that were not ok

	mu      sync.Mutex
	shapes  map[Shape]*ShapeReport
	aborted int
}

func newAggregate() *aggregate {
	return &aggregate{shapes: map[Shape]*ShapeReport{}}
}

func (a *aggregate) add(res result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if res.aborted {
		a.aborted++
		return
	}
	sr := a.shapes[res.shape]
	if sr == nil {
		sr = newShapeReport()
		a.shapes[res.shape] = sr
	}
	sr.add(res)
	a.done.Add(1)
	if res.outcome != OK {
		a.errors.Add(1)
	}
}

// fill moves the aggregate into the report; the workers have all finished.
func (a *aggregate) fill(rep *Report) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for sh, sr := range a.shapes {
		sr.finish()
		rep.Shapes[sh] = sr
		rep.Completed += sr.Count
	}
	rep.Aborted = a.aborted
	if rep.Elapsed > 0 {
		rep.Rate = float64(rep.Completed) / rep.Elapsed.Seconds()
	}
}
