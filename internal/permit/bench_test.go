package permit_test

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/permit"
)

// benchLimits sets every limit, high enough never to refuse, so the
// benchmarks measure the full admission path. The rate limit reads
// time.Now on each admission and release, as in production.
var benchLimits = permit.Limits{
	Global: 1 << 30, PerPort: 1 << 30, PerIP: 1 << 30, PerApp: 1 << 30,
	IPRate: 1e9, IPBurst: 1 << 30,
}

// BenchmarkAdmitRelease is the cost every accepted connection pays:
// Admit at accept, Release at close.
func BenchmarkAdmitRelease(b *testing.B) {
	ip := netip.MustParseAddr("203.0.113.9")
	b.Run("all limits", func(b *testing.B) {
		l := permit.New(benchLimits, nil)
		b.ReportAllocs()
		for b.Loop() {
			p, err := l.Admit(443, ip)
			if err != nil {
				b.Fatal(err)
			}
			p.Release()
		}
	})
	b.Run("no rate limit", func(b *testing.B) {
		lim := benchLimits
		lim.IPRate = 0
		l := permit.New(lim, nil)
		b.ReportAllocs()
		for b.Loop() {
			p, _ := l.Admit(443, ip)
			p.Release()
		}
	})
	b.Run("with app", func(b *testing.B) {
		l := permit.New(benchLimits, nil)
		b.ReportAllocs()
		for b.Loop() {
			p, _ := l.Admit(443, ip)
			if err := p.AdmitApp("app"); err != nil {
				b.Fatal(err)
			}
			p.Release()
		}
	})
	b.Run("busy", func(b *testing.B) {
		// A steadier picture than one client connecting alone: 256
		// connections stay open while clients from a pool of 4096 come
		// and go, so shard maps neither empty nor grow.
		l := permit.New(benchLimits, nil)
		var open [256]*permit.Permit
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			slot := &open[i%len(open)]
			(*slot).Release()
			*slot, _ = l.Admit(443, v4(i%4096))
			i++
		}
		for _, p := range open {
			p.Release()
		}
	})
	b.Run("refused", func(b *testing.B) {
		l := permit.New(permit.Limits{PerIP: 1}, nil)
		p, _ := l.Admit(443, ip)
		defer p.Release()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Admit(443, ip); err == nil {
				b.Fatal("admitted past PerIP=1")
			}
		}
	})
}

// BenchmarkAdmitReleaseParallel runs the same path from every core, each
// goroutine a different client, as a busy edge sees it.
func BenchmarkAdmitReleaseParallel(b *testing.B) {
	l := permit.New(benchLimits, nil)
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ip := v4(int(next.Add(1)))
		for pb.Next() {
			p, _ := l.Admit(443, ip)
			_ = p.AdmitApp("app")
			p.Release()
		}
	})
}
