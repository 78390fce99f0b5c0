package catalog

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// Check is one health check of a service, with defaults applied.
type Check struct {
	// HTTP is true for an http check, false for a tcp check.
	HTTP bool
	config.HTTPCheck
}

// Name identifies a check in logs, metrics and PR01 messages.
func (c Check) Name() string {
	if c.HTTP {
		return "http:" + c.Method + " " + c.Path
	}
	return "tcp"
}

// Health is whether a machine may take a service's traffic, as its health
// checks last said. Routing reads it on every decision, so the answer is
// one atomic load; the checkers write it rarely.
type Health struct {
	ok atomic.Bool
	mu sync.Mutex
	// failing maps a check's index to why it fails.
	failing map[int]string
	since   time.Time
}

func newHealth() *Health {
	h := &Health{}
	h.ok.Store(true)
	return h
}

// Healthy reports whether every check passes (true when there are none).
func (h *Health) Healthy() bool { return h.ok.Load() }

// Set records check's verdict: reason empty means passing. It reports
// whether the machine's overall health changed.
func (h *Health) Set(check int, reason string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	was := len(h.failing) == 0
	if reason == "" {
		delete(h.failing, check)
	} else {
		if h.failing == nil {
			h.failing = map[int]string{}
		}
		h.failing[check] = reason
	}
	now := len(h.failing) == 0
	h.ok.Store(now)
	if was != now {
		h.since = time.Now()
	}
	return was != now
}

// Reset forgets every verdict: the service no longer has checks.
func (h *Health) Reset() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := len(h.failing) > 0
	h.failing = nil
	h.ok.Store(true)
	return changed
}

// Reason is why the machine is unhealthy, "" when it is healthy.
func (h *Health) Reason() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	best := -1
	for i := range h.failing {
		if best < 0 || i < best {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return h.failing[best]
}
