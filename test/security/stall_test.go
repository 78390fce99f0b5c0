//go:build linux

package security_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stallConfig cuts stalled clients after one to two seconds.
var stallConfig = withApps(withProxy(`body_timeout = "1s"`), "\n[log]\naccess_log = \"off\"\n")

// bigAnswer answers every request with a 1 MiB body, after reading the
// request's own body.
func bigAnswer(c *recConn, _ *http.Request, _ []byte) bool {
	body := strings.Repeat("x", 1<<20)
	_, err := io.WriteString(c, okResponse(body))
	return err == nil
}

// awaitHeld waits until at least want machine connections are held, and
// returns how many are.
func awaitHeld(rec *recorder, want int32, within time.Duration) int32 {
	deadline := time.Now().Add(within)
	for rec.live.Load() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return rec.live.Load()
}

// awaitLive waits until at most want machine connections are held, and
// returns how many are.
func awaitLive(rec *recorder, want int32, within time.Duration) int32 {
	deadline := time.Now().Add(within)
	for rec.live.Load() > want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return rec.live.Load()
}

// TestZeroWindowReleasesMachines: an HTTP/2 client that opens streams and
// never opens its flow-control window held one machine connection per
// stream for as long as its connection lived (24 h). The streams are now
// cut once the response stops moving, and the machine connections freed.
func TestZeroWindowReleasesMachines(t *testing.T) {
	rec := startRecorder(t, serveEach(bigAnswer))
	env := startProxy(t, stallConfig, rec.Port())
	cpu0 := cpuSeconds(t, env.pid)
	c, fr := dialH2(t, env.tlsAddr)
	// A window of zero: no DATA may be sent on any stream.
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	const streams = 50
	for i := 0; i < streams; i++ {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "sec.test"}, {":path", fmt.Sprint("/", i)}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: []byte(hb.String()), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Read (and discard) what the proxy sends, never a WINDOW_UPDATE.
	go io.Copy(io.Discard, c)
	held := awaitHeld(rec, streams, 5*time.Second)
	t.Logf("zero window: %d streams opened, %d machine connections held", streams, held)
	left := awaitLive(rec, 0, 15*time.Second)
	cpu := cpuSeconds(t, env.pid) - cpu0
	t.Logf("zero window: %d machine connections still held after the body timeout, %.2f s of proxy CPU", left, cpu)
	if left != 0 {
		t.Fatalf("%d machine connections still held by a client that reads nothing", left)
	}
}

// TestTrickledBodiesReleaseMachines: clients that send a request body one
// byte at a time held a machine connection (and three goroutines) each;
// now they get 408 with PH09 and the machine connections are freed.
func TestTrickledBodiesReleaseMachines(t *testing.T) {
	rec := startRecorder(t, serveEach(func(c *recConn, _ *http.Request, _ []byte) bool {
		io.WriteString(c, okResponse("ok"))
		return true
	}))
	env := startProxy(t, stallConfig, rec.Port())
	const clients = 50
	var wg sync.WaitGroup
	answers := make(chan string, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", env.plainAddr, 5*time.Second)
			if err != nil {
				answers <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(c, "POST /up HTTP/1.1\r\nHost: sec.test\r\nContent-Length: 1000\r\n\r\n")
			// One byte every 300 ms until the proxy answers.
			got := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(c)
				got <- string(b)
			}()
			for {
				select {
				case s := <-got:
					answers <- s
					return
				case <-time.After(300 * time.Millisecond):
					c.Write([]byte("x"))
				}
			}
		}()
	}
	held := awaitHeld(rec, clients, 5*time.Second)
	t.Logf("trickled bodies: %d clients, %d machine connections held", clients, held)
	wg.Wait()
	close(answers)
	for a := range answers {
		if !strings.HasPrefix(a, "HTTP/1.1 408 ") || !strings.Contains(a, "PH09") {
			t.Fatalf("a trickling client got %.200q, want 408 with PH09", a)
		}
	}
	left := awaitLive(rec, 0, 5*time.Second)
	t.Logf("trickled bodies: %d machine connections held after the body timeout", left)
	if left != 0 {
		t.Fatalf("%d machine connections still held", left)
	}
}
