//go:build linux

package ops_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stepPause lets the steady load run between two operator actions.
const stepPause = 700 * time.Millisecond

// step is one operator action during the load: a reload of a config
// variant (by "SIGHUP" or "POST /v1/reload") or an "upgrade".
type step struct {
	via string
	cfg variant
}

// TestReloadsAndUpgradesUnderLoad keeps steady HTTP/1.1, HTTP/2 and raw TCP
// load on the proxy while it is reloaded 20 times (route changes and
// invalid files, by SIGHUP and by the admin API) and upgraded 3 times, and
// asserts that the load never notices: no failed request, no reset, every
// echoed byte intact. After each reload it checks the route change took
// effect (or, for an invalid file, that it was refused and nothing
// changed); after each upgrade that the old process drained and exited 0
// and the new one serves.
func TestReloadsAndUpgradesUnderLoad(t *testing.T) {
	start := time.Now()
	base := variant{}
	e := startEnv(t, base)
	t.Logf("proxy pid %d; local ports 80→%d 443→%d 5000→%d %d→%d; admin %s; demo machines %v",
		e.pid(), e.ports.p80, e.ports.p443, e.ports.p5000, betaPublic, e.ports.p4, e.admin, e.demo)
	pr := newProber(t, e)
	pr.checkState(base, "at start")

	beta := func(host string, p4, on80 bool) variant {
		return variant{betaHost: host, betaP4: p4, betaOn80: on80}
	}
	with := func(v variant, f func(*variant)) variant { f(&v); return v }
	// Each generation re-opens port 8080 last, just before the next
	// upgrade: a reload that re-opens a port also applies everything else
	// in its file, so if it is refused no later step depends on it.
	b1 := beta("beta-1.test", true, false)
	b2 := beta("beta-2.test", true, true)
	b2no4 := beta("beta-2.test", false, true)
	b3 := beta("beta-3.test", true, true)
	b3a3 := with(b3, func(v *variant) { v.alphaA3 = true })
	b3a3no4 := with(b3a3, func(v *variant) { v.betaP4 = false })
	b4a3 := with(b3a3no4, func(v *variant) { v.betaHost = "beta-4.test" })
	b4 := with(b4a3, func(v *variant) { v.alphaA3 = false })
	b4p4 := with(b4, func(v *variant) { v.betaP4 = true })
	b4no4 := with(b4p4, func(v *variant) { v.betaP4 = false })
	b5 := beta("beta-5.test", true, false)
	b6 := beta("beta-6.test", true, true)
	b6a3 := with(b6, func(v *variant) { v.alphaA3 = true })
	b6no4 := with(b6a3, func(v *variant) { v.betaP4 = false })
	bad := func(v variant, kind string) variant { v.bad = kind; return v }
	const hup, post = "SIGHUP", "POST /v1/reload"
	plan := []step{
		{hup, b1},                       // 1: open public port 8080 for a new app
		{hup, bad(b1, "key")},           // 2
		{hup, b2},                       // 3: beta also on 80, by Host
		{post, b2no4},                   // 4: close 8080
		{hup, b3},                       // 5: open 8080 again, rename beta
		{hup, bad(b3, "handler")},       // 6
		{"upgrade", variant{}},          //
		{hup, b3a3},                     // 7: add machine a3 to alpha
		{post, b3a3no4},                 // 8: close 8080
		{hup, bad(b3a3no4, "hostname")}, // 9
		{hup, b4a3},                     // 10: rename beta
		{hup, b4},                       // 11: remove machine a3
		{hup, b4p4},                     // 12: open 8080 again
		{hup, bad(b4p4, "attempts")},    // 13
		{"upgrade", variant{}},          //
		{post, b4no4},                   // 14: close 8080
		{"upgrade", variant{}},          //
		{hup, b5},                       // 15: open 8080 in a fresh process
		{hup, bad(b5, "key")},           // 16
		{hup, b6},                       // 17: beta back on 80, renamed
		{post, b6a3},                    // 18: add machine a3 again
		{hup, bad(b6a3, "attempts")},    // 19
		{hup, b6no4},                    // 20: close 8080
	}

	ld := startLoad(e.ports)
	loadStopped := false
	defer func() {
		if !loadStopped {
			ld.stop()
		}
	}()
	time.Sleep(2 * stepPause)
	reloads, refused, upgrades, current := 0, 0, 0, base
	for _, s := range plan {
		time.Sleep(stepPause)
		if s.via == "upgrade" {
			upgrades++
			name := fmt.Sprintf("upgrade %d", upgrades)
			ld.stats.setPhase(name)
			// The new process reads the file: the last valid config written.
			current = e.valid
			pr.upgrade(name, current)
			continue
		}
		reloads++
		name := fmt.Sprintf("reload %d by %s: %s", reloads, s.via, s.cfg)
		ld.stats.setPhase(name)
		ok, said := e.reload(s.via, s.cfg)
		switch {
		case s.cfg.bad != "" && ok:
			t.Errorf("%s: the invalid config was taken: %s", name, said)
		case s.cfg.bad != "":
			refused++
			pr.checkState(current, name+" (refused)")
		case !ok:
			t.Errorf("%s: the valid config was refused: %s", name, said)
			// The file is valid, and the next upgrade will read it.
		default:
			if current.alphaA3 != s.cfg.alphaA3 {
				ld.stats.a3Removed.Store(!s.cfg.alphaA3)
			}
			pr.checkChange(current, s.cfg, name)
			current = s.cfg
		}
		t.Logf("%s → taken=%v: %s", name, ok, said)
	}
	time.Sleep(2 * stepPause)
	ld.stats.setPhase("end")
	ld.stop()
	loadStopped = true
	elapsed := time.Since(start)

	st := ld.stats
	served := st.h1.Load() + st.h2.Load()
	t.Logf("served %d requests (%d HTTP/1.1, %d HTTP/2) and %d TCP streams (%d MiB echoed) in %s, across %d reloads (%d refused) and %d upgrades",
		served, st.h1.Load(), st.h2.Load(), st.streams.Load(), st.streamBytes.Load()>>20, elapsed.Round(time.Second), reloads, refused, upgrades)
	if n := st.toRemovedA3.Load(); n > 0 {
		t.Logf("note: %d alpha requests on keep-alive connections were still answered by machine a3 (d3) after a reload removed it", n)
	}
	fmt.Printf("ops: served %d requests (%d h1, %d h2), %d TCP streams (%d MiB) intact; %d failures, %d resets; %d reloads (%d refused), %d upgrades; %s\n",
		served, st.h1.Load(), st.h2.Load(), st.streams.Load(), st.streamBytes.Load()>>20, st.failures.Load(), st.resets.Load(),
		reloads, refused, upgrades, elapsed.Round(time.Second))

	if st.failures.Load() > 0 {
		t.Errorf("the steady load saw %d failures (%d connection resets); the first:\n  %s",
			st.failures.Load(), st.resets.Load(), strings.Join(st.errList(), "\n  "))
	}
	if st.h1.Load() == 0 || st.h2.Load() == 0 || st.streams.Load() == 0 {
		t.Errorf("some load never got through: h1 %d, h2 %d, tcp %d", st.h1.Load(), st.h2.Load(), st.streams.Load())
	}
	if reloads != 20 || upgrades != 3 {
		t.Fatalf("plan ran %d reloads and %d upgrades, want 20 and 3", reloads, upgrades)
	}
	if t.Failed() {
		e.logTail(40)
	}
}

