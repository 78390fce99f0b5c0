package main

import (
	"crypto/rsa"
	"crypto/tls"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const wrkOut = `Running 10s test @ http://127.0.0.1:18110/small
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   680.49us  139.98us   5.24ms   85.52%
    Req/Sec    94.23k     3.45k  100.12k    71.00%
  Latency Distribution
     50%  651.00us
     75%  730.00us
     90%  830.00us
     99%    1.12ms
  937683 requests in 10.00s, 183.55MB read
Requests/sec:  93768.30
Transfer/sec:     18.35MB
`

func TestParseWrk(t *testing.T) {
	s, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ops != 937683 || s.Seconds != 10 || s.Rate != 93768.30 || s.Errors != 0 {
		t.Errorf("got %+v", s)
	}
	if s.P50us != 651 || s.P99us != 1120 {
		t.Errorf("p50 %v p99 %v, want 651 and 1120", s.P50us, s.P99us)
	}
}

func TestParseWrkErrors(t *testing.T) {
	out := strings.Replace(wrkOut, "Requests/sec", "  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 683\nRequests/sec", 1)
	s, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if s.Errors != 688 || s.Ops != 937000 || s.Rate != 93700 {
		t.Errorf("errors %d ops %d rate %v, want 688, 937000, 93700", s.Errors, s.Ops, s.Rate)
	}
	// Every request failed: an error, not a figure.
	failed := "Running 3s test @ https://127.0.0.1:18111/small\n  1 threads and 64 connections\n  0 requests in 3.00s, 0.00B read\n  Socket errors: connect 64, read 0, write 0, timeout 0\nRequests/sec:      0.00\n"
	if _, err := parseWrk(failed); err == nil {
		t.Error("no error for a run without a successful request")
	}
	// Minutes and seconds as units.
	slow := strings.NewReplacer("1.12ms", "1.50s", "10.00s,", "1.00m,").Replace(wrkOut)
	s, err = parseWrk(slow)
	if err != nil {
		t.Fatal(err)
	}
	if s.P99us != 1.5e6 || s.Seconds != 60 {
		t.Errorf("p99 %v seconds %v", s.P99us, s.Seconds)
	}
}

const h2Out = `starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 10s of main duration for measurements.
Application protocol: h2
finished in 10.00s, 51234.50 req/s, 6.12MB/s
requests: 512345 total, 512361 started, 512345 done, 512340 succeeded, 5 failed, 0 errored, 0 timeout
status codes: 512340 2xx, 0 3xx, 2 4xx, 0 5xx
traffic: 61.16MB (64130148) total, 1.47MB (1537035) headers (space savings 95.50%), 48.86MB (51234000) data
                     min         max         mean         sd        +/- sd
time for request:      123us     12.34ms       456us       78us    89.00%
`

func TestParseH2load(t *testing.T) {
	s, err := parseH2load(h2Out)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ops != 512340 || s.Errors != 7 || s.Rate != 51234.50 || s.Seconds != 10 {
		t.Errorf("got %+v", s)
	}
	if _, err := parseH2load("nothing"); err == nil {
		t.Error("no error on garbage")
	}
}

func TestParseH2loadLog(t *testing.T) {
	var sb strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&sb, "1700000000000000\t200\t%d\n", i*10)
	}
	sb.WriteString("1700000000000000\t-1\t999999\n") // a failed stream is not counted
	p50, p99, n, err := parseH2loadLog(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n != 100 || p50 != 500 || p99 != 990 {
		t.Errorf("n %d p50 %v p99 %v, want 100, 500, 990", n, p50, p99)
	}
	if _, _, _, err := parseH2loadLog(io.LimitReader(strings.NewReader(""), 0)); err == nil {
		t.Error("no error for an empty log")
	}
}

