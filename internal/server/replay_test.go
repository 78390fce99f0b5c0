package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proxytest"
	"github.com/edgeproxy/edgeproxy/internal/replay"
)

// replayFleet is app "app" with machines in iad (this edge), ord and syd,
// and app "billing" in ord, each machine on its own loopback address with
// injected round-trip times. Requests are balanced one by one and iad1 is
// preferred by region_rtt so every test knows who answers first.
func replayFleet(t *testing.T) (*fleet, *proxytest.Proxy) {
	f := newFleet(t)
	f.add("iad1", "iad", 0)
	f.add("iad2", "iad", 0)
	f.add("ord1", "ord", 5*time.Millisecond)
	f.add("syd1", "syd", 10*time.Millisecond)
	f.add("bill1", "ord", 5*time.Millisecond)
	f.add("dead", "fra", 0)
	// dead's address is refused from the start.
	f.machines["dead"].port = proxytest.DeadPort(t)
	req := "    [apps.services.concurrency]\n    type = \"requests\"\n"
	checks := req + healthCheck
	cfg := edge + `region_rtt = { ord = "5ms", syd = "20ms", fra = "90ms" }` +
		f.app("app", "app.test", "", checks, "iad1", "iad2", "ord1", "syd1") +
		f.app("billing", "billing.test", "", req, "bill1") +
		f.app("flaky", "flaky.test", "", req, "dead")
	p := proxytest.Start(t, cfg, proxytest.Options{Dial: f.dial, Seed: 5})
	return f, p
}

// q builds a query string from pairs: q("replay.iad1", "region=syd").
func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return "/?" + v.Encode()
}

// first pins the first hop to iad1.
var first = map[string]string{"Fly-Force-Instance-Id": "iad1"}

func TestReplayHeader(t *testing.T) {
	_, p := replayFleet(t)
	c := p.Client(80, false)
	check := func(name, target, wantMachine string) fleetResult {
		t.Helper()
		r := do(t, c, "GET", target, nil, first)
		if r.Status != 200 || r.Report.ID != wantMachine {
			t.Fatalf("%s: status %d %s %q, machine %q, want %s", name, r.Status, r.Code, r.Body, r.Report.ID, wantMachine)
		}
		if r.Header.Get("Fly-Replay") != "" || strings.Contains(r.Body, "replaying") {
			t.Fatalf("%s: the replaying response reached the client", name)
		}
		return r
	}
	start := time.Now()
	r := check("region", q("replay.iad1", "region=syd;state=cart-42"), "syd1")
	src, err := replay.ParseSrc(r.Report.ReplaySrc)
	if err != nil {
		t.Fatalf("fly-replay-src %q: %v", r.Report.ReplaySrc, err)
	}
	if src.Instance != "iad1" || src.Region != "iad" || src.State != "cart-42" || src.T.Before(start.Add(-time.Second)) || src.T.After(time.Now()) {
		t.Errorf("fly-replay-src %q = %+v", r.Report.ReplaySrc, src)
	}
	check("region list, first has nobody healthy", q("replay.iad1", "region=ams,ord"), "ord1")
	check("instance", q("replay.iad1", "instance=syd1"), "syd1")
	check("prefer_instance", q("replay.iad1", "prefer_instance=ord1"), "ord1")
	check("elsewhere", q("replay.iad1", "elsewhere=true;region=iad"), "iad2")
	r = check("app", q("replay.iad1", "app=billing"), "bill1")
	if !strings.HasPrefix(r.Report.ReplaySrc, "instance=iad1;region=iad;t=") {
		t.Errorf("replay to another app: fly-replay-src %q", r.Report.ReplaySrc)
	}
	check("app and instance", q("replay.iad1", "app=billing;instance=bill1"), "bill1")
	// A chain: iad1 → ord1 → syd1; the last source is ord1.
	r = check("chain", q("replay.iad1", "region=ord", "replay.ord1", "region=syd;state=2"), "syd1")
	if !strings.HasPrefix(r.Report.ReplaySrc, "instance=ord1;region=ord;") || !strings.HasSuffix(r.Report.ReplaySrc, ";state=2") {
		t.Errorf("chain: fly-replay-src %q", r.Report.ReplaySrc)
	}
	check("json form", q("json.iad1", `{"region":["syd"],"state":"j"}`), "syd1")
	// The client's own fly-replay-src is never trusted.
	r = do(t, c, "GET", "/", nil, map[string]string{"Fly-Force-Instance-Id": "iad1", "Fly-Replay-Src": "instance=forged"})
	if r.Report.ReplaySrc != "" {
		t.Errorf("forged fly-replay-src reached the machine: %q", r.Report.ReplaySrc)
	}
	if v := scrape(t, p, `edgeproxy_replays_total{app="app",outcome="replayed"}`); v < 8 {
		t.Errorf("edgeproxy_replays_total replayed = %v, want at least 8", v)
	}
}

