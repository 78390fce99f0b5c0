package storm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// run storms cfg and fails the test on an error.
func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// wantOnly checks that every connection of shape had outcome want.
func wantOnly(t *testing.T, rep *Report, shape Shape, want Outcome) {
	t.Helper()
	sr := rep.Shapes[shape]
	if sr == nil {
		t.Fatalf("%s: no connections in the report", shape)
	}
	if sr.Outcomes[want] != sr.Count || sr.Count == 0 {
		t.Errorf("%s: outcomes %v of %d connections, want all %s (first other: %q)",
			shape, sr.Outcomes, sr.Count, want, sr.FirstOther)
	}
}

func TestShapesAgainstNetHTTP(t *testing.T) {
	addr := newTLSServer(t, echoHandler)
	cfg := small(addr)
	cfg.Count = 24 // four of each shape
	rep := run(t, cfg)

	if rep.Completed != 24 || rep.Started != 24 || rep.Aborted != 0 {
		t.Fatalf("completed %d, started %d, aborted %d; want 24, 24, 0", rep.Completed, rep.Started, rep.Aborted)
	}
	for _, sh := range Shapes() {
		// net/http serves a complete request whose client then half-closed,
		// and answers a body cut by FIN with 400: every shape is ok.
		wantOnly(t, rep, sh, OK)
		if sr := rep.Shapes[sh]; sr.Count != 4 {
			t.Errorf("%s: %d connections, want 4 (weights are equal)", sh, sr.Count)
		}
	}
	wantStatus := map[Shape]map[int]int{
		CNJunkHold: {200: 4}, CNJunkFIN: {200: 4}, CNJunkRST: {},
		FINMidBody: {400: 4}, CompleteCN: {200: 4}, KeepAlive: {200: 12},
	}
	for sh, want := range wantStatus {
		if got := rep.Shapes[sh].Statuses; !equalMaps(got, want) {
			t.Errorf("%s: statuses %v, want %v", sh, got, want)
		}
	}
	for sh, sr := range rep.Shapes {
		if sr.Latency.P50 <= 0 || sr.Latency.P50 > sr.Latency.Max {
			t.Errorf("%s: latency %+v is not ordered", sh, sr.Latency)
		}
	}
}

func TestPlainShapes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(echoHandler))
	t.Cleanup(srv.Close)
	cfg := small(srv.Listener.Addr().String())
	cfg.Plain = true
	cfg.Count = 12
	rep := run(t, cfg)
	for _, sh := range Shapes() {
		wantOnly(t, rep, sh, OK)
	}
	if got := rep.Shapes[FINMidBody].Statuses[400]; got != 2 {
		t.Errorf("fin-mid-body over plain HTTP: %d answers of 400, want 2", got)
	}
}

// A proxy that follows net/http's cancellation of half-closed clients
// answers complete-cn with 502, or with nothing at all; the report must
// tell both apart from a served response.
func TestCompleteCNAgainstNaiveProxy(t *testing.T) {
	naive := func(abort bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
				w.Write([]byte("upstream answered"))
				return
			}
			if abort {
				panic(http.ErrAbortHandler)
			}
			http.Error(w, "client gone", http.StatusBadGateway)
		}
	}
	rep := run(t, small(newTLSServer(t, naive(false)), CompleteCN))
	wantOnly(t, rep, CompleteCN, OK)
	if got := rep.Shapes[CompleteCN].Statuses; !equalMaps(got, map[int]int{502: 6}) {
		t.Errorf("statuses %v, want six 502s", got)
	}

	rep = run(t, small(newTLSServer(t, naive(true)), CompleteCN))
	wantOnly(t, rep, CompleteCN, ClosedEarly)
}

// A server that answers and then keeps the connection: the hold lasts the
// whole -hold, and cn-junk-fin reports the connection that never closes.
func TestHoldAndNeverClosingServer(t *testing.T) {
	stop := make(chan struct{})
	addr := tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
		br := bufio.NewReader(tc)
		if readRequestBody(br) != nil {
			return
		}
		io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Like crypto/tls after close_notify: never look at the socket
		// again, so the FIN behind it goes unnoticed.
		io.Copy(io.Discard, br)
		<-stop
	})
	t.Cleanup(func() { close(stop) }) // runs before the server's cleanup
	// Bounds are generous: CI runs packages in parallel on two cores.
	cfg := small(addr, CNJunkHold)
	cfg.Count, cfg.Hold = 2, 500*time.Millisecond
	rep := run(t, cfg)
	wantOnly(t, rep, CNJunkHold, OK)
	if p50 := rep.Shapes[CNJunkHold].Latency.P50; p50 < cfg.Hold {
		t.Errorf("hold p50 %s, shorter than the hold of %s", p50, cfg.Hold)
	}

	cfg = small(addr, CNJunkFIN)
	cfg.Count, cfg.Timeout = 2, 1500*time.Millisecond
	rep = run(t, cfg)
	wantOnly(t, rep, CNJunkFIN, Timeout)
	if got := rep.Shapes[CNJunkFIN].Statuses[200]; got != 2 {
		t.Errorf("cn-junk-fin: %d responses, want 2 before the timeout", got)
	}
}

