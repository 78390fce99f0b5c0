package iox

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/meter"
)

// layered stacks what the server puts on a raw TCP connection: a guard
// around the socket, a meter, a guard around that.
func layered(c *net.TCPConn, stats *Stats) (net.Conn, *meter.Conn) {
	g := NewGuard(c, DefaultGuardLimits(), stats, nil)
	m := meter.New(g.Wrap("tcp", c))
	return g.Wrap("wire", m), m
}

// opaque is a layer that is not Transparent: it forces the copy path.
type opaque struct{ net.Conn }

// Bytes spliced beneath the guard and the meter are still counted by
// them: the meter sees every byte both ways, the guard every read, and the
// half-closes pass through.
func TestSpliceKeepsAccounting(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		name := map[bool]string{false: "splice", true: "copy"}[noSplice]
		t.Run(name, func(t *testing.T) {
			p := newProxied(t)
			stats := &Stats{}
			a, am := layered(p.a, stats)
			if _, _, ok := spliceChain(a, true); !ok && runtime.GOOS == "linux" {
				t.Fatal("guard and meter over TCP should be spliceable")
			}
			done := runDuplex(a, p.b, DuplexOptions{Pool: NewBufferPool(0), NoSplice: noSplice})
			request, response := randomBytes(700<<10), randomBytes(3<<20)
			errs := make(chan error, 2)
			go sendAndHalfClose(p.client, request, errs)
			got, err := io.ReadAll(p.server)
			if err != nil || !bytes.Equal(got, request) {
				t.Fatalf("request: %d bytes, %v", len(got), err)
			}
			go sendAndHalfClose(p.server, response, errs)
			got, err = io.ReadAll(p.client)
			if err != nil || !bytes.Equal(got, response) {
				t.Fatalf("response: %d bytes, %v", len(got), err)
			}
			r := <-done
			if r.err != nil || r.aToB != int64(len(request)) || r.bToA != int64(len(response)) {
				t.Fatalf("Duplex = %+v", r)
			}
			in, out := am.Bytes()
			if in != int64(len(request)) || out != int64(len(response)) {
				t.Errorf("meter counted in %d out %d, want %d %d", in, out, len(request), len(response))
			}
			for _, layer := range []string{"tcp", "wire"} {
				if reads := stats.Layer(layer).Reads.Load(); reads < 2 {
					t.Errorf("guard layer %s counted %d reads", layer, reads)
				}
				if z := stats.Layer(layer).ZeroProgressReads.Load(); z != 0 {
					t.Errorf("guard layer %s counted %d zero-progress reads", layer, z)
				}
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestSpliceChainRefusesOpaqueOrBufferedLayers(t *testing.T) {
	p := newProxied(t)
	stats := &Stats{}
	g := NewGuard(p.a, DefaultGuardLimits(), stats, nil)
	if _, _, ok := spliceChain(g.Wrap("wire", opaque{p.a}), true); ok {
		t.Error("a layer that must see the bytes was bypassed")
	}
	g2 := NewGuard(p.b, DefaultGuardLimits(), stats, nil)
	top := g2.Wrap("wire", p.b)
	top.rerr = io.EOF
	if _, _, ok := spliceChain(top, true); ok {
		t.Error("a layer with a terminal error was bypassed")
	}
}
