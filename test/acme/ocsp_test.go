//go:build linux

package acme_test

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// ocspResponder answers every OCSP request "good", signed with pebble's
// intermediate key (pebble names the responder in its certificates but
// runs none).
type ocspResponder struct {
	url      string
	requests atomic.Int64

	mu     sync.Mutex
	pebble *pebbleEnv
	issuer *x509.Certificate
	key    *rsa.PrivateKey
}

func startOCSP(t *testing.T) *ocspResponder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &ocspResponder{url: "http://" + ln.Addr().String() + "/"}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return r
}

func (r *ocspResponder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var raw []byte
	if req.Method == http.MethodPost {
		raw, _ = io.ReadAll(io.LimitReader(req.Body, 64<<10))
	} else {
		raw, _ = base64.StdEncoding.DecodeString(strings.TrimPrefix(req.URL.Path, "/"))
	}
	q, err := ocsp.ParseRequest(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	issuer, key, err := r.signer()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	now := time.Now()
	resp, err := ocsp.CreateResponse(issuer, issuer, ocsp.Response{Status: ocsp.Good, SerialNumber: q.SerialNumber,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r.requests.Add(1)
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// signer fetches pebble's intermediate certificate and key once.
func (r *ocspResponder) signer() (*x509.Certificate, *rsa.PrivateKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.key != nil {
		return r.issuer, r.key, nil
	}
	if r.pebble == nil {
		return nil, nil, errors.New("pebble not started")
	}
	roots := x509.NewCertPool()
	pemRoot, _ := os.ReadFile(r.pebble.serverRoot)
	roots.AppendCertsFromPEM(pemRoot)
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer cl.CloseIdleConnections()
	get := func(path string) (*pem.Block, error) {
		resp, err := cl.Get(r.pebble.management + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s: %d, no PEM", path, resp.StatusCode)
		}
		return block, nil
	}
	cb, err := get("/intermediates/0")
	if err != nil {
		return nil, nil, err
	}
	kb, err := get("/intermediate-keys/0")
	if err != nil {
		return nil, nil, err
	}
	if r.issuer, err = x509.ParseCertificate(cb.Bytes); err != nil {
		return nil, nil, err
	}
	if r.key, err = x509.ParsePKCS1PrivateKey(kb.Bytes); err != nil {
		return nil, nil, err
	}
	return r.issuer, r.key, nil
}

// A certificate that names an OCSP responder is served with its staple.
func TestOCSPStapling(t *testing.T) {
	dnsAddr := startDNS(t)
	ports := proctest.FreePorts(t, 2)
	responder := startOCSP(t)
	pb := startPebble(t, dnsAddr, ports[0], ports[1], pebbleOptions{ocsp: responder.url})
	responder.mu.Lock()
	responder.pebble = pb
	responder.mu.Unlock()
	cfg := proxyConfig(pb, filepath.Join(t.TempDir(), "acme"), ports[0], ports[1], startMachine(t),
		`"tls-alpn-01"`, []string{"alpha.test"}, "")
	e := startProxy(t, cfg, ports[0], ports[1])
	e.awaitMetric(t, `edgeproxy_acme_orders_total{kind="issue",result="ok"}`, 1, issueTimeout)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ports[1]), &tls.Config{ServerName: "alpha.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		st := c.ConnectionState()
		c.Close()
		if len(st.OCSPResponse) > 0 {
			issuer, _, err := responder.signer()
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ocsp.ParseResponseForCert(st.OCSPResponse, st.PeerCertificates[0], issuer)
			if err != nil || resp.Status != ocsp.Good {
				t.Fatalf("stapled response: %v, %v", resp, err)
			}
			t.Logf("staple served after %d OCSP requests to the responder", responder.requests.Load())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no OCSP staple served after 30s (%d requests reached the responder)\n%s", responder.requests.Load(), e.proc.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
