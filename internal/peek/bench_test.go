package peek

import (
	"net"
	"testing"
	"time"
)

// endless is a conn that always has a full buffer of bytes, so the
// benchmarks below measure the wrapper and not a socket.
type endless struct{ scriptConn }

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// BenchmarkRead compares reading a stream directly with reading it through a
// Conn whose prefix was peeked and replayed, the state every proxied
// connection is in after sniffing. "replay" is the per-connection cost of
// wrapping, peeking a request line's worth and reading it back.
func BenchmarkRead(b *testing.B) {
	const size = 32 << 10
	b.Run("direct", func(b *testing.B) {
		var c net.Conn = &endless{}
		buf := make([]byte, size)
		b.SetBytes(size)
		for b.Loop() {
			c.Read(buf)
		}
	})
	b.Run("after-peek", func(b *testing.B) {
		c := New(&endless{}, 4096)
		var calls int
		if _, err := c.Peek(time.Now().Add(time.Minute), needBytes(100, &calls)); err != nil {
			b.Fatal(err)
		}
		var r net.Conn = c
		buf := make([]byte, size)
		r.Read(buf) // replays the prefix
		b.SetBytes(size)
		for b.Loop() {
			r.Read(buf)
		}
	})
	b.Run("replay", func(b *testing.B) {
		buf := make([]byte, size)
		deadline := time.Now().Add(time.Minute)
		b.ReportAllocs()
		for b.Loop() {
			c := New(&endless{}, 4096)
			var calls int
			c.Peek(deadline, needBytes(100, &calls))
			c.Read(buf)
		}
	})
}

// BenchmarkReadTCP is the same comparison over loopback TCP, where the
// wrapper's cost should vanish next to the system call.
func BenchmarkReadTCP(b *testing.B) {
	for _, mode := range []string{"direct", "after-peek"} {
		b.Run(mode, func(b *testing.B) {
			client, server := tcpPair(b)
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 64<<10)
				for {
					if _, err := client.Write(buf); err != nil {
						return
					}
				}
			}()
			var r net.Conn = server
			if mode == "after-peek" {
				c := New(server, 4096)
				var calls int
				if _, err := c.Peek(time.Now().Add(time.Minute), needBytes(1, &calls)); err != nil {
					b.Fatal(err)
				}
				r = c
			}
			buf := make([]byte, 32<<10)
			var total int64
			for b.Loop() {
				n, err := r.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				total += int64(n)
			}
			b.SetBytes(total / int64(max(b.N, 1)))
			server.Close()
			<-done
		})
	}
}
