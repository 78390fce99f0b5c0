package sniff

import (
	"bytes"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestClientHelloValid(t *testing.T) {
	tls12 := []uint16{0x0303}
	tests := []struct {
		name string
		wire []byte
		want HelloInfo // Len is checked against len(wire)
	}{
		{"no extensions block", func() []byte {
			h := baseHello()
			h.version, h.noExts = 0x0301, true
			return h.wire()
		}(), HelloInfo{Versions: []uint16{0x0301}}},
		{"empty extensions block", baseHello().wire(), HelloInfo{Versions: tls12}},
		{"empty session id", func() []byte {
			h := baseHello(sniExt("a.b"))
			h.sessionID = nil
			return h.wire()
		}(), HelloInfo{ServerName: "a.b", Versions: tls12}},
		{"compression list with null not first", func() []byte {
			h := baseHello()
			h.comp = []byte{1, 0}
			return h.wire()
		}(), HelloInfo{Versions: tls12}},
		{"SNI, ALPN and versions among unknown extensions",
			baseHello(rawExt(0x0a0a), sniExt("Example.COM"), rawExt(23), alpnExt("h2", "http/1.1", "acme-tls/1"),
				versionsExt(0x1a1a, 0x0304, 0x0303), rawExt(0xfe0d, 1, 2, 3)).wire(),
			HelloInfo{ServerName: "Example.COM", ALPN: []string{"h2", "http/1.1", "acme-tls/1"}, Versions: []uint16{0x0304, 0x0303}}},
		{"underscore, digits and hyphens in host", baseHello(sniExt("_acme-1.x9-y.example")).wire(),
			HelloInfo{ServerName: "_acme-1.x9-y.example", Versions: tls12}},
		{"63-byte label and 253-byte name", baseHello(sniExt(longName(253))).wire(),
			HelloInfo{ServerName: longName(253), Versions: tls12}},
		{"unknown name type skipped", baseHello(testExt{extServerName,
			vec16(append(append([]byte{7}, vec16([]byte("??"))...), append([]byte{0}, vec16([]byte("h.example"))...)...))}).wire(),
			HelloInfo{ServerName: "h.example", Versions: tls12}},
		{"binary ALPN name", baseHello(alpnExt("\x00\xff")).wire(),
			HelloInfo{ALPN: []string{"\x00\xff"}, Versions: tls12}},
		{"future versions kept", baseHello(versionsExt(0x0305, 0x7f1c)).wire(),
			HelloInfo{Versions: []uint16{0x0305, 0x7f1c}}},
		// RFC 6066 forbids IP literals as host_name; wrk sends them anyway.
		{"IPv4 literal", baseHello(sniExt("127.0.0.1")).wire(),
			HelloInfo{ServerName: "127.0.0.1", Versions: tls12}},
		{"IPv6 literal", baseHello(sniExt("::1")).wire(),
			HelloInfo{ServerName: "::1", Versions: tls12}},
		{"IPv6 literal with IPv4 tail", baseHello(sniExt("::ffff:10.0.0.1")).wire(),
			HelloInfo{ServerName: "::ffff:10.0.0.1", Versions: tls12}},
		{"largest hello", func() []byte {
			h := baseHello(sniExt("big.example"))
			pad := MaxHelloLen - len(h.body()) - 4
			h.exts = append(h.exts, testExt{21, make([]byte, pad)})
			return records(message(typeClientHello, h.body()), maxRecordLen)
		}(), HelloInfo{ServerName: "big.example", Versions: tls12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			want.Len = len(tt.wire)
			v := checkPrefixes(t, tt.wire, helloVerdict(t))
			if v.r != Match {
				_, _, err := ClientHello(tt.wire)
				t.Fatalf("ClientHello = %v (%v), want Match", v.r, err)
			}
			if got := v.info.(HelloInfo); !reflect.DeepEqual(got, want) {
				t.Errorf("ClientHello = %+v, want %+v", got, want)
			}
		})
	}
}

// longName builds a valid n-byte host name from 63-byte labels.
func longName(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("a", min(63, n-b.Len())))
	}
	return b.String()
}

