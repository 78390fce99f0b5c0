package proxyproto

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestInboundRoundTrip(t *testing.T) {
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51000}
	dst := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443}
	for _, v := range []int{1, 2} {
		hdr, err := Header(v, src, dst)
		if err != nil {
			t.Fatal(err)
		}
		stream := append(append([]byte{}, hdr...), "GET / HTTP/1.1\r\n"...)
		// Every strict prefix needs more; the full header is measured exactly.
		for i := 0; i < len(hdr); i++ {
			if _, err := HeaderLen(stream[:i]); !errors.Is(err, ErrNeedMore) {
				t.Fatalf("v%d prefix %d: %v", v, i, err)
			}
		}
		n, err := HeaderLen(stream)
		if err != nil || n != len(hdr) {
			t.Fatalf("v%d: len %d err %v, want %d", v, n, err, len(hdr))
		}
		p, err := Parse(stream[:n])
		if err != nil || p.Version != v || p.Src.String() != "203.0.113.7:51000" || p.Dst.String() != "198.51.100.1:443" || p.Local {
			t.Errorf("v%d: %+v %v", v, p, err)
		}
	}
}

func TestInboundRejects(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\r\n", "\x16\x03\x01", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY " + string(make([]byte, 200))} {
		if _, err := HeaderLen([]byte(in)); err == nil || errors.Is(err, ErrNeedMore) {
			t.Errorf("%q: %v", in, err)
		}
	}
	if _, err := Parse([]byte("PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n")); err == nil {
		t.Error("bad address parsed")
	}
	if p, err := Parse([]byte("PROXY UNKNOWN\r\n")); err != nil || !p.Local {
		t.Errorf("UNKNOWN: %+v %v", p, err)
	}
}

func TestTrusted(t *testing.T) {
	pfx := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for addr, want := range map[string]bool{"10.1.2.3": true, "::ffff:10.9.9.9": true, "::1": true, "11.0.0.1": false} {
		if got := Trusted(pfx, netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %v", addr, got)
		}
	}
}

// FuzzInbound: HeaderLen and Parse never panic, a measured header is never
// longer than the input, and whatever parses names TCP addresses.
func FuzzInbound(f *testing.F) {
	src := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	dst := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 2}
	for _, v := range []int{1, 2} {
		h, _ := Header(v, src, dst)
		f.Add(h)
	}
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\nrest"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := HeaderLen(b)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("HeaderLen %d of %d bytes", n, len(b))
		}
		p, err := Parse(b[:n])
		if err == nil && !p.Local && (!p.Src.IsValid() || !p.Dst.IsValid()) {
			t.Fatalf("parsed invalid addresses %+v", p)
		}
	})
}
