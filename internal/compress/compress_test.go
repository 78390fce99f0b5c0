package compress

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestNegotiate(t *testing.T) {
	cases := []struct {
		in   string
		want Encoding
	}{
		{"", None},
		{"identity", None},
		{"gzip", Gzip},
		{"x-gzip", Gzip},
		{"GZIP", Gzip},
		{"gzip, deflate, br", Gzip}, // Safari: the same size for a third of the CPU
		{"br", Brotli},
		{"br, gzip;q=0.9", Brotli},
		{"gzip, deflate, br, zstd", Zstd},
		{"br;q=1.0, gzip;q=0.8, *;q=0.1", Brotli},
		{"gzip;q=1, br;q=0.5, zstd;q=0.9", Gzip},
		{"gzip;q=0", None},
		{"gzip;q=0.000", None},
		{"*", Zstd},
		{"*, zstd;q=0", Gzip},
		{"*;q=0.5, zstd;q=0, br;q=0", Gzip},
		{"*;q=0", None},
		{"br ; q=0.5 , gzip ;q=0.4", Brotli},
		{"gzip;q=1.001", None},   // not a qvalue: skipped
		{"gzip;q=2, br", Brotli}, // likewise
		{"gzip;q=, br;q=0.1", Brotli},
		{"gzip;level=9;q=0.3, br;q=0.2", Gzip},
		{"deflate", None},
		{",,, ,gzip,,", Gzip},
		{"g zip", None},
		{"gzip;q=0.5, gzip;q=0.9, br;q=0.8", Gzip}, // a repeat counts at its best
		{"zstd;Q=0.2, br;q=0.1", Zstd},
	}
	for _, c := range cases {
		if got := Negotiate([]byte(c.in)); got != c.want {
			t.Errorf("Negotiate(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	// Several field lines are one list.
	if got := Negotiate([]byte("gzip;q=0.5"), []byte("br;q=0.6")); got != Brotli {
		t.Errorf("two lines: got %v, want br", got)
	}
}

func TestCompressible(t *testing.T) {
	yes := []string{"text/html", "text/html; charset=utf-8", "TEXT/Plain", "text/event-stream",
		"application/json", "application/problem+json", "application/javascript",
		"image/svg+xml", "application/wasm", " application/xml ;q", "font/ttf", "application/x-ndjson"}
	no := []string{"", "image/png", "image/jpeg", "video/mp4", "application/octet-stream",
		"application/zip", "application/gzip", "font/woff2", "application/grpc", "application/grpc+proto",
		"text", "/html", "text/", strings.Repeat("a", 200) + "/json"}
	for _, ct := range yes {
		if !Compressible([]byte(ct)) {
			t.Errorf("Compressible(%q) = false", ct)
		}
	}
	for _, ct := range no {
		if Compressible([]byte(ct)) {
			t.Errorf("Compressible(%q) = true", ct)
		}
	}
}

func decoder(t *testing.T, e Encoding, r io.Reader) io.Reader {
	t.Helper()
	switch e {
	case Gzip:
		// gzip's reader reads its header before returning.
		ch := make(chan io.Reader, 1)
		go func() {
			g, err := gzip.NewReader(r)
			if err != nil {
				ch <- nil
				return
			}
			ch <- g
		}()
		select {
		case g := <-ch:
			if g == nil {
				t.Fatal("gzip header")
			}
			return g
		case <-time.After(5 * time.Second):
			t.Fatal("gzip header not flushed")
		}
	case Brotli:
		return brotli.NewReader(r)
	case Zstd:
		z, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(z.Close)
		return z
	}
	t.Fatalf("no decoder for %v", e)
	return nil
}

// TestFlushDeliversEachEvent: after Flush, a client can decode every
// byte written so far without waiting for more: what a server-sent-events
// reader needs.
func TestFlushDeliversEachEvent(t *testing.T) {
	var pools Pools
	for _, e := range []Encoding{Gzip, Brotli, Zstd} {
		t.Run(e.String(), func(t *testing.T) {
			pr, pw := io.Pipe()
			w := pools.Get(e, pw, 0)
			errc := make(chan error, 1)
			go func() {
				for i := 0; i < 3; i++ {
					if _, err := io.WriteString(w, "data: event "+string(rune('0'+i))+"\n\n"); err != nil {
						errc <- err
						return
					}
					if err := w.Flush(); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			dec := decoder(t, e, pr)
			for i := 0; i < 3; i++ {
				want := "data: event " + string(rune('0'+i)) + "\n\n"
				got := make([]byte, len(want))
				done := make(chan error, 1)
				go func() { _, err := io.ReadFull(dec, got); done <- err }()
				select {
				case err := <-done:
					if err != nil || string(got) != want {
						t.Fatalf("event %d: %q, %v", i, got, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("event %d not decodable after Flush", i)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			pw.Close()
			w.Release()
		})
	}
}

// TestPooledWritersRoundTrip reuses each encoder across responses and
// checks every output decodes to its input, and the counts.
func TestPooledWritersRoundTrip(t *testing.T) {
	var pools Pools
	body := bytes.Repeat([]byte("<li>an item of a long list</li>\n"), 4000)
	for _, e := range []Encoding{Gzip, Brotli, Zstd} {
		for round := 0; round < 3; round++ {
			var out bytes.Buffer
			w := pools.Get(e, &out, 0)
			if w.Encoding() != e {
				t.Fatalf("got a %v writer, want %v", w.Encoding(), e)
			}
			if _, err := w.Write(body); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w.In() != int64(len(body)) || w.Out() != int64(out.Len()) {
				t.Fatalf("%v: in %d out %d, want %d %d", e, w.In(), w.Out(), len(body), out.Len())
			}
			if out.Len() >= len(body)/10 {
				t.Errorf("%v: %d bytes from %d: not compressed", e, out.Len(), len(body))
			}
			w.Release()
			got, err := io.ReadAll(decoder(t, e, &out))
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%v round %d: decoded %d bytes, %v", e, round, len(got), err)
			}
		}
	}
}

func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"gzip, br;q=0.9", "*;q=0", "zstd;q=0.001", "br;;q=1", "gzip;q=0.5;q=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Negotiate([]byte(s))
		if e >= numEncodings {
			t.Fatalf("Negotiate(%q) = %d", s, e)
		}
		low := strings.ToLower(s)
		if e != None && !strings.Contains(low, e.String()) && !strings.Contains(low, "*") {
			t.Fatalf("Negotiate(%q) = %v, which the header does not name", s, e)
		}
		if !strings.ContainsAny(s, "gbz*GBZ") && e != None {
			t.Fatalf("Negotiate(%q) = %v", s, e)
		}
		Compressible([]byte(s))
	})
}

// TestPoolsLimit: past the limit Get says no, and a Release makes room.
func TestPoolsLimit(t *testing.T) {
	var pools Pools
	a := pools.Get(Gzip, io.Discard, 2)
	b := pools.Get(Zstd, io.Discard, 2)
	if a == nil || b == nil || pools.InUse() != 2 {
		t.Fatalf("under the limit: %v %v, %d in use", a, b, pools.InUse())
	}
	if c := pools.Get(Brotli, io.Discard, 2); c != nil {
		t.Fatal("a third writer past a limit of 2")
	}
	if pools.InUse() != 2 {
		t.Fatalf("%d in use after a refusal", pools.InUse())
	}
	a.Release()
	if c := pools.Get(Brotli, io.Discard, 2); c == nil {
		t.Fatal("no writer after a release")
	} else {
		c.Release()
	}
	b.Release()
	if pools.InUse() != 0 {
		t.Fatalf("%d in use after every release", pools.InUse())
	}
	if w := pools.Get(Gzip, io.Discard, 0); w == nil {
		t.Fatal("limit 0 is no limit")
	} else {
		w.Release()
	}
}