func TestProcParsers(t *testing.T) {
	stat := "1234 (nginx: worker (x)) S 1200 1200 1200 0 -1 4194624 500 0 0 0 250 75 0 0 20 0 1 0 100 1000000 500 18446744073709551615"
	f, err := procStatFields(stat)
	if err != nil {
		t.Fatal(err)
	}
	if f[1] != "1200" || f[11] != "250" || f[12] != "75" {
		t.Errorf("ppid %s utime %s stime %s", f[1], f[11], f[12])
	}
	rss, hwm := parseStatusKiB("Name:\tnginx\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n")
	if rss != 30720 || hwm != 40960 {
		t.Errorf("rss %d hwm %d", rss, hwm)
	}
	a, ac, err := parseProcStat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 80 0 20 400 0 0 0 0 0 0\ncpu1 20 0 30 400 50 0 0 0 0 0\nintr 1\n")
	if err != nil {
		t.Fatal(err)
	}
	b, bc, _ := parseProcStat("cpu  200 0 100 850 50 0 0 0 0 0\ncpu0 175 0 20 405 0 0 0 0 0 0\ncpu1 25 0 80 445 50 0 0 0 0 0\n")
	if got := busyPct(ac[0], bc[0]); got != 95 {
		t.Errorf("core 0 busy %v, want 95", got)
	}
	if got := busyPct(ac[1], bc[1]); got != 55 {
		t.Errorf("core 1 busy %v, want 55", got)
	}
	if got := busyPct(a, b); got != 75 {
		t.Errorf("all busy %v, want 75", got)
	}
}

func TestBottleneck(t *testing.T) {
	for _, tc := range []struct {
		gen, proxy float64
		want       string
	}{{95, 50, "generator"}, {50, 99, "proxy"}, {95, 95, "both"}, {60, 70, "neither"}, {90, 90, "neither"}} {
		if got := bottleneck(tc.gen, tc.proxy); got != tc.want {
			t.Errorf("bottleneck(%v, %v) = %s, want %s", tc.gen, tc.proxy, got, tc.want)
		}
	}
}

func TestSummarizeAndRatio(t *testing.T) {
	s := summarize([]float64{3, 1, 2})
	if s.Med != 2 || s.Min != 1 || s.Max != 3 || s.N != 3 {
		t.Errorf("got %+v", s)
	}
	if s := summarize([]float64{4, 1, math.NaN(), 2, 3}); s.Med != 2.5 || s.N != 4 {
		t.Errorf("even count, NaN dropped: got %+v", s)
	}
	if s := summarize(nil); !math.IsNaN(s.Med) || s.N != 0 {
		t.Errorf("empty: got %+v", s)
	}
	if r := ratio(1.5, 0.5); r != 3 {
		t.Errorf("ratio %v", r)
	}
	if !math.IsNaN(ratio(1, 0)) || !math.IsNaN(ratio(math.NaN(), 1)) {
		t.Error("ratio of a missing figure should be NaN")
	}
	if got := fspread(spread{Med: 0.2, Min: 0.15, Max: 0.25, N: 3}, 1); got != "0.200 (0.150–0.250)" {
		t.Errorf("fspread = %q", got)
	}
	if got := mostCommon([]string{"proxy", "generator", "generator"}); got != "generator" {
		t.Errorf("mostCommon = %q", got)
	}
}

func TestRenderChart(t *testing.T) {
	svg := renderChart("title <&>", "sub", []chartRow{
		{Label: "HTTP/1.1", VsNginx: 3.9, VsHAP: 4.2, Unit: "CPU s / 10k req"},
		{Label: "idle", VsNginx: 0.8, VsHAP: math.NaN(), Unit: "KiB"},
	})
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"3.90×", "4.20×", "0.80×", "n/a", "parity", "title &lt;&amp;&gt;"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	// Bars scale: the 4.2 bar is longer than the 3.9 bar.
	if !strings.Contains(svg, "stroke-dasharray") {
		t.Error("no parity line")
	}
}

