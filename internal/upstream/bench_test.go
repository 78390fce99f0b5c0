package upstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

// BenchmarkAcquireRelease is the balancing work of one request: choose a
// machine among four, take a unit of its load, give it back.
func BenchmarkAcquireRelease(b *testing.B) {
	svc := service(b, 0, mach{id: "a"}, mach{id: "b"}, mach{id: "c"}, mach{id: "d"})
	p := &upstream.Picker{Region: region, Intn: func(n int) int { return 0 }, QueueTimeout: time.Second}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := p.Acquire(ctx, svc, nil)
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}
