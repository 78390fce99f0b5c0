package iox

import (
	"io"
	"net"
	"syscall"
	"testing"
)

// BenchmarkDuplexThroughput moves 64 MiB one way through a Duplex over
// loopback TCP, with and without the layers the server puts on a raw TCP
// connection (guard, meter, guard), copying or splicing. The difference
// between "bare" and "guarded" is what the progress guard and the meter
// cost in throughput (issue 7 allows 3%).
//
//	go test -run NONE -bench DuplexThroughput -count 5 ./internal/iox/
func BenchmarkDuplexThroughput(b *testing.B) {
	const total = 64 << 20
	for _, mode := range []struct {
		name     string
		noSplice bool
	}{{"copy", true}, {"splice", false}} {
		for _, guarded := range []bool{false, true} {
			name := mode.name + "/" + map[bool]string{false: "bare", true: "guarded"}[guarded]
			b.Run(name, func(b *testing.B) {
				pool := NewBufferPool(0)
				chunk := make([]byte, 256<<10)
				b.SetBytes(total)
				cpu0 := processCPU()
				for b.Loop() {
					client, a := tcpPair(b)
					bb, server := tcpPair(b)
					var left net.Conn = a
					if guarded {
						left, _ = layered(a, &Stats{})
					}
					done := make(chan error, 1)
					go func() {
						_, _, err := Duplex(left, bb, DuplexOptions{Pool: pool, NoSplice: mode.noSplice})
						done <- err
					}()
					go func() {
						for sent := 0; sent < total; sent += len(chunk) {
							client.Write(chunk)
						}
						client.CloseWrite()
					}()
					n, _ := io.Copy(io.Discard, server)
					if n != total {
						b.Fatalf("moved %d bytes", n)
					}
					server.CloseWrite()
					if err := <-done; err != nil {
						b.Fatal(err)
					}
					for _, c := range []net.Conn{client, a, bb, server} {
						c.Close()
					}
				}
				// CPU of the whole process (the sender and the sink are the
				// same in every variant, so differences are the proxy's).
				b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/(float64(total)/(1<<30))/1e9, "cpu-s/GiB")
			})
		}
	}
}

// processCPU is the process's user and system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