func TestSpliceGenerated(t *testing.T) {
	doc, err := spliceGenerated("", "gen 1\n")
	if err != nil || !strings.HasPrefix(doc, "# Performance") || !strings.Contains(doc, "gen 1") {
		t.Fatalf("new doc: %v\n%s", err, doc)
	}
	hand := strings.Replace(doc, "# Performance", "# Performance\n\nHand-written notes.", 1) + "\nFooter.\n"
	doc2, err := spliceGenerated(hand, "gen 2\n")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(doc2, "gen 1") || !strings.Contains(doc2, "gen 2") ||
		!strings.Contains(doc2, "Hand-written notes.") || !strings.HasSuffix(doc2, "Footer.\n") {
		t.Errorf("splice lost something:\n%s", doc2)
	}
	if _, err := spliceGenerated("x\n"+endMarker+"\n"+beginMarker+"\n", "g"); err == nil {
		t.Error("no error for markers in the wrong order")
	}
	doc3, _ := spliceGenerated("# Mine\n", "g\n")
	if !strings.HasPrefix(doc3, "# Mine\n\n"+beginMarker) {
		t.Errorf("doc without markers: %q", doc3)
	}
}

func TestConfigsRender(t *testing.T) {
	d := configData{Ports: newPorts(18100), Dir: "/tmp/x", Cert: "/tmp/x/c.pem", Key: "/tmp/x/k.pem",
		Combined: "/tmp/x/ck.pem", RSACert: "/tmp/x/rc.pem", RSAKey: "/tmp/x/rk.pem", RSACombined: "/tmp/x/rck.pem",
		RSAServerName: rsaServerName, IdleTimeout: 60, MaxConns: 19900, NoFile: 20000, HAProxyMaxConn: 9500,
		NginxStreamModule: "/m.so", UpstreamKeepalive: 128, BufKiB: 16, ServerName: serverName,
		KeyExchange: "X25519", CipherSuite: "TLS_AES_128_GCM_SHA256", EdgeproxyAdmin: "off", RegionName: "bench"}
	for _, p := range proxyDefs() {
		cfg, err := render(p.tmpl, d)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		for _, want := range []string{"18110", "18111", "18112", "18101", "18103"} {
			if !strings.Contains(cfg, want) {
				t.Errorf("%s config lacks port %s", p.Name, want)
			}
		}
		if strings.Contains(cfg, "<no value>") {
			t.Errorf("%s config has an unset field:\n%s", p.Name, cfg)
		}
		// handshake-rsa's certificate is served on the same listener, by
		// name: nginx and edgeproxy name it, HAProxy reads the name from it.
		want := []string{"/tmp/x/rc.pem", rsaServerName}
		if p.Name == "haproxy" {
			want = []string{"crt /tmp/x/ck.pem crt /tmp/x/rck.pem"}
		}
		for _, w := range want {
			if !strings.Contains(cfg, w) {
				t.Errorf("%s config lacks %q", p.Name, w)
			}
		}
	}
}

func TestWriteRSACert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := writeRSACert(certFile, keyFile, rsaServerName); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	k, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok || k.N.BitLen() != 2048 {
		t.Fatalf("key %T, want RSA-2048", leaf.PublicKey)
	}
	if err := leaf.VerifyHostname(rsaServerName); err != nil {
		t.Error(err)
	}
	if leaf.VerifyHostname(serverName) == nil {
		t.Errorf("the RSA certificate also covers %s: SNI would not tell the certificates apart", serverName)
	}
	if checkP256(certFile) == nil {
		t.Error("checkP256 accepted an RSA certificate")
	}
}