// An invalid instruction is not acted on: the client gets the machine's
// response unchanged (minus the header) and the operator a log line.
func TestReplayInvalidPassesThrough(t *testing.T) {
	_, p := replayFleet(t)
	c := p.Client(80, false)
	for _, bad := range []string{"region=IAD", "instance=a;prefer_instance=b", "timeout=5"} {
		r := do(t, c, "GET", q("bad.iad1", bad), nil, first)
		if r.Status != 418 || !strings.Contains(r.Body, "invalid instruction from iad1") || r.Header.Get("Fly-Replay") != "" {
			t.Errorf("%q: status %d body %q fly-replay %q", bad, r.Status, r.Body, r.Header.Get("Fly-Replay"))
		}
	}
	if !strings.Contains(p.Logs.String(), "invalid fly-replay ignored") {
		t.Error("invalid instruction not logged")
	}
}

// TestReplayBodies: a POST body is replayed byte for byte; a body over
// 1 MiB cannot be (PA01); a chain longer than 10 replays ends in PA02.
func TestReplayBodies(t *testing.T) {
	_, p := replayFleet(t)
	c := p.Client(80, false)
	body := bytes.Repeat([]byte("edgeproxy "), 90_000) // 900 kB
	sum := sha256.Sum256(body)
	r := do(t, c, "POST", q("replay.iad1", "region=ord", "replay.ord1", "instance=syd1"), bytes.NewReader(body), first)
	if r.Status != 200 || r.Report.ID != "syd1" || r.Report.BodyLen != len(body) || r.Report.BodySum != hex.EncodeToString(sum[:]) {
		t.Fatalf("900 kB body through two replays: %d %s at %q, %d bytes", r.Status, r.Code, r.Report.ID, r.Report.BodyLen)
	}
	// Chunked (no Content-Length): recorded while streamed, replayed all the same.
	r = do(t, c, "POST", q("replay.iad1", "region=syd"), struct{ *bytes.Reader }{bytes.NewReader(body)}, first)
	if r.Status != 200 || r.Report.BodySum != hex.EncodeToString(sum[:]) {
		t.Fatalf("chunked body replay: %d %s, %d bytes", r.Status, r.Code, r.Report.BodyLen)
	}
	big := bytes.Repeat([]byte("x"), replay.MaxBufferedBody+1)
	r = do(t, c, "POST", q("replay.iad1", "region=ord"), bytes.NewReader(big), first)
	if r.Status != 502 || r.Code != "PA01" {
		t.Errorf("1 MiB + 1 body: status %d code %q, want PA01", r.Status, r.Code)
	}
	// The same body is fine when nobody asks for a replay.
	r = do(t, c, "POST", "/", bytes.NewReader(big), first)
	if r.Status != 200 || r.Report.BodyLen != len(big) {
		t.Errorf("1 MiB + 1 body without replay: %d %s, %d bytes", r.Status, r.Code, r.Report.BodyLen)
	}
	// iad1 and iad2 send the request to each other forever.
	r = do(t, c, "GET", q("replay.iad1", "instance=iad2", "replay.iad2", "instance=iad1"), nil, first)
	if r.Code != "PA02" {
		t.Errorf("replay loop: status %d code %q, want PA02", r.Status, r.Code)
	}
	// Exactly ten replays are allowed, the eleventh is refused.
	r = do(t, c, "GET", "/?chain=10", nil, first)
	if r.Status != 200 || !strings.HasSuffix(r.Report.ReplaySrc, ";state=10") {
		t.Errorf("10 replays: %d %s, fly-replay-src %q", r.Status, r.Code, r.Report.ReplaySrc)
	}
	r = do(t, c, "GET", "/?chain=11", nil, first)
	if r.Code != "PA02" || r.Status != 502 {
		t.Errorf("11 replays: status %d code %q, want PA02", r.Status, r.Code)
	}
}

