package demo

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

func TestHTTP1Report(t *testing.T) {
	addr := startMachine(t, "m1")
	req := newRequest(t, http.MethodPost, "http://"+addr+"/some/a%2Fb?x=1&y=two", strings.NewReader("hello"))
	req.Header.Set("X-Test", "yes")
	req.Host = "app.example"
	rep := getReport(t, h1Client(t), req, "m1", http.StatusOK)

	if rep.MachineID != "m1" || rep.Method != "POST" || rep.Proto != "HTTP/1.1" || rep.Host != "app.example" {
		t.Errorf("report = %+v", rep)
	}
	if rep.Path != "/some/a%2Fb" || rep.Query != "x=1&y=two" {
		t.Errorf("path, query = %q, %q; want the escaped path and raw query", rep.Path, rep.Query)
	}
	if rep.BodyBytes != 5 {
		t.Errorf("body_bytes = %d, want 5", rep.BodyBytes)
	}
	if got := rep.Headers["X-Test"]; len(got) != 1 || got[0] != "yes" {
		t.Errorf("headers[X-Test] = %q", got)
	}
	if _, _, err := net.SplitHostPort(rep.RemoteAddr); err != nil {
		t.Errorf("remote_addr %q: %v", rep.RemoteAddr, err)
	}
	if rep.Proxy != nil {
		t.Errorf("proxy = %+v, want null", rep.Proxy)
	}
	if rep.ConnID == 0 {
		t.Error("conn_id = 0, want connections numbered from 1")
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	addr := startMachine(t, "m2")
	c := h2cClient(t)
	first := getReport(t, c, newRequest(t, http.MethodGet, "http://"+addr+"/h2", nil), "m2", http.StatusOK)
	if first.Proto != "HTTP/2.0" {
		t.Fatalf("proto = %q, want HTTP/2.0", first.Proto)
	}
	if first.Host != addr {
		t.Errorf("host = %q, want %q (from :authority)", first.Host, addr)
	}
	// Both requests share one h2 connection, which conn_id makes visible.
	second := getReport(t, c, newRequest(t, http.MethodGet, "http://"+addr+"/h2", nil), "m2", http.StatusOK)
	if second.ConnID != first.ConnID {
		t.Errorf("conn_id %d then %d, want one multiplexed connection", first.ConnID, second.ConnID)
	}
}

func TestStatus(t *testing.T) {
	addr := startMachine(t, "m")
	c := h1Client(t)
	rep := getReport(t, c, newRequest(t, http.MethodGet, "http://"+addr+"/status/418", nil), "m", 418)
	if rep.Path != "/status/418" {
		t.Errorf("path = %q", rep.Path)
	}
	getReport(t, c, newRequest(t, http.MethodGet, "http://"+addr+"/status/103", nil), "m", http.StatusOK)

	for _, bad := range []string{"99", "600", "abc", "0200", "101"} {
		resp, err := c.Do(newRequest(t, http.MethodGet, "http://"+addr+"/status/"+bad, nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/status/%s: status = %d, want 400", bad, resp.StatusCode)
		}
	}

	resp, err := c.Do(newRequest(t, http.MethodGet, "http://"+addr+"/status/204", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusNoContent || len(b) != 0 {
		t.Errorf("/status/204: %d with %d body bytes", resp.StatusCode, len(b))
	}
}

func TestSleep(t *testing.T) {
	addr := startMachine(t, "m")
	c := h1Client(t)
	rep := getReport(t, c, newRequest(t, http.MethodPut, "http://"+addr+"/sleep?d=10ms", strings.NewReader("abc")), "m", http.StatusOK)
	if rep.BodyBytes != 3 {
		t.Errorf("body_bytes = %d, want 3", rep.BodyBytes)
	}
	resp, err := c.Do(newRequest(t, http.MethodGet, "http://"+addr+"/sleep?d=soon", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad duration: status = %d, want 400", resp.StatusCode)
	}
}

func TestStreamIsIncremental(t *testing.T) {
	addr := startMachine(t, "m")
	for name, c := range map[string]*http.Client{"h1": h1Client(t), "h2c": h2cClient(t)} {
		t.Run(name, func(t *testing.T) {
			// With a 10s pause before the second chunk, the first one can only arrive before
			// the deadline if the machine flushes it on its own.
			ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stream?n=2&interval=10s", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Header.Get("Demo-Machine-Id") != "m" {
				t.Errorf("missing Demo-Machine-Id")
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || line != "chunk 1\n" {
				t.Fatalf("first line = %q, %v", line, err)
			}
		})
	}

	resp, err := h1Client(t).Do(newRequest(t, http.MethodGet, "http://"+addr+"/stream?n=4&interval=1ms", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if want := "chunk 1\nchunk 2\nchunk 3\nchunk 4\n"; err != nil || string(b) != want {
		t.Errorf("body = %q, %v; want %q", b, err, want)
	}
}

// TestEchoFullDuplex reads each echo before sending the next chunk, the way a gRPC
// bidirectional stream does; a half-duplex echo would deadlock here.
func TestEchoFullDuplex(t *testing.T) {
	addr := startMachine(t, "m")
	for name, c := range map[string]*http.Client{"h1": h1Client(t), "h2c": h2cClient(t)} {
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			resp, err := c.Do(newRequest(t, http.MethodPost, "http://"+addr+"/echo", pr))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("Content-Type = %q", ct)
			}
			for _, msg := range []string{"ping-1", "a second, longer message"} {
				if _, err := io.WriteString(pw, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
					t.Fatalf("echo = %q, %v; want %q", got, err, msg)
				}
			}
			pw.Close()
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Errorf("after end of body: %q, %v", rest, err)
			}
		})
	}
}

// proxyClient writes hdr on every new connection before the client speaks HTTP, as the proxy's
// proxy_proto handler does.
func proxyClient(t *testing.T, hdr *proxyproto.Header, h2c bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if _, err := hdr.WriteTo(c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestProxyHeaderReported(t *testing.T) {
	addr := startMachine(t, "m")
	v4 := &proxyproto.Header{
		Command:           proxyproto.PROXY,
		TransportProtocol: proxyproto.TCPv4,
		SourceAddr:        &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 41000},
		DestinationAddr:   &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 443},
	}
	v6 := &proxyproto.Header{
		Command:           proxyproto.PROXY,
		TransportProtocol: proxyproto.TCPv6,
		SourceAddr:        &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 41000},
		DestinationAddr:   &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 80},
	}
	tests := []struct {
		name    string
		version byte
		hdr     *proxyproto.Header
		h2c     bool
		want    ProxyReport
	}{
		{"v1", 1, v4, false, ProxyReport{1, "203.0.113.7:41000", "10.0.0.1:443"}},
		{"v2", 2, v4, false, ProxyReport{2, "203.0.113.7:41000", "10.0.0.1:443"}},
		{"v1 ipv6", 1, v6, false, ProxyReport{1, "[2001:db8::7]:41000", "[2001:db8::1]:80"}},
		{"v2 h2c", 2, v6, true, ProxyReport{2, "[2001:db8::7]:41000", "[2001:db8::1]:80"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := *tt.hdr
			hdr.Version = tt.version
			rep := getReport(t, proxyClient(t, &hdr, tt.h2c), newRequest(t, http.MethodGet, "http://"+addr+"/", nil), "m", http.StatusOK)
			if rep.Proxy == nil || *rep.Proxy != tt.want {
				t.Errorf("proxy = %+v, want %+v", rep.Proxy, tt.want)
			}
		})
	}
}

func TestReplayAnswer(t *testing.T) {
	addr := startMachine(t, "m")
	resp, err := http.Get("http://" + addr + "/replay?to=instance%3Dm2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Fly-Replay"); got != "instance=m2" {
		t.Errorf("Fly-Replay %q, want instance=m2", got)
	}
}
