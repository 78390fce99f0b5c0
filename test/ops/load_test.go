//go:build linux

package ops_test

// The steady load: HTTP/1.1 keep-alive on 80, HTTP/2 over TLS on 443 and
// echoed raw TCP streams on 5000, each from several goroutines, counting
// what was served and recording every failure with the phase of the test
// it happened in.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	h1Workers, h2Workers, tcpWorkers = 4, 4, 3
	// requestPause paces each HTTP worker, so the load is steady but
	// bounded (a few hundred requests a second per worker at most).
	requestPause = 3 * time.Millisecond
	// requestTimeout fails any request that takes longer.
	requestTimeout = 10 * time.Second
)

// loadStats are the steady load's counters.
type loadStats struct {
	h1, h2, streams, streamBytes atomic.Int64
	failures, resets             atomic.Int64
	// toRemovedA3 counts alpha requests answered by d3 while a3 was not in
	// the config: existing keep-alive connections keep the routes of the
	// config they were opened under.
	toRemovedA3 atomic.Int64
	a3Removed   atomic.Bool

	phase atomic.Pointer[string]
	mu    sync.Mutex
	errs  []string // the first failures, with their phase
}

func (s *loadStats) setPhase(p string) { s.phase.Store(&p) }

func (s *loadStats) fail(kind string, err error) {
	s.failures.Add(1)
	if errors.Is(err, syscall.ECONNRESET) {
		s.resets.Add(1)
	}
	phase := "?"
	if p := s.phase.Load(); p != nil {
		phase = *p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) < 40 {
		s.errs = append(s.errs, fmt.Sprintf("%s %s during %q: %v", time.Now().Format("15:04:05.000"), kind, phase, err))
	}
}

func (s *loadStats) errList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

// load runs until stop is called; stop waits for every worker, each of
// which finishes its request or stream in flight first.
type load struct {
	stats    *loadStats
	stopping atomic.Bool
	wg       sync.WaitGroup
	h1, h2   *http.Client
}

// dialLocal sends a public port's connections to its local port.
func dialLocal(p ports) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		local := map[string]int{"80": p.p80, "443": p.p443, "5000": p.p5000, strconv.Itoa(betaPublic): p.p4}[port]
		if local == 0 {
			return nil, fmt.Errorf("no local port for %s", addr)
		}
		return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(local))
	}
}

func newH1Client(p ports, keepAlive bool) *http.Client {
	tr := &http.Transport{DialContext: dialLocal(p), MaxIdleConnsPerHost: h1Workers, DisableKeepAlives: !keepAlive}
	return &http.Client{Transport: tr, Timeout: requestTimeout}
}

func newH2Client(p ports) *http.Client {
	tr := &http.Transport{DialContext: dialLocal(p), ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	return &http.Client{Transport: tr, Timeout: requestTimeout}
}

func startLoad(p ports) *load {
	l := &load{stats: &loadStats{}, h1: newH1Client(p, true), h2: newH2Client(p)}
	l.stats.setPhase("start")
	for i := range h1Workers {
		l.wg.Go(func() { l.httpWorker("h1", l.h1, "http://alpha.test/h1/"+strconv.Itoa(i), &l.stats.h1) })
	}
	for i := range h2Workers {
		l.wg.Go(func() { l.httpWorker("h2", l.h2, "https://alpha.test/h2/"+strconv.Itoa(i), &l.stats.h2) })
	}
	for range tcpWorkers {
		l.wg.Go(func() { l.tcpWorker(p) })
	}
	return l
}

func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
	l.h1.CloseIdleConnections()
	l.h2.CloseIdleConnections()
}

func (l *load) httpWorker(kind string, c *http.Client, url string, served *atomic.Int64) {
	for n := 0; !l.stopping.Load(); n++ {
		id, err := get(c, url+"?n="+strconv.Itoa(n), "alpha.test", kind == "h2")
		switch {
		case err != nil:
			l.stats.fail(kind, err)
		case id != "d1" && id != "d2" && id != "d3":
			l.stats.fail(kind, fmt.Errorf("answered by %q, not a machine of alpha", id))
		default:
			served.Add(1)
			if id == "d3" && l.stats.a3Removed.Load() {
				l.stats.toRemovedA3.Add(1)
			}
		}
		time.Sleep(requestPause)
	}
}

// get makes one GET and returns the demo machine that answered. Anything
// but a 200 with a demo report is an error.
func get(c *http.Client, url, host string, wantH2 bool) (string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s (code %q): %.200s", resp.Status, resp.Header.Get("Edgeproxy-Error-Code"), body)
	}
	if wantH2 && resp.ProtoMajor != 2 {
		return "", fmt.Errorf("answered over %s, want HTTP/2", resp.Proto)
	}
	var rep struct {
		MachineID string `json:"machine_id"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return "", fmt.Errorf("not a demo report: %v: %.200s", err, body)
	}
	return rep.MachineID, nil
}

func (l *load) tcpWorker(p ports) {
	addr := "127.0.0.1:" + strconv.Itoa(p.p5000)
	for !l.stopping.Load() {
		size := 200<<10 + mrand.IntN(200<<10)
		over := time.Second + mrand.N(2*time.Second)
		if err := echoStream(addr, size, over); err != nil {
			l.stats.fail("tcp", err)
		} else {
			l.stats.streams.Add(1)
			l.stats.streamBytes.Add(int64(size))
		}
	}
}

// echoStream sends size random bytes in chunks spread over the given
// time, half-closes, and checks that exactly the same bytes come back
// followed by EOF.
func echoStream(addr string, size int, over time.Duration) error {
	data := make([]byte, size)
	rand.Read(data)
	data[0] = 0 // the demo machine decides at once that this is not HTTP
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(over + 15*time.Second))
	got := make(chan error, 1)
	go func() {
		back, err := io.ReadAll(io.LimitReader(c, int64(size)+1))
		switch {
		case err != nil:
			got <- fmt.Errorf("reading the echo after %d of %d bytes: %w", len(back), size, err)
		case !bytes.Equal(back, data):
			i := 0
			for i < min(len(back), len(data)) && back[i] == data[i] {
				i++
			}
			got <- fmt.Errorf("echo differs: got %d bytes for %d sent, first difference at byte %d", len(back), size, i)
		default:
			got <- nil
		}
	}()
	const chunks = 32
	step := (size + chunks - 1) / chunks
	for off := 0; off < size; off += step {
		if _, err := c.Write(data[off:min(off+step, size)]); err != nil {
			c.Close()
			<-got
			return fmt.Errorf("writing at byte %d of %d: %w", off, size, err)
		}
		time.Sleep(over / chunks)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		c.Close()
		<-got
		return fmt.Errorf("half-close: %w", err)
	}
	return <-got
}