// TestReplayFallback: when the replay fails the request goes to the
// fallback, which is told why; without a fallback the client gets the error.
func TestReplayFallback(t *testing.T) {
	f, p := replayFleet(t)
	c := p.Client(80, false)
	fb := func(instr, wantMachine, wantReason string) {
		t.Helper()
		r := do(t, c, "GET", q("replay.iad1", instr), nil, first)
		if r.Status != 200 || r.Report.ID != wantMachine || r.Report.ReplayFailed != wantReason {
			t.Errorf("%s: %d %s at %q with fly-replay-failed %q; want %s with %s", instr, r.Status, r.Code, r.Report.ID, r.Report.ReplayFailed, wantMachine, wantReason)
		}
	}
	fb("region=ams;fallback=prefer_self", "iad1", "no_candidate")
	fb("app=nosuch;fallback=force_self", "iad1", "no_candidate")
	fb("app=flaky;instance=dead;fallback=force_self", "iad1", "retries_exhausted")
	// syd1 fails its check: a forced replay to it waits for its timeout.
	f.machines["syd1"].healthy.Store(false)
	waitFor(t, "syd1 out of routing", 3*time.Second, func() bool {
		return do(t, c, "GET", "/", nil, map[string]string{"Fly-Prefer-Region": "syd"}).Report.ID != "syd1"
	})
	start := time.Now()
	fb("instance=syd1;timeout=150ms;fallback=prefer_self", "iad1", "timeout")
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("timeout=150ms fallback after %v", took)
	}
	// prefer_self falls back to the balancer when the replaying machine
	// is gone too: here it is excluded by its own failing check.
	// Without a fallback the client gets the failure.
	for _, tc := range []struct{ instr, code string }{
		{"region=ams", "PR01"},
		{"app=flaky;instance=dead", "PC01"},
		{"instance=syd1;timeout=100ms", "PR04"},
	} {
		r := do(t, c, "GET", q("replay.iad1", tc.instr), nil, first)
		if r.Code != tc.code {
			t.Errorf("%s without fallback: %d %q (%s), want %s", tc.instr, r.Status, r.Code, strings.TrimSpace(r.Body), tc.code)
		}
	}
}

// TestRetries: a request whose machine drops the connection before any
// response byte is sent to another machine when that is safe (an
// idempotent method, or a body the proxy holds whole), and never
// otherwise; a machine that is merely slow is never retried.
func TestRetries(t *testing.T) {
	f, p := replayFleet(t)
	c := p.Client(80, false)
	prefer := map[string]string{"Fly-Prefer-Instance-Id": "iad1"}
	hits := func() int64 { return f.machines["iad1"].hits.Load() }

	before := hits()
	r := do(t, c, "GET", q("drop.iad1", "1"), nil, prefer)
	if r.Status != 200 || r.Report.ID == "iad1" || hits() != before+1 {
		t.Errorf("GET dropped by iad1: %d %s at %q (iad1 hit %d times)", r.Status, r.Code, r.Report.ID, hits()-before)
	}
	body := bytes.Repeat([]byte("b"), 200_000)
	r = do(t, c, "POST", q("drop.iad1", "1"), bytes.NewReader(body), prefer)
	if r.Status != 200 || r.Report.ID == "iad1" || r.Report.BodyLen != len(body) {
		t.Errorf("POST with a buffered body dropped by iad1: %d %s at %q, %d bytes", r.Status, r.Code, r.Report.ID, r.Report.BodyLen)
	}
	big := bytes.Repeat([]byte("b"), replay.MaxBufferedBody+1)
	before = hits()
	r = do(t, c, "POST", q("drop.iad1", "1"), bytes.NewReader(big), prefer)
	if r.Status != 502 || r.Code != "PC03" || hits() != before+1 {
		t.Errorf("POST too large to hold, dropped: %d %q (iad1 hit %d times); want 502 PC03, not retried", r.Status, r.Code, hits()-before)
	}
	if v := scrape(t, p, `edgeproxy_request_retries_total{app="app",reason="PC03"}`); v != 2 {
		t.Errorf("retries counted %v, want 2", v)
	}
}

// TestSlowMachineNotRetried: past response_header_timeout the client gets
// 504 PU01 and no other machine sees the request: it may be running.
func TestSlowMachineNotRetried(t *testing.T) {
	f := newFleet(t)
	f.add("a", "iad", 0)
	f.add("b", "iad", 0)
	cfg := edge + `response_header_timeout = "200ms"` + f.app("app", "app.test", "", "", "a", "b")
	p := proxytest.Start(t, cfg, proxytest.Options{})
	r := do(t, p.Client(80, false), "GET", q("sleep.a", "1s", "sleep.b", "1s"), nil, map[string]string{"Fly-Prefer-Instance-Id": "a"})
	if r.Status != 504 || r.Code != "PU01" || f.machines["b"].hits.Load() != 0 {
		t.Errorf("slow machine: %d %q, b hit %d times; want 504 PU01 and no retry", r.Status, r.Code, f.machines["b"].hits.Load())
	}
}
