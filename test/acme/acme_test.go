//go:build linux

package acme_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

// issueTimeout bounds one issuance: an order, its validations and the
// certificate, all on loopback.
const issueTimeout = 60 * time.Second

// Certificates issue by each challenge type alone, and curl verifies the
// chain served against pebble's root.
func TestIssuance(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			dnsAddr := startDNS(t)
			ports := proctest.FreePorts(t, 2)
			pb := startPebble(t, dnsAddr, ports[0], ports[1], pebbleOptions{})
			hosts := []string{"alpha.test", "beta.test"}
			cfg := proxyConfig(pb, filepath.Join(t.TempDir(), "acme"), ports[0], ports[1], startMachine(t),
				strconv.Quote(challenge), hosts, "")
			e := startProxy(t, cfg, ports[0], ports[1])
			e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="issue",result="ok"}`, 2, issueTimeout)
			for _, h := range hosts {
				if body := e.curl(t, h, pb.issuingRoot); !strings.Contains(body, "machine saw "+h) {
					t.Errorf("https://%s/ through the proxy: %q", h, body)
				}
			}
			if n, _ := proctest.Metric(e.admin, `edgeproxy_certificates{source="acme"}`); n != 2 {
				t.Errorf("edgeproxy_certificates{source=acme} = %v, want 2", n)
			}
			// Port 80 still redirects everything that is not a challenge.
			cl := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", ports[0]), nil)
			req.Host = "alpha.test"
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMovedPermanently {
				t.Errorf("plain GET / on port 80: %d, want 301 (force_https)", resp.StatusCode)
			}
		})
	}
}

// A [[certificates]] file wins for the names it covers: ACME orders only
// the rest.
func TestFileCertificateTakesPrecedence(t *testing.T) {
	dnsAddr := startDNS(t)
	ports := proctest.FreePorts(t, 2)
	pb := startPebble(t, dnsAddr, ports[0], ports[1], pebbleOptions{})
	certFile, keyFile, err := tlsterm.WriteTestCert(t.TempDir(), "files.test")
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("\n[[certificates]]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile)
	cfg := proxyConfig(pb, filepath.Join(t.TempDir(), "acme"), ports[0], ports[1], startMachine(t),
		`"tls-alpn-01"`, []string{"alpha.test", "files.test"}, extra)
	e := startProxy(t, cfg, ports[0], ports[1])
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="issue",result="ok"}`, 1, issueTimeout)
	if got := e.served(t, "files.test"); got.Issuer.String() != got.Subject.String() || len(got.DNSNames) != 1 || got.DNSNames[0] != "files.test" {
		t.Errorf("files.test served %v issued by %v, want the file's self-signed certificate", got.DNSNames, got.Issuer)
	}
	if got := e.served(t, "alpha.test"); !strings.Contains(got.Issuer.CommonName, "Pebble") {
		t.Errorf("alpha.test served a certificate issued by %v, want pebble's", got.Issuer)
	}
	if n, _ := proctest.Metric(e.admin, `edgeproxy_certificates{source="acme"}`); n != 1 {
		t.Errorf("edgeproxy_certificates{source=acme} = %v, want 1 (files.test is the file's)", n)
	}
	if n, _ := proctest.Metric(e.admin, `edgeproxy_acme_orders_total{kind="issue",result="ok"}`); n != 1 {
		t.Errorf("%v issuances, want 1: files.test must not be ordered", n)
	}
}

// Renewal of short-lived certificates; a CA that refuses a name is
// logged with its problem; and a CA that is gone when a renewal is due
// leaves the certificate in hand serving.
func TestRenewalAndRefusals(t *testing.T) {
	dnsAddr := startDNS(t)
	ports := proctest.FreePorts(t, 2)
	pb := startPebble(t, dnsAddr, ports[0], ports[1], pebbleOptions{validity: 30, blocked: []string{"blocked.test"}})
	cfg := proxyConfig(pb, filepath.Join(t.TempDir(), "acme"), ports[0], ports[1], startMachine(t),
		`"tls-alpn-01", "http-01"`, []string{"alpha.test", "blocked.test"}, "")
	e := startProxy(t, cfg, ports[0], ports[1])
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="issue",result="ok"}`, 1, issueTimeout)
	first := e.served(t, "alpha.test")

	// The refused name: logged with the CA's problem and the code.
	e.proc.Await(t, "the refusal of blocked.test logged with pebble's problem", issueTimeout, func(r proctest.Record) bool {
		pt, _ := r["problem_type"].(string)
		return r["code"] == "PT08" && r["name"] == "blocked.test" && strings.Contains(pt, "rejectedIdentifier")
	})
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="issue",result="error"}`, 1, 5*time.Second)

	// Renewal: a third of 30 s remains after 20 s.
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="renew",result="ok"}`, 1, issueTimeout)
	renewed := e.served(t, "alpha.test")
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("after the renewal alpha.test still serves serial %v", first.SerialNumber)
	}
	e.curl(t, "alpha.test", pb.issuingRoot)

	// The CA gone: the next renewal fails, and the certificate in hand
	// keeps serving.
	pb.proc.Kill()
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="renew",result="error"}`, 1, issueTimeout)
	now := e.served(t, "alpha.test")
	if now.SerialNumber.Cmp(first.SerialNumber) == 0 || now.NotAfter.Before(renewed.NotAfter) {
		t.Errorf("after a failed renewal alpha.test serves serial %v (expires %v); want the latest in hand, %v or newer",
			now.SerialNumber, now.NotAfter, renewed.SerialNumber)
	}
}