// prober checks routes with fresh connections, which always meet the
// serving process and its current config.
type prober struct {
	t      *testing.T
	e      *opsEnv
	h1, h2 *http.Client
}

func newProber(t *testing.T, e *opsEnv) *prober {
	p := &prober{t: t, e: e, h1: newH1Client(e.ports, false), h2: newH2Client(e.ports)}
	t.Cleanup(func() { p.h1.CloseIdleConnections(); p.h2.CloseIdleConnections() })
	return p
}

// checkState checks what every variant shares and what v says of port
// 8080 and of beta's name on 80.
func (p *prober) checkState(v variant, when string) {
	p.t.Helper()
	if id, err := get(p.h1, "http://alpha.test/probe", "alpha.test", false); err != nil || id == "" {
		p.t.Errorf("%s: alpha on 80: %q %v", when, id, err)
	}
	p.h2.CloseIdleConnections()
	if id, err := get(p.h2, "https://alpha.test/probe", "alpha.test", true); err != nil || id == "" {
		p.t.Errorf("%s: alpha on 443: %q %v", when, id, err)
	}
	if err := echoStream("127.0.0.1:"+strconv.Itoa(p.e.ports.p5000), 4096, 10*time.Millisecond); err != nil {
		p.t.Errorf("%s: echo on 5000: %v", when, err)
	}
	if v.betaP4 {
		p.betaServes(when, betaPublic, v.betaHost)
	} else {
		p.portRefuses(when)
	}
	if v.betaOn80 {
		p.betaServes(when, 80, v.betaHost)
	}
}

// checkChange checks v's routes after a reload from old.
func (p *prober) checkChange(old, v variant, when string) {
	p.t.Helper()
	p.checkState(v, when)
	if old.betaOn80 && v.betaOn80 && old.betaHost != v.betaHost {
		p.unknownHost(when, old.betaHost)
	}
	if v.alphaA3 != old.alphaA3 {
		p.alphaA3(when, v.alphaA3)
	}
}

