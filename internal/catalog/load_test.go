package catalog_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
)

func TestTryAcquireSequential(t *testing.T) {
	var l catalog.Load
	for i := range 3 {
		if !l.TryAcquire(3) {
			t.Fatalf("acquire %d refused below hard", i)
		}
	}
	if l.TryAcquire(3) {
		t.Fatal("acquire at hard succeeded")
	}
	l.Release()
	if !l.TryAcquire(3) || l.Value() != 3 {
		t.Fatalf("after release: value %d", l.Value())
	}
	var unlimited catalog.Load
	for range 1000 {
		if !unlimited.TryAcquire(0) {
			t.Fatal("hard 0 means no limit")
		}
	}
	// A counter already beyond a lowered hard limit (after a reload) takes
	// nothing until it drains below it.
	if l.TryAcquire(2) {
		t.Error("acquire beyond hard succeeded")
	}
}

// TestTryAcquireRace has many goroutines race for a few slots, repeatedly:
// the successes must equal the hard limit exactly, never more.
func TestTryAcquireRace(t *testing.T) {
	const hard, workers, tries = 7, 64, 50
	for round := range 20 {
		var l catalog.Load
		var ok atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range workers {
			wg.Go(func() {
				<-start
				for range tries {
					if l.TryAcquire(hard) {
						ok.Add(1)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != hard || l.Value() != hard {
			t.Fatalf("round %d: %d successes, value %d, want %d", round, ok.Load(), l.Value(), hard)
		}
	}
}

// TestTryAcquireReleaseRace mixes releases in: whatever interleaving, the
// value never exceeds hard and ends at zero.
func TestTryAcquireReleaseRace(t *testing.T) {
	const hard = 3
	var l catalog.Load
	var over atomic.Bool
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 500 {
				if l.TryAcquire(hard) {
					if l.Value() > hard {
						over.Store(true)
					}
					l.Release()
				}
			}
		})
	}
	wg.Wait()
	if over.Load() {
		t.Error("load exceeded hard")
	}
	if l.Value() != 0 {
		t.Errorf("final load %d, want 0", l.Value())
	}
}

func waiters(t *testing.T) *catalog.Waiters {
	t.Helper()
	return build(t, before, nil).App("web").Services[0].Waiters()
}

func TestWaitersWake(t *testing.T) {
	w := waiters(t)
	const n = 8
	errs := make(chan error, n)
	var ready sync.WaitGroup
	for range n {
		ready.Add(1)
		go func() {
			ch := w.Chan()
			defer w.Done()
			ready.Done()
			errs <- catalog.Wait(context.Background(), ch)
		}()
	}
	ready.Wait()
	w.Wake()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Wait = %v, want nil", err)
		}
	}
}

func TestWaitersChannelIsPerWake(t *testing.T) {
	w := waiters(t)
	before := w.Chan()
	defer w.Done()
	w.Wake()
	select {
	case <-before:
	default:
		t.Fatal("channel taken before Wake is not closed")
	}
	after := w.Chan()
	defer w.Done()
	select {
	case <-after:
		t.Fatal("channel taken after Wake is already closed: waiters would spin")
	default:
	}
	// Waking twice in a row must not close a closed channel.
	w.Wake()
	w.Wake()
}

func TestWaitContext(t *testing.T) {
	w := waiters(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ch := w.Chan()
	defer w.Done()
	if err := catalog.Wait(ctx, ch); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on cancelled ctx = %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := catalog.Wait(ctx, ch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with no Wake = %v, want deadline", err)
	}
}

// TestWakeWithoutWaiters: a release with nobody queued skips the lock and
// closes nothing, and a wait begun afterwards still sees the next Wake.
func TestWakeWithoutWaiters(t *testing.T) {
	w := waiters(t)
	for range 3 {
		w.Wake()
	}
	ch := w.Chan()
	defer w.Done()
	select {
	case <-ch:
		t.Fatal("channel closed by a Wake that happened before Chan")
	default:
	}
	w.Wake()
	select {
	case <-ch:
	default:
		t.Fatal("Wake after Chan did not close the channel")
	}
}

// TestWaitersConcurrentWake runs Chan, Wake and Wait together for the race
// detector: a waiter must never miss the wake that follows its Chan.
func TestWaitersConcurrentWake(t *testing.T) {
	w := waiters(t)
	stop := make(chan struct{})
	wakerDone := make(chan struct{})
	go func() {
		defer close(wakerDone)
		for {
			select {
			case <-stop:
				return
			default:
				w.Wake()
			}
		}
	}()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 200 {
				ch := w.Chan()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := catalog.Wait(ctx, ch)
				cancel()
				w.Done()
				if err != nil {
					t.Errorf("wake missed: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-wakerDone
}