func TestClientHelloMalformed(t *testing.T) {
	ok := baseHello(sniExt("ok.example")).wire()
	patch := func(b []byte, off int, vals ...byte) []byte {
		b = bytes.Clone(b)
		copy(b[off:], vals)
		return b
	}
	withExts := func(exts ...testExt) []byte { return baseHello(exts...).wire() }
	tests := []struct {
		name string
		wire []byte
		want string // in the error text
	}{
		{"record version 2.0", patch(ok, 1, 2), "record version major"},
		{"record version 3.5", patch(ok, 2, 5), "record version 3.5"},
		{"empty record", []byte{0x16, 3, 1, 0, 0}, "record length 0"},
		{"record over 2^14", []byte{0x16, 3, 1, 0x40, 1}, "record length 16385"},
		{"server hello", patch(ok, 5, 2), "handshake type 2"},
		{"hello over the limit", records(append([]byte{1, 1, 0, 1}, make([]byte, 100)...), 1000), "over the size limit: 65537 bytes exceed 65536"},
		{"record longer than the hello", records(append(message(1, baseHello().body()), 0), maxRecordLen), "past the ClientHello"},
		{"alert between fragments", func() []byte {
			b := records(message(1, baseHello().body()), 20)
			return patch(b, 25, 0x15)
		}(), "record type 21 interleaved"},
		{"legacy_version 2.0", patch(ok, 9, 2, 0), "legacy_version"},
		{"session id of 33", func() []byte { h := baseHello(); h.sessionID = make([]byte, 33); return h.wire() }(), "session_id length 33"},
		{"odd cipher suites", func() []byte { h := baseHello(); h.suites = []byte{1, 2, 3}; return h.wire() }(), "odd"},
		{"no cipher suites", func() []byte { h := baseHello(); h.suites = nil; return h.wire() }(), "cipher_suites length 0"},
		{"no compression", func() []byte { h := baseHello(); h.comp = nil; return h.wire() }(), "compression_methods length 0"},
		{"compression without null", func() []byte { h := baseHello(); h.comp = []byte{1}; return h.wire() }(), "lacks null"},
		{"bytes after extensions", func() []byte { h := baseHello(); h.trailer = []byte{0}; return h.wire() }(), "after extensions"},
		{"extension overruns block", func() []byte {
			h := baseHello()
			h.noExts, h.trailer = true, []byte{0, 4, 0, 23, 0, 9}
			return h.wire()
		}(), "extension data length 9 overruns"},
		{"duplicate extension", withExts(rawExt(23), rawExt(23)), "duplicate extension 23"},
		{"duplicate SNI", withExts(sniExt("a.example"), sniExt("b.example")), "duplicate extension 0"},
		{"empty SNI extension", withExts(rawExt(extServerName)), "server_name list overruns"},
		{"empty SNI list", withExts(testExt{extServerName, vec16(nil)}), "server_name list length 0"},
		{"empty host name", withExts(sniExt("")), "server_name length 0"},
		{"two host names", withExts(sniExt("a.example", "b.example")), "more than one host_name"},
		{"slash in host", withExts(sniExt("a.example/x")), "byte 0x2f"},
		{"space in host", withExts(sniExt("a example")), "byte 0x20"},
		{"non-ASCII host", withExts(sniExt("bücher.example")), "byte 0xc3"},
		{"IPv6 literal with zone", withExts(sniExt("fe80::1%eth0")), "byte 0x3a"},
		{"IPv6 literal in brackets", withExts(sniExt("[::1]")), "byte 0x5b"},
		{"colon in host", withExts(sniExt("a.example:443")), "byte 0x3a"},
		{"not quite IPv6", withExts(sniExt("::1::2")), "byte 0x3a"},
		{"NUL in host", withExts(sniExt("a\x00.example")), "byte 0x00"},
		{"trailing dot", withExts(sniExt("a.example.")), "ends with a dot"},
		{"leading dot", withExts(sniExt(".a.example")), "empty label"},
		{"double dot", withExts(sniExt("a..example")), "empty label"},
		{"64-byte label", withExts(sniExt(strings.Repeat("a", 64) + ".example")), "longer than 63"},
		{"254-byte name", withExts(sniExt(longName(254))), "host_name of 254 bytes"},
		{"bytes after SNI list", withExts(testExt{extServerName, append(sniExt("a.b").data, 0)}), "after server_name list"},
		{"empty ALPN list", withExts(testExt{extALPN, vec16(nil)}), "ALPN list length 0"},
		{"empty ALPN protocol", withExts(alpnExt("h2", "")), "ALPN protocol length 0"},
		{"ALPN protocol overruns", withExts(testExt{extALPN, vec16([]byte{5, 'h', '2'})}), "ALPN protocol length 5 overruns"},
		{"odd supported_versions", withExts(testExt{extSupportedVersions, vec8([]byte{3, 4, 3})}), "odd"},
		{"empty supported_versions", withExts(testExt{extSupportedVersions, vec8(nil)}), "supported_versions length 0"},
		{"only GREASE versions", withExts(versionsExt(0x2a2a)), "only GREASE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := checkPrefixes(t, tt.wire, helloVerdict(t))
			_, _, err := ClientHello(tt.wire)
			if v.r != NoMatch || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ClientHello = %v, %v; want NoMatch, ErrMalformed mentioning %q", v.r, err, tt.want)
			}
		})
	}
}

