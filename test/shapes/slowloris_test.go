//go:build linux

package shapes_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

const (
	// slowConns is the slowloris connections held open at once, half on
	// the plain port trickling a request, half on the TLS port trickling
	// a ClientHello.
	slowConns = 2000
	// trickleEvery is the pace of a slowloris client: one byte this often.
	trickleEvery = time.Second
	// closeMargin is how long after handshakeTimeout (counted by the proxy
	// from accept, by the client from its dial) a slowloris connection may
	// still be open: accept queueing, the timer firing and the FIN
	// reaching a client among thousands of goroutines.
	closeMargin = 2 * time.Second
	// maxServeLatency is the most a normal request may take while the
	// slowloris connections are all open.
	maxServeLatency = time.Second
	// fdHeadroom is descriptors beyond slowConns this process and the
	// proxy need (listeners, upstream pool, pipes, the Go runtime).
	fdHeadroom = 500
)

// TestSlowloris opens slowConns connections that each send one byte a
// second, of a valid HTTP request on the plain port and of a TLS
// ClientHello on the TLS port, and checks that while they are all open a
// new client is served promptly, that the proxy closes every one of them by
// its handshake deadline, and that its descriptors return afterwards.
func TestSlowloris(t *testing.T) {
	ensureFiles(t, slowConns+fdHeadroom)
	env := startProxy(t)
	if lim := env.openFilesLimit(t); lim < slowConns+fdHeadroom {
		t.Skipf("the proxy may open only %d files, fewer than the %d this test needs", lim, slowConns+fdHeadroom)
	}
	payloads := [2][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: " + serverName + "\r\nUser-Agent: slowloris\r\n\r\n"),
		clientHello(t),
	}
	addrs := [2]string{env.plainAddr, env.tlsAddr}
	base := env.census(t)
	before := env.scrape(t, "edgeproxy_timeouts_total")["edgeproxy_timeouts_total"]
	cpuBefore := env.procCPU(t)

	// Dial them all, each starting its trickle at once.
	results := make([]slowResult, slowConns)
	var wg sync.WaitGroup
	defer wg.Wait() // on any exit every trickler ends by its give-up time
	start := time.Now()
	dialErrs := dialAll(t, slowConns, func(i int, c net.Conn, dialed time.Time) {
		wg.Go(func() {
			defer c.Close()
			results[i] = trickle(c, payloads[i%2], dialed)
		})
	}, func(i int) string { return addrs[i%2] })
	dialTime := time.Since(start)
	if dialErrs > 0 {
		t.Fatalf("%d of %d slowloris dials failed", dialErrs, slowConns)
	}
	t.Logf("dialed %d slowloris connections in %s", slowConns, dialTime.Round(time.Millisecond))

	// The proxy holds them all; now a normal client on each port.
	held := waitClients(t, env, base.Client+slowConns)
	t.Logf("proxy while they are open: %s", held)
	for _, tlsPort := range []bool{false, true} {
		d := normalRequest(t, env, tlsPort)
		t.Logf("normal request (TLS %v) served in %s while %d slowloris connections were open", tlsPort, d.Round(time.Microsecond), slowConns)
		if d >= maxServeLatency {
			t.Errorf("normal request (TLS %v) took %s with slowloris connections open, want under %s", tlsPort, d, maxServeLatency)
		}
	}
	served := time.Now()

	wg.Wait()
	checkSlowClosed(t, results, served)
	stats := env.scrape(t, "edgeproxy_timeouts_total")["edgeproxy_timeouts_total"]
	if d := stats["kind=sniff"] - before["kind=sniff"]; d != slowConns {
		t.Errorf("edgeproxy_timeouts_total{kind=\"sniff\"} rose by %g, want %d: each slowloris connection ends at its handshake deadline", d, slowConns)
	}
	after, took := env.waitSettled(t, base)
	checkSettled(t, base, after, took)
	if after.Client > base.Client {
		env.logGoroutines(t)
	}
	t.Logf("proxy CPU over the slowloris test: %s", (env.procCPU(t) - cpuBefore).Round(10*time.Millisecond))
}

