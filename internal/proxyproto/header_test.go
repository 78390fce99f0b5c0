package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

// parseBack reads hdr with go-proxyproto's reader, the same parser a machine
// behind the proxy would use, and checks it consumes exactly the header: any
// byte it over- or under-reads would corrupt the app's stream.
func parseBack(t *testing.T, hdr []byte) *pp.Header {
	t.Helper()
	const payload = "GET / HTTP/1.1\r\n"
	r := bufio.NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader([]byte(payload))))
	h, err := pp.Read(r)
	if err != nil {
		t.Fatalf("go-proxyproto cannot read %q: %v", hdr, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != payload {
		t.Fatalf("bytes after the header = %q, want %q", rest, payload)
	}
	return h
}

func tcp(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name             string
		src, dst         *net.TCPAddr
		wantProto        pp.AddressFamilyAndProtocol
		wantSrc, wantDst string // as the machine sees them
		wantV1           string
	}{
		{
			name: "IPv4", src: tcp("203.0.113.7:51234"), dst: tcp("192.0.2.10:443"),
			wantProto: pp.TCPv4, wantSrc: "203.0.113.7:51234", wantDst: "192.0.2.10:443",
			wantV1: "PROXY TCP4 203.0.113.7 192.0.2.10 51234 443\r\n",
		},
		{
			name: "IPv6", src: tcp("[2001:db8::1]:40000"), dst: tcp("[2001:db8::2]:80"),
			wantProto: pp.TCPv6, wantSrc: "[2001:db8::1]:40000", wantDst: "[2001:db8::2]:80",
			wantV1: "PROXY TCP6 2001:db8::1 2001:db8::2 40000 80\r\n",
		},
		{
			// A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d;
			// the app must still see a plain IPv4 client.
			name: "IPv4-mapped is IPv4", src: tcp("[::ffff:203.0.113.7]:1"), dst: tcp("[::ffff:192.0.2.10]:2"),
			wantProto: pp.TCPv4, wantSrc: "203.0.113.7:1", wantDst: "192.0.2.10:2",
			wantV1: "PROXY TCP4 203.0.113.7 192.0.2.10 1 2\r\n",
		},
		{
			name: "mixed families become IPv6", src: tcp("203.0.113.7:5000"), dst: tcp("[2001:db8::2]:443"),
			// The wire carries ::ffff:203.0.113.7 (see wantV1); net.IP prints
			// a v4-mapped address in its IPv4 form.
			wantProto: pp.TCPv6, wantSrc: "203.0.113.7:5000", wantDst: "[2001:db8::2]:443",
			wantV1: "PROXY TCP6 ::ffff:203.0.113.7 2001:db8::2 5000 443\r\n",
		},
		{
			name: "zone dropped", src: &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 7, Zone: "eth0"}, dst: tcp("[fe80::2]:8"),
			wantProto: pp.TCPv6, wantSrc: "[fe80::1]:7", wantDst: "[fe80::2]:8",
			wantV1: "PROXY TCP6 fe80::1 fe80::2 7 8\r\n",
		},
	}
	for _, tc := range tests {
		for _, version := range []int{V1, V2} {
			t.Run(tc.name+map[int]string{V1: "/v1", V2: "/v2"}[version], func(t *testing.T) {
				hdr, err := Header(version, tc.src, tc.dst)
				if err != nil {
					t.Fatal(err)
				}
				if version == V1 && string(hdr) != tc.wantV1 {
					t.Errorf("v1 header = %q, want %q", hdr, tc.wantV1)
				}
				if version == V2 && !bytes.HasPrefix(hdr, pp.SIGV2) {
					t.Errorf("v2 header lacks the v2 signature: %x", hdr)
				}
				h := parseBack(t, hdr)
				if int(h.Version) != version || h.Command != pp.PROXY || h.TransportProtocol != tc.wantProto {
					t.Errorf("parsed version %d command %v proto %#x; want %d PROXY %#x",
						h.Version, h.Command, h.TransportProtocol, version, tc.wantProto)
				}
				if h.SourceAddr.String() != tc.wantSrc || h.DestinationAddr.String() != tc.wantDst {
					t.Errorf("parsed %v -> %v, want %s -> %s", h.SourceAddr, h.DestinationAddr, tc.wantSrc, tc.wantDst)
				}
			})
		}
	}
}

