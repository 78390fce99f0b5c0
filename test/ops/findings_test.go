//go:build linux

package ops_test

// Focused checks of what an operator is told and what a reload reaches,
// without the steady load, so a failure names one behaviour.

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestAdminAPIDuringUpgradeDrain: after "edgeproxy upgrade" the admin
// address belongs to the new process. While the old one drains (here it
// waits for a slow TCP stream), GET /ready must keep saying ready, and a
// POST /v1/reload that answers ok must have changed the serving process.
func TestAdminAPIDuringUpgradeDrain(t *testing.T) {
	e := startEnv(t, variant{})
	// A stream that lasts a few seconds keeps the old process draining.
	var wg sync.WaitGroup
	var streamErr error
	wg.Go(func() {
		streamErr = echoStream("127.0.0.1:"+strconv.Itoa(e.ports.p5000), 64<<10, 4*time.Second)
	})
	defer wg.Wait()
	time.Sleep(300 * time.Millisecond)
	old, cur := e.upgrade()
	e.writeConfig(variant{betaHost: "beta-1.test", betaP4: true})
	var ready, reload []string
	probes := 0
	for ; probes < 10 && alive(old); probes++ {
		i := probes
		if status, body := e.adminDo("GET", "/ready"); status != http.StatusOK {
			ready = append(ready, strconv.Itoa(status)+" "+body)
		}
		if i < 5 {
			if status, body := e.adminDo("POST", "/v1/reload"); status != http.StatusOK {
				reload = append(reload, strconv.Itoa(status)+" "+body)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if probes == 0 {
		t.Fatalf("old pid %d exited before the admin API was probed; the drain was too short to test", old)
	}
	if st, err := e.sup.waitExit(old, exitWait); err != nil || st != 0 {
		t.Errorf("old pid %d: status %d, %v", old, st, err)
	}
	wg.Wait()
	if streamErr != nil {
		t.Errorf("the stream the old process drained: %v", streamErr)
	}
	if len(ready) > 0 {
		t.Errorf("pid %d serves, yet while pid %d drained the admin address answered GET /ready with %q", cur, old, ready)
	}
	if len(reload) > 0 {
		t.Errorf("while pid %d drained, POST /v1/reload of a valid config failed: %q", old, reload)
	}
	pr := newProber(t, e)
	pr.checkState(e.valid, "after POST /v1/reload during the drain, once the old process exited")
}

// TestReloadReachesKeepAliveConnections: a reload applies to new requests,
// including those on HTTP/1.1 keep-alive connections opened before it
// (Server.Reload: "new connections and requests use it"). A hostname the
// reload removed must not route any more on such a connection.
func TestReloadReachesKeepAliveConnections(t *testing.T) {
	before := variant{betaHost: "beta-1.test", betaOn80: true}
	e := startEnv(t, before)
	c := newH1Client(e.ports, true)
	c.Transport.(*http.Transport).MaxConnsPerHost = 1
	defer c.CloseIdleConnections()
	reused := func() (string, bool, error) {
		var got httptrace.GotConnInfo
		req, _ := http.NewRequest("GET", "http://beta.test/keep-alive", nil)
		req.Host = "beta-1.test"
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { got = i }}))
		resp, err := c.Do(req)
		if err != nil {
			return "", false, err
		}
		resp.Body.Close()
		return resp.Status + " " + resp.Header.Get("Edgeproxy-Error-Code"), got.Reused, nil
	}
	if status, _, err := reused(); err != nil || status != "200 OK " {
		t.Fatalf("beta-1.test before the reload: %q %v", status, err)
	}
	after := variant{betaHost: "beta-2.test", betaOn80: true}
	if ok, said := e.reload("SIGHUP", after); !ok {
		t.Fatalf("reload refused: %s", said)
	}
	newProber(t, e).unknownHost("on a new connection after the reload", "beta-1.test")
	status, wasReused, err := reused()
	if err != nil {
		t.Fatal(err)
	}
	if !wasReused {
		t.Fatalf("the request after the reload did not reuse the keep-alive connection; the test proves nothing")
	}
	if status != "404 Not Found PR05" {
		t.Errorf("on a keep-alive connection opened before the reload, the removed name beta-1.test still routes: %s, want 404 PR05", status)
	}
}

// TestSessionsResumeAcrossUpgrade: the session-ticket keys move to the
// new process on "edgeproxy upgrade", so a client's session resumes
// there instead of paying for a full handshake on every connection
// after each deploy.
func TestSessionsResumeAcrossUpgrade(t *testing.T) {
	e := startEnv(t, variant{})
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(4)
		connect := func() bool {
			t.Helper()
			c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(e.ports.p443), &tls.Config{ServerName: "alpha.test",
				InsecureSkipVerify: true, MaxVersion: version, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatalf("%s: %v", tls.VersionName(version), err)
			}
			defer c.Close()
			// A request and its answer: TLS 1.3's ticket comes after the
			// handshake.
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("%s: %v", tls.VersionName(version), err)
			}
			resp.Body.Close()
			return c.ConnectionState().DidResume
		}
		connect()
		if !connect() {
			t.Fatalf("%s: a session did not resume at the same process", tls.VersionName(version))
		}
		e.upgrade()
		if !connect() {
			t.Errorf("%s: a session did not resume at the process that took over", tls.VersionName(version))
		}
	}
}
