package httpproxy

import (
	"crypto/tls"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/route"
)

func TestCheckMethod(t *testing.T) {
	for m, want := range map[string]perr.Code{
		"GET": "", "PROPFIND": "", "M-SEARCH": "", "BREW": "",
		"GET X": perr.InvalidMethod, "": perr.InvalidMethod, "GET\t": perr.InvalidMethod, "GÉT": perr.InvalidMethod,
		"CONNECT": perr.ConnectUnsupported,
	} {
		err := checkMethod([]byte(m))
		pe, _ := perr.As(err)
		switch {
		case want == "" && err != nil:
			t.Errorf("checkMethod(%q) = %v, want nil", m, err)
		case want != "" && (pe == nil || pe.Code != want):
			t.Errorf("checkMethod(%q) = %v, want %s", m, err, want)
		}
	}
}

func TestUnderscoreSpoofsDropped(t *testing.T) {
	var left []string
	for _, k := range []string{"Fly_client_ip", "X-forwarded_for", "X_real_ip", "Fly_request_id", "Transfer_Encoding",
		"My_header", "X-Real-Ip", "Accept", "Fly_client_ip_x"} {
		if roleOf([]byte(k)) == keepField {
			left = append(left, k)
		}
	}
	slices.Sort(left)
	// Names that only look alike pass, and so does the dash spelling of
	// a name the client may send itself.
	if want := []string{"Accept", "Fly_client_ip_x", "My_header", "X-Real-Ip"}; !slices.Equal(left, want) {
		t.Errorf("kept %q, want %q", left, want)
	}
}

func TestKeepTarget(t *testing.T) {
	for target, want := range map[string]string{
		"/a#b":           "/a#b",
		"/a%2Fb?x=1":     "/a%2Fb?x=1",
		"/{x}|y?q=%zz;z": "/{x}|y?q=%zz;z",
		"/plain?b=2&a=1": "/plain?b=2&a=1",
		"*":              "*",
	} {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%q: %v", target, err)
		}
		u.RawQuery = ""
		keepTarget(u, target)
		u.Scheme, u.Host = "http", "10.0.0.1:8080"
		if got := u.RequestURI(); got != want {
			t.Errorf("%q goes as %q, want %q", target, got, want)
		}
	}
}

// twoApps is a shared TLS port with apps a (a.test) and b (b.test);
// b's TLS settings are bTLS.
func twoApps(bTLS catalog.TLSOptions) (*route.Port, *catalog.Port, *catalog.Port) {
	mk := func(name string, opts catalog.TLSOptions) *catalog.Port {
		app := &catalog.App{Name: name, Hostnames: []string{name + ".test"}}
		svc := &catalog.Service{App: app}
		p := &catalog.Port{Service: svc, Lo: 443, Hi: 443, Handlers: catalog.Handlers{TLS: true, HTTP: true}, TLS: opts}
		svc.Ports = []*catalog.Port{p}
		app.Services = []*catalog.Service{svc}
		return p
	}
	base := catalog.TLSOptions{ALPN: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	a, b := mk("a", base), mk("b", bTLS)
	table := route.Build(&catalog.Snapshot{Apps: []*catalog.App{a.Service.App, b.Service.App}})
	return table.Port(443), a, b
}

func TestMisdirected(t *testing.T) {
	same := catalog.TLSOptions{ALPN: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	strict := same
	strict.MinVersion = tls.VersionTLS13
	covers := func(names ...string) func(string) bool {
		return func(h string) bool { return slices.Contains(names, h) }
	}
	for _, tc := range []struct {
		name   string
		bTLS   catalog.TLSOptions
		tls    bool
		covers func(string) bool
		host   string
		want   bool
	}{
		{"own app", strict, true, nil, "a.test", false},
		{"own app, port and case", strict, true, nil, "A.test:443", false},
		{"other app, plain http", strict, false, nil, "b.test", false},
		{"other app, stricter TLS", strict, true, covers("a.test", "b.test"), "b.test", true},
		{"other app, same TLS, certificate unknown", same, true, nil, "b.test", true},
		{"other app, same TLS, certificate not covering", same, true, covers("a.test"), "b.test", true},
		{"other app, same TLS, certificate covering", same, true, covers("a.test", "b.test"), "B.test.", false},
	} {
		port, a, b := twoApps(tc.bTLS)
		c := &Conn{Port: port, TLS: tc.tls, CertCovers: tc.covers}
		if tc.tls {
			c.SNI, c.SNIEntry = "a.test", a
		}
		entry := c.route(port, tc.host)
		if want := map[bool]*catalog.Port{true: b, false: a}[strings.HasPrefix(strings.ToLower(tc.host), "b")]; entry != want {
			t.Fatalf("%s: routed to %v", tc.name, entry.Service.App.Name)
		}
		if got := c.misdirected(port, tc.host, entry); got != tc.want {
			t.Errorf("%s: misdirected = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDefaultHost(t *testing.T) {
	app := &catalog.App{Name: "x", Hostnames: []string{"*.wild.test", "x.test"}}
	entry := &catalog.Port{Service: &catalog.Service{App: app}}
	local := netip.MustParseAddrPort("[::ffff:192.0.2.1]:80")
	for _, tc := range []struct {
		name  string
		sni   string
		hosts []string
		tls   bool
		local netip.AddrPort
		want  string
	}{
		{"server name", "sni.test", app.Hostnames, true, local, "sni.test"},
		{"first exact hostname", "", app.Hostnames, false, local, "x.test"},
		{"address connected to", "", nil, false, local, "192.0.2.1"},
		{"address with its port", "", nil, true, local, "192.0.2.1:80"},
		{"IPv6 address", "", nil, false, netip.MustParseAddrPort("[2001:db8::1]:80"), "[2001:db8::1]"},
	} {
		app.Hostnames = tc.hosts
		x := &Exchange{Conn: &Conn{SNI: tc.sni, TLS: tc.tls, Local: tc.local}}
		x.target.entry = entry
		if got := defaultHost(x); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestGRPCError(t *testing.T) {
	var req h1.Head
	raw := "POST /pkg.Svc/Call HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc+proto\r\n\r\n"
	if _, err := h1.ParseRequest([]byte(raw), &req, h1.Limits{}); err != nil {
		t.Fatal(err)
	}
	ct, ok := grpcContentType(&req)
	if !ok || ct != "application/grpc+proto" {
		t.Fatalf("content type %q, %v", ct, ok)
	}
	fields := string(appendGRPCError(nil, ct, perr.New(perr.AppConnLimit, nil), false))
	for _, want := range []string{"Content-Type: application/grpc+proto\r\n", "Grpc-Status: 8\r\n",
		"Grpc-Message: PL01: app connection limit reached\r\n"} {
		if !strings.Contains(fields, want) {
			t.Errorf("fields %q lack %q", fields, want)
		}
	}
	if got := grpcPercentEncode("50% é\n"); got != "50%25 %C3%A9%0A" {
		t.Errorf("percent-encoding: %q", got)
	}
}