func TestHeaderRejects(t *testing.T) {
	v4 := tcp("192.0.2.1:1")
	tests := []struct {
		name     string
		version  int
		src, dst net.Addr
		notTCP   bool
	}{
		{name: "version 0", version: 0, src: v4, dst: v4},
		{name: "version 3", version: 3, src: v4, dst: v4},
		{name: "UDP", version: V1, src: &net.UDPAddr{IP: v4.IP, Port: 1}, dst: v4, notTCP: true},
		{name: "unix", version: V2, src: &net.UnixAddr{Name: "/s", Net: "unix"}, dst: v4, notTCP: true},
		{name: "nil", version: V1, src: nil, dst: v4, notTCP: true},
		{name: "typed nil", version: V1, src: (*net.TCPAddr)(nil), dst: v4, notTCP: true},
		{name: "no IP", version: V2, src: &net.TCPAddr{Port: 1}, dst: v4, notTCP: true},
		{name: "port out of range", version: V1, src: &net.TCPAddr{IP: v4.IP, Port: 70000}, dst: v4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr, err := Header(tc.version, tc.src, tc.dst)
			if err == nil {
				t.Fatalf("Header = %q, want an error", hdr)
			}
			if got := errors.Is(err, ErrNotTCP); got != tc.notTCP {
				t.Errorf("errors.Is(%v, ErrNotTCP) = %v, want %v", err, got, tc.notTCP)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{"": V1, "v1": V1, "v2": V2} {
		if got, err := ParseVersion(in); got != want || err != nil {
			t.Errorf("ParseVersion(%q) = %d, %v; want %d, nil", in, got, err, want)
		}
	}
	for _, in := range []string{"1", "2", "V2", "v3", " v1", "v2 "} {
		if got, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) = %d, nil; want an error", in, got)
		}
	}
}

// FuzzHeaderRoundTrip checks, for arbitrary address bytes and ports, that
// Header either refuses or produces a header go-proxyproto parses back to the
// same client and destination, consuming exactly the header.
func FuzzHeaderRoundTrip(f *testing.F) {
	f.Add(uint8(1), []byte{203, 0, 113, 7}, uint16(51234), []byte{192, 0, 2, 10}, uint16(443))
	f.Add(uint8(2), []byte(net.ParseIP("2001:db8::1")), uint16(0), []byte(net.ParseIP("::ffff:1.2.3.4")), uint16(65535))
	f.Add(uint8(2), []byte{1, 2, 3}, uint16(1), []byte{}, uint16(2))
	f.Fuzz(func(t *testing.T, version uint8, srcIP []byte, srcPort uint16, dstIP []byte, dstPort uint16) {
		src := &net.TCPAddr{IP: srcIP, Port: int(srcPort)}
		dst := &net.TCPAddr{IP: dstIP, Port: int(dstPort)}
		hdr, err := Header(int(version), src, dst)

		validIP := func(ip []byte) bool { return len(ip) == net.IPv4len || len(ip) == net.IPv6len }
		valid := (version == V1 || version == V2) && validIP(srcIP) && validIP(dstIP)
		if !valid {
			if err == nil {
				t.Fatalf("Header(%d, %v, %v) = %q, want an error", version, src, dst, hdr)
			}
			return
		}
		if err != nil {
			t.Fatalf("Header(%d, %v, %v): %v", version, src, dst, err)
		}
		h := parseBack(t, hdr)
		gotSrc, gotDst, ok := h.TCPAddrs()
		if !ok {
			t.Fatalf("parsed header is not TCP: %+v", h)
		}
		same := func(a net.IP, b []byte) bool { return a.Equal(net.IP(b)) }
		if !same(gotSrc.IP, srcIP) || gotSrc.Port != src.Port || !same(gotDst.IP, dstIP) || gotDst.Port != dst.Port {
			t.Fatalf("round trip %v -> %v gave %v -> %v", src, dst, gotSrc, gotDst)
		}
	})
}