func TestScenarioArgv(t *testing.T) {
	e := &env{clientBin: "/x/client", ports: newPorts(18100), hsRate: 800, idleConns: 1000}
	want := map[string]string{
		"handshake":     "client handshake -addr 127.0.0.1:18111 -sni bench.local -group x25519 -c 16 -rate 800 -d 10s",
		"handshake-rsa": "client handshake -addr 127.0.0.1:18111 -sni rsa.bench.local -group x25519 -c 16 -rate 800 -d 10s",
		"idle-tls":      "client idle -addr 127.0.0.1:18111 -sni bench.local -group x25519 -n 1000 -c 64 -d 150s -hold 150s",
		"idle-http":     "client idle -addr 127.0.0.1:18110 -sni bench.local -plain -n 1000 -c 64 -d 150s -hold 150s",
	}
	for _, sc := range scenarios() {
		w, ok := want[sc.Name]
		if !ok {
			continue
		}
		argv := sc.argv(e, 10*time.Second, true, "")
		argv[0] = filepath.Base(argv[0])
		if got := strings.Join(argv, " "); got != w {
			t.Errorf("%s:\n got %s\nwant %s", sc.Name, got, w)
		}
		delete(want, sc.Name)
	}
	if len(want) > 0 {
		t.Errorf("scenarios missing: %v", want)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	dir := t.TempDir()
	e := &env{outDir: dir, csvName: "latest.csv", scenarios: scenarios(), proxies: proxyDefs(), root: dir}
	rows := []*row{
		{Scenario: "http1", Proxy: "edgeproxy", Run: 1, Ops: 1000, Rate: 100, CPUPerUnit: 0.7, P50ms: 1, P99ms: 2, Bottleneck: "proxy"},
		{Scenario: "http1", Proxy: "nginx", Run: 1, Ops: 1000, Rate: 300, CPUPerUnit: 0.2, Bottleneck: "generator"},
		{Scenario: "idle-tls", Proxy: "edgeproxy", Run: 1, Conns: 9000, RSSPerConnKiB: 38.5, Note: "a, b"},
		{Scenario: "idle-tls", Proxy: "nginx", Run: 1, Failed: true, Note: "FAILED: x"},
	}
	res := e.results(rows)
	if got := res.vsNginx["http1"]; math.Abs(got-3.5) > 1e-9 {
		t.Errorf("http1 edgeproxy ÷ nginx = %v, want 3.5", got)
	}
	if err := e.writeCSV(rows, res); err != nil {
		t.Fatal(err)
	}
	back, err := readRows(dir + "/latest.csv")
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(rows) {
		t.Fatalf("%d rows back, want %d", len(back), len(rows))
	}
	if b := back[2]; b.RSSPerConnKiB != 38.5 || b.Conns != 9000 || b.Note != "a, b" {
		t.Errorf("idle row back: %+v", b)
	}
	if !back[3].Failed || back[0].CPUPerUnit != 0.7 || back[1].Bottleneck != "generator" {
		t.Errorf("rows back: %+v %+v %+v", back[0], back[1], back[3])
	}
}

func TestPairedRatio(t *testing.T) {
	e := &env{scenarios: scenarios(), proxies: proxyDefs()}
	rows := []*row{
		{Scenario: "http1", Proxy: "edgeproxy", Run: 1, CPUPerUnit: 1},
		{Scenario: "http1", Proxy: "nginx", Run: 1, CPUPerUnit: 1},
		{Scenario: "http1", Proxy: "edgeproxy", Run: 2, CPUPerUnit: 4},
		{Scenario: "http1", Proxy: "nginx", Run: 2, CPUPerUnit: 2},
		{Scenario: "http1", Proxy: "haproxy", Run: 3, CPUPerUnit: 2}, // no pair: falls back to the medians
		{Scenario: "handshake", Proxy: "nginx", Run: 1, CPUPerUnit: 5},
		{Scenario: "handshake-pq", Proxy: "edgeproxy", Run: 1, CPUPerUnit: 10},
	}
	res := e.results(rows)
	if got := res.vsNginxSp["http1"]; got.Med != 1.5 || got.Min != 1 || got.Max != 2 || got.N != 2 {
		t.Errorf("paired ratio %+v, want 1.5 (1–2) of 2", got)
	}
	if got := res.vsHAPSp["http1"]; got.Med != 1.25 || got.N != 1 {
		t.Errorf("fallback ratio %+v, want 2.5/2", got)
	}
	if got := res.vsNginx["handshake-pq"]; got != 2 {
		t.Errorf("pq against the peers' X25519 handshakes: %v, want 2", got)
	}
	if got := fratioSp(res.vsNginxSp["http1"]); got != "1.50× (1.00–2.00)" {
		t.Errorf("fratioSp = %q", got)
	}
}