func TestOutcomeClassification(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		return ln.Addr().String()
	}
	plainHTTP := httptest.NewServer(http.HandlerFunc(echoHandler))
	t.Cleanup(plainHTTP.Close)

	tests := []struct {
		name   string
		target string
		shape  Shape
		want   Outcome
	}{
		{"refused", refused(), KeepAlive, Refused},
		{"reset on accept", rawServer(t, func(c *net.TCPConn) {
			c.SetLinger(0)
		}), KeepAlive, Reset},
		{"FIN before the handshake", rawServer(t, func(c *net.TCPConn) {
			c.CloseWrite()
			io.Copy(io.Discard, c)
		}), KeepAlive, ClosedEarly},
		{"TLS to a plain HTTP port", plainHTTP.Listener.Addr().String(), KeepAlive, TLSError},
		{"no response", tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
			untilClientGone(raw, tc)
		}), CompleteCN, Timeout},
		{"cut response", tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
			// Read to close_notify first, so closing sends FIN, not RST.
			io.Copy(io.Discard, tc)
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
		}), CompleteCN, ResponseTruncated},
		{"close without response", tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
			io.Copy(io.Discard, tc)
		}), CompleteCN, ClosedEarly},
		{"keepalive server closes after one", tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
			br := bufio.NewReader(tc)
			readRequestBody(br)
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			tc.CloseWrite()
			untilClientGone(raw, br)
		}), KeepAlive, ClosedEarly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := small(tt.target, tt.shape)
			cfg.Count, cfg.Concurrency, cfg.Timeout = 2, 2, 2*time.Second
			if tt.want == Timeout {
				cfg.Timeout = 300 * time.Millisecond
			}
			wantOnly(t, run(t, cfg), tt.shape, tt.want)
		})
	}
}

func TestDurationCap(t *testing.T) {
	silent := tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) { untilClientGone(raw, tc) })
	cfg := small(silent, CompleteCN)
	cfg.Count, cfg.Concurrency = 50, 2
	cfg.Timeout, cfg.Duration = 150*time.Millisecond, 200*time.Millisecond
	rep := run(t, cfg)
	if !rep.StoppedByDuration || rep.Started >= cfg.Count || rep.Started == 0 {
		t.Errorf("started %d of %d, stopped by duration %v; want a few, stopped", rep.Started, cfg.Count, rep.StoppedByDuration)
	}
	if rep.Completed != rep.Started {
		t.Errorf("completed %d, want every started one (%d)", rep.Completed, rep.Started)
	}
}

func TestCancelAbortsInFlight(t *testing.T) {
	accepted := make(chan struct{}, 10)
	silent := tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) {
		accepted <- struct{}{}
		untilClientGone(raw, tc)
	})
	cfg := small(silent, CompleteCN)
	cfg.Count, cfg.Concurrency = 10, 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once all four workers hold a connection.
		for range 4 {
			<-accepted
		}
		cancel()
	}()
	start := time.Now()
	rep, err := Run(ctx, cfg, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error %v, want the context's", err)
	}
	if d := time.Since(start); d >= cfg.Timeout {
		t.Errorf("Run took %s; in-flight connections were not closed on cancellation", d)
	}
	if rep.Aborted != 4 || rep.Completed != 0 || rep.Started != 4 {
		t.Errorf("started %d, aborted %d, completed %d; want the 4 in flight aborted and none counted",
			rep.Started, rep.Aborted, rep.Completed)
	}
}

func TestRefusesRemoteTargets(t *testing.T) {
	ctx := context.Background()
	for _, target := range []string{"192.0.2.10:443", "[2001:db8::1]:443", "10.0.0.1:80", "0.0.0.0:443"} {
		_, err := Run(ctx, Config{Target: target, Count: 1}, nil)
		if err == nil || !strings.Contains(err.Error(), "not loopback") {
			t.Errorf("Run(%s) = %v, want a not-loopback refusal", target, err)
		}
	}
	_, err := Run(ctx, Config{Target: "127.0.0.1:1", MetricsURL: "http://192.0.2.10:9090/metrics"}, nil)
	if err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Errorf("remote metrics URL: %v, want a refusal", err)
	}
	for _, target := range []string{"127.0.0.1:443", "127.8.9.10:443", "[::1]:443", "localhost:443"} {
		if _, err := resolveTarget(ctx, target, false); err != nil {
			t.Errorf("resolveTarget(%s): %v, want it allowed", target, err)
		}
	}
	if got, err := resolveTarget(ctx, "192.0.2.10:443", true); err != nil || len(got) != 1 || got[0] != "192.0.2.10:443" {
		t.Errorf("with allowRemote: %v, %v; want the target as given", got, err)
	}
	for _, bad := range []string{"", "127.0.0.1", ":443", "127.0.0.1:http1"} {
		if _, err := Run(ctx, Config{Target: bad}, nil); err == nil {
			t.Errorf("Run(%q): no error", bad)
		}
	}
}

func TestProgressLines(t *testing.T) {
	silent := tlsServer(t, func(raw *net.TCPConn, tc *tls.Conn) { untilClientGone(raw, tc) })
	cfg := small(silent, CompleteCN)
	cfg.Count, cfg.Concurrency, cfg.Timeout = 2, 2, 200*time.Millisecond
	cfg.ProgressInterval = 20 * time.Millisecond
	var buf bytes.Buffer
	if _, err := Run(context.Background(), cfg, &buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "storm: 2/2 conns") || !strings.HasPrefix(lines[0], "storm: ") {
		t.Errorf("progress:\n%s\nwant lines ending at 2/2", buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Error("progress to a non-terminal redraws with \\r")
	}
}

func equalMaps[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