func (p *prober) betaServes(when string, public int, host string) {
	p.t.Helper()
	id, err := get(p.h1, fmt.Sprintf("http://%s:%d/probe", host, public), host, false)
	if err != nil || id != "d3" {
		p.t.Errorf("%s: beta (%s) on public port %d: answered by %q, %v; want its machine d3", when, host, public, id, err)
	}
}

// unknownHost checks that a name no app claims any more gets PR05.
func (p *prober) unknownHost(when, host string) {
	p.t.Helper()
	req, _ := http.NewRequest("GET", "http://alpha.test/probe", nil)
	req.Host = host
	resp, err := p.h1.Do(req)
	if err != nil {
		p.t.Errorf("%s: old name %s on 80: %v", when, host, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Edgeproxy-Error-Code") != "PR05" {
		p.t.Errorf("%s: old name %s on 80 still routed: %s %q, want 404 PR05", when, host, resp.Status, resp.Header.Get("Edgeproxy-Error-Code"))
	}
}

// portRefuses checks that the local port of public 8080 refuses
// connections. A connect that succeeds means something still listens; a
// request then tells whether anyone serves it.
func (p *prober) portRefuses(when string) {
	p.t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(p.e.ports.p4)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return
	}
	if err != nil {
		p.t.Errorf("%s: port %d (%s) is not in the config: connect failed with %v, want connection refused", when, betaPublic, addr, err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "GET /probe HTTP/1.1\r\nHost: beta.test\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 64)
	n, rerr := c.Read(buf)
	p.t.Errorf("%s: port %d (%s) is not in the config but the connect succeeded (something still listens); a request then read %q, %v",
		when, betaPublic, addr, buf[:n], rerr)
}

// alphaA3 checks, over fresh connections, that machine a3 (demo d3) gets
// alpha's new connections once added (the balancer prefers the least
// loaded machine, and the steady load keeps a1 and a2 busy) and none once
// removed.
func (p *prober) alphaA3(when string, want bool) {
	p.t.Helper()
	seen := 0
	const tries = 30
	for i := 0; i < tries && !(want && seen > 0); i++ {
		id, err := get(p.h1, "http://alpha.test/probe-a3", "alpha.test", false)
		if err != nil {
			p.t.Errorf("%s: alpha: %v", when, err)
			return
		}
		if id == "d3" {
			seen++
		}
	}
	if want && seen == 0 {
		p.t.Errorf("%s: a3 was added to alpha but none of %d new connections reached it", when, tries)
	}
	if !want && seen > 0 {
		p.t.Errorf("%s: a3 was removed from alpha but %d of %d new connections reached it", when, seen, tries)
	}
}

// upgrade hands the proxy to a new process and checks that the old one
// drains and exits 0 and the new one serves cur. While the old process
// drains, it also records what the shared admin address answers to GET
// /ready.
func (p *prober) upgrade(name string, cur variant) {
	t, e := p.t, p.e
	t.Helper()
	tookOver, drained := e.logs.count("a new process took over; draining"), e.logs.count("drained")
	began := time.Now()
	old, pid := e.upgrade()
	handed := time.Since(began)
	readyNot200 := 0
	probes := 0
	for alive(old) && time.Since(began) < exitWait {
		if status, _ := e.adminDo("GET", "/ready"); status != http.StatusOK {
			readyNot200++
		}
		probes++
		time.Sleep(20 * time.Millisecond)
	}
	st, err := e.sup.waitExit(old, exitWait)
	if err != nil {
		t.Fatalf("%s: old pid %d: %v", name, old, err)
	}
	t.Logf("%s: pid %d → %d: new process ready after %s, old one exited (status %d) after %s; /ready during the drain: %d of %d probes not 200",
		name, old, pid, handed.Round(time.Millisecond), st, time.Since(began).Round(time.Millisecond), readyNot200, probes)
	if st != 0 {
		t.Errorf("%s: old pid %d exited with status %d, want 0", name, old, st)
	}
	if !alive(pid) {
		t.Fatalf("%s: new pid %d is not running", name, pid)
	}
	if !waitFor(5*time.Second, func() bool {
		return e.logs.count("a new process took over; draining") > tookOver && e.logs.count("drained") > drained
	}) {
		t.Errorf("%s: the log lacks \"a new process took over; draining\" or \"drained\" for pid %d", name, old)
	}
	if status, body := e.adminDo("GET", "/ready"); status != http.StatusOK {
		t.Errorf("%s: /ready from the new process: %d %s", name, status, body)
	}
	recs, _ := e.logs.since(0)
	for _, r := range recs {
		if r["msg"] == "admin listening" && r.str("addr") != e.admin {
			t.Errorf("%s: a generation's admin API listens on %s, not %s", name, r.str("addr"), e.admin)
		}
	}
	p.checkState(cur, name)
}