// TestClientHelloTooLarge: a hello over MaxHelloLen is told apart from a
// garbled one, since a server answers the two with different alerts.
func TestClientHelloTooLarge(t *testing.T) {
	big := records(append([]byte{1, 1, 0, 1}, make([]byte, 100)...), 1000)
	if _, _, err := ClientHello(big); !errors.Is(err, ErrHelloTooLarge) || !errors.Is(err, ErrMalformed) {
		t.Errorf("hello of 65537 bytes: %v, want ErrHelloTooLarge and ErrMalformed", err)
	}
	if _, _, err := ClientHello(baseHello(sniExt("a.example.")).wire()); errors.Is(err, ErrHelloTooLarge) {
		t.Errorf("trailing dot: %v, want no ErrHelloTooLarge", err)
	}
}

func TestClientHelloNotTLS(t *testing.T) {
	for _, in := range []string{"G", "GET / HTTP/1.1\r\n", "\x00", "\x15\x03\x03\x00\x02\x02\x28", "PRI * HTTP/2.0"} {
		r, _, err := ClientHello([]byte(in))
		if r != NoMatch || err != ErrNotHandshake {
			t.Errorf("ClientHello(%q) = %v, %v; want NoMatch, ErrNotHandshake", in, r, err)
		}
	}
	if r, _, err := ClientHello(nil); r != NeedMore || err != nil {
		t.Errorf("ClientHello(nil) = %v, %v; want NeedMore", r, err)
	}
}

// TestClientHelloDeclaredLengthsDoNotAllocate: a hello that announces the
// largest lengths and then stops must not make ClientHello reserve them.
func TestClientHelloDeclaredLengthsDoNotAllocate(t *testing.T) {
	b := []byte{0x16, 3, 1, 0x40, 0, 1, 0, 0x40, 0, 3, 3}
	allocs := testing.AllocsPerRun(100, func() {
		if r, _, _ := ClientHello(b); r != NeedMore {
			t.Fatalf("got %v, want NeedMore", r)
		}
	})
	if allocs != 0 {
		t.Errorf("ClientHello allocated %v times on a short prefix", allocs)
	}
	// A hello split over records is copied, but only the bytes that came:
	// here a largest hello sent as a 4-byte record and a second record that
	// announces the remaining 2^14 bytes and delivers 20.
	h := baseHello()
	h.exts = []testExt{{21, make([]byte, MaxHelloLen-len(h.body())-4)}}
	msg := message(1, h.body())
	split := append(records(msg[:4], 4), 0x16, 3, 1, 0x40, 0)
	split = append(split, msg[4:24]...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if r, _, err := ClientHello(split); r != NeedMore {
			t.Fatalf("got %v (%v), want NeedMore", r, err)
		}
	}
	runtime.ReadMemStats(&after)
	if perCall := (after.TotalAlloc - before.TotalAlloc) / 100; perCall > 256 {
		t.Errorf("ClientHello allocated %d bytes per call for a %d-byte prefix", perCall, len(split))
	}
}