// Two edges sharing the fleet's NATS: one orders each name (pebble sees
// one order per name), both serve the certificate, and pebble validates
// at the edge that did not order when that is where its connection
// lands. Their session tickets are shared too.
func TestFleetSharesCertificates(t *testing.T) {
	dnsAddr := startDNS(t)
	ports := proctest.FreePorts(t, 5)
	nats := ports[4]
	// Pebble's validations reach edge 1's ports, whichever edge ordered.
	pb := startPebble(t, dnsAddr, ports[0], ports[1], pebbleOptions{})
	machine := startMachine(t)
	hosts := []string{"alpha.test", "beta.test"}
	fleetTable := func(node, join string) string {
		return fmt.Sprintf("\n[fleet]\nnode = %q\nrole = \"edge\"\ndata_dir = %q\n%s\n", node, t.TempDir(), join)
	}
	cfg1 := proxyConfig(pb, t.TempDir(), ports[0], ports[1], machine, `"tls-alpn-01", "http-01"`, hosts,
		fleetTable("e1", fmt.Sprintf("embedded = true\nlisten = \"127.0.0.1:%d\"", nats)))
	cfg2 := proxyConfig(pb, t.TempDir(), ports[2], ports[3], machine, `"tls-alpn-01", "http-01"`, hosts,
		fleetTable("e2", fmt.Sprintf("urls = [\"nats://127.0.0.1:%d\"]", nats)))
	e1 := startProxy(t, cfg1, ports[0], ports[1])
	e2 := startProxy(t, cfg2, ports[2], ports[3])

	deadline := time.Now().Add(issueTimeout)
	for _, h := range hosts {
		for _, e := range []*proxyEnv{e1, e2} {
			for {
				if c := e.servedOrNil(h); c != nil && strings.Contains(c.Issuer.CommonName, "Pebble") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("edge on %d serves no pebble certificate for %s after %v\n%s", e.tlsPt, h, issueTimeout, e.proc.Output())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if s1, s2 := e1.served(t, h).SerialNumber, e2.served(t, h).SerialNumber; s1.Cmp(s2) != 0 {
			t.Errorf("%s: the edges serve different certificates (serials %v and %v)", h, s1, s2)
		}
		e2.curl(t, h, pb.issuingRoot)
	}
	orders := strings.Count(pb.proc.Output(), "Added order")
	t.Logf("pebble saw %d orders for %d names across 2 edges (edge 1 ordered %d, edge 2 %d; pebble validated at edge 1)",
		orders, len(hosts), strings.Count(e1.proc.Output(), "acme: certificate obtained"), strings.Count(e2.proc.Output(), "acme: certificate obtained"))
	if orders != len(hosts) {
		t.Errorf("pebble saw %d orders, want %d: one per name for the whole fleet", orders, len(hosts))
	}

	// A session begun at one edge resumes at the other.
	for _, pair := range [][2]*proxyEnv{{e1, e2}, {e2, e1}} {
		cache := tls.NewLRUClientSessionCache(4)
		deadline := time.Now().Add(30 * time.Second)
		for !resumesAcross(t, pair[0], pair[1], cache) {
			if time.Now().After(deadline) {
				t.Fatalf("a session from the edge on %d never resumed at the edge on %d", pair[0].tlsPt, pair[1].tlsPt)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// resumesAcross gets a session at a and reports whether it resumes at b.
func resumesAcross(t *testing.T, a, b *proxyEnv, cache tls.ClientSessionCache) bool {
	t.Helper()
	for i, e := range []*proxyEnv{a, b} {
		c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(e.tlsPt), &tls.Config{ServerName: "alpha.test",
			InsecureSkipVerify: true, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		// A request and its answer: TLS 1.3's ticket comes after the
		// handshake.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
		}
		resumed := c.ConnectionState().DidResume
		c.Close()
		if i == 1 {
			return resumed
		}
	}
	return false
}
