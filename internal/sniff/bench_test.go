package sniff

import "testing"

// TestUndecidedAllocatesNothing: peek asks a detector again after every read,
// so the answers that keep it reading (NeedMore) and the ones that end it
// early (NoMatch on common traffic) must cost no garbage.
func TestUndecidedAllocatesNothing(t *testing.T) {
	hello := readGolden(t, "go-alpn.bin")
	inputs := map[string][]byte{
		"hello prefix":   hello[:len(hello)-1],
		"request prefix": []byte("GET /index.html HTTP/1.1\r"),
		"h2 prefix":      []byte("PRI * HTTP/2.0\r\n"),
		"ssh":            []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"binary":         {0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f},
	}
	for name, in := range inputs {
		if allocs := testing.AllocsPerRun(50, func() { Detect(in) }); allocs != 0 {
			t.Errorf("Detect(%s) allocated %v times", name, allocs)
		}
	}
}

func BenchmarkClientHello(b *testing.B) {
	for _, name := range []string{"go-alpn.bin", "openssl-sni-alpn.bin"} {
		hello := readGolden(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(hello)))
			b.ReportAllocs()
			for b.Loop() {
				ClientHello(hello)
			}
		})
		b.Run(name+"/need-more", func(b *testing.B) {
			b.SetBytes(int64(len(hello) - 1))
			b.ReportAllocs()
			for b.Loop() {
				ClientHello(hello[:len(hello)-1])
			}
		})
	}
}

func BenchmarkDetect(b *testing.B) {
	for name, in := range map[string][]byte{
		"tls":   readGolden(b, "go-alpn.bin"),
		"http1": []byte("GET /some/path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		"other": []byte("SSH-2.0-OpenSSH_9.6\r\n"),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Detect(in)
			}
		})
	}
}