// ensureFiles makes sure this process may open n descriptors. Go raises the
// soft RLIMIT_NOFILE to the hard limit at start, so this normally finds
// enough; otherwise it raises the soft limit, or skips when even the hard
// limit is too low.
func ensureFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot raise RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// clientHello returns the first record a crypto/tls client sends: its
// ClientHello, captured over a pipe.
func clientHello(t *testing.T) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(cli, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	defer func() { cli.Close(); srv.Close(); <-done }()
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(srv, hdr); err != nil {
		t.Fatalf("capture ClientHello: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(srv, body); err != nil {
		t.Fatalf("capture ClientHello: %v", err)
	}
	return append(hdr, body...)
}

// dialAll dials n connections from a few dialers and hands each to start
// with the time its dial completed; it returns the number of failed dials.
func dialAll(t *testing.T, n int, start func(int, net.Conn, time.Time), addr func(int) string) int {
	t.Helper()
	const dialers = 50
	next := make(chan int)
	var failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			for i := range next {
				c, err := net.DialTimeout("tcp", addr(i), 5*time.Second)
				if err != nil {
					mu.Lock()
					if failed == 0 {
						t.Errorf("dial %s: %v", addr(i), err)
					}
					failed++
					mu.Unlock()
					continue
				}
				start(i, c, time.Now())
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return failed
}

// slowResult is how one slowloris connection ended.
type slowResult struct {
	dialed time.Time
	closed time.Time // zero: still open at give-up
	how    string    // "eof", "reset", "still open", or another error
	got    int       // bytes the proxy sent before closing
	sent   int       // bytes trickled
}

// giveUpAfter is when a trickler stops waiting for the proxy to close,
// well past the deadline so that a late close is measured, not guessed.
const giveUpAfter = handshakeTimeout + closeMargin + 3*time.Second

// trickle sends payload one byte per trickleEvery, reading in between, until
// the proxy closes the connection or giveUpAfter passes since dialed.
func trickle(c net.Conn, payload []byte, dialed time.Time) slowResult {
	r := slowResult{dialed: dialed}
	giveUp := dialed.Add(giveUpAfter)
	buf := make([]byte, 512)
	for {
		now := time.Now()
		if !now.Before(giveUp) {
			r.how = "still open"
			return r
		}
		if r.sent < len(payload) {
			c.SetWriteDeadline(now.Add(trickleEvery))
			if _, err := c.Write(payload[r.sent : r.sent+1]); err != nil {
				r.closed, r.how = time.Now(), closeKind(err)
				return r
			}
			r.sent++
		}
		next := now.Add(trickleEvery)
		if next.After(giveUp) {
			next = giveUp
		}
		c.SetReadDeadline(next)
		for {
			n, err := c.Read(buf)
			r.got += n
			if err == nil {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // time for the next byte
			}
			r.closed, r.how = time.Now(), closeKind(err)
			return r
		}
	}
}

func closeKind(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return err.Error()
}

// waitClients polls until the proxy holds at least n client connections,
// for up to a second, and returns its census.
func waitClients(t *testing.T, env *proxyEnv, n int) census {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		c := env.census(t)
		if c.Client >= n || time.Now().After(deadline) {
			if c.Client < n {
				t.Errorf("the proxy holds %d client connections, want at least %d slowloris ones", c.Client, n)
			}
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// normalRequest makes one GET on a fresh connection and returns how long
// it took, from dial to the end of the body, which must be the demo
// machine's report.
func normalRequest(t *testing.T, env *proxyEnv, tlsPort bool) time.Duration {
	t.Helper()
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + env.plainAddr + "/"
	if tlsPort {
		url = "https://" + env.tlsAddr + "/"
	}
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s with slowloris connections open: %v", url, err)
	}
	defer resp.Body.Close()
	var rep demo.Report
	err = json.NewDecoder(resp.Body).Decode(&rep)
	d := time.Since(start)
	if resp.StatusCode != http.StatusOK || err != nil || rep.MachineID != "m1" {
		t.Errorf("GET %s: status %d, body error %v, machine %q; want 200 and the demo machine's report",
			url, resp.StatusCode, err, rep.MachineID)
	}
	return d
}

// checkSlowClosed asserts that the proxy closed every slowloris connection
// by its deadline, and none before the normal requests were served.
func checkSlowClosed(t *testing.T, results []slowResult, served time.Time) {
	t.Helper()
	limit := handshakeTimeout + closeMargin
	kinds := map[string]int{}
	var lats []time.Duration
	late, early, gotBytes := 0, 0, 0
	for _, r := range results {
		kinds[r.how]++
		if r.got > 0 {
			gotBytes++
		}
		if r.closed.IsZero() {
			late++
			continue
		}
		lat := r.closed.Sub(r.dialed)
		lats = append(lats, lat)
		if lat > limit {
			late++
		}
		if r.closed.Before(served) {
			early++
		}
	}
	slices.Sort(lats)
	if len(lats) > 0 {
		t.Logf("slowloris closes: %v; dial to close min %s, median %s, max %s; %d connections got bytes before the close",
			kinds, lats[0].Round(time.Millisecond), lats[len(lats)/2].Round(time.Millisecond),
			lats[len(lats)-1].Round(time.Millisecond), gotBytes)
	}
	if late > 0 {
		t.Errorf("%d of %d slowloris connections were not closed within %s of their dial (handshake_timeout %s + %s margin); ends: %v",
			late, len(results), limit, handshakeTimeout, closeMargin, kinds)
	}
	if n := kinds["eof"] + kinds["reset"]; n != len(results) {
		t.Errorf("%d of %d slowloris connections ended by EOF or reset; ends: %v", n, len(results), kinds)
	}
	if early > 0 {
		t.Errorf("%d slowloris connections were closed before the normal requests were served "+
			"(closed by %s after dial at the earliest), so those requests did not compete with all of them",
			early, lats[0].Round(time.Millisecond))
	}
}
