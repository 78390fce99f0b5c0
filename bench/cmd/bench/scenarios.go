package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	serverName = "bench.local"
	// rsaServerName asks a proxy for the RSA-2048 certificate (SNI and
	// Host), on the same listener as the default ECDSA one.
	rsaServerName = "rsa.bench.local"
	mib           = 1 << 20
)

// scenario is one workload, run against each proxy in turn.
type scenario struct {
	Name  string // key in the CSV
	Title string
	Short string // label in the chart
	// Unit of the headline figure: CPU seconds per 10k requests (or
	// handshakes), per GB, or RSS KiB per idle connection.
	Unit      string
	ByteUnit  bool     // throughput in bytes/s, CPU per GB (1e9 bytes)
	Idle      bool     // an idle-connection memory scenario
	Only      []string // proxies it applies to (nil: all)
	CompareTo string   // ratios against the peers' figures of this scenario
	Cert      string   // the key of the certificate the client must be served (client handshake)
	Note      string   // shown in the doc
	// argv builds the load generator's command line for a run of d;
	// measure is false for the warm-up. logFile is for h2load.
	argv func(e *env, d time.Duration, measure bool, logFile string) []string
	kind string // "wrk", "h2load" or "client"
	// launch, if set, starts edgeproxy for this scenario instead of its
	// usual command (the backhaul scenario runs an edge and a worker).
	launch func(e *env) (args, env []string)
}

func (s *scenario) appliesTo(proxy string) bool {
	if len(s.Only) == 0 {
		return true
	}
	for _, p := range s.Only {
		if p == proxy {
			return true
		}
	}
	return false
}

func wrkDur(d time.Duration) string {
	return fmt.Sprintf("%ds", max(1, int(math.Ceil(d.Seconds()))))
}

func h2Dur(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func scenarios() []*scenario {
	wrk := func(conns int, url func(p ports) string) func(*env, time.Duration, bool, string) []string {
		return func(e *env, d time.Duration, measure bool, _ string) []string {
			a := []string{"wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + wrkDur(d)}
			if measure {
				a = append(a, "--latency")
			}
			return append(a, url(e.ports))
		}
	}
	// The handshake scenarios differ only in the group offered and the
	// certificate asked for.
	handshake := func(sni, group string) func(*env, time.Duration, bool, string) []string {
		return func(e *env, d time.Duration, _ bool, _ string) []string {
			return []string{e.clientBin, "handshake", "-addr", fmt.Sprintf("127.0.0.1:%d", e.ports.HTTPS),
				"-sni", sni, "-group", group, "-c", "16", "-rate", strconv.Itoa(e.hsRate), "-d", d.String()}
		}
	}
	// The idle scenarios differ in the port and in how the connection is
	// opened (mode: the client's -group or -plain flags).
	idle := func(port func(p ports) int, mode ...string) func(*env, time.Duration, bool, string) []string {
		return func(e *env, _ time.Duration, _ bool, _ string) []string {
			a := append([]string{e.clientBin, "idle", "-addr", fmt.Sprintf("127.0.0.1:%d", port(e.ports)), "-sni", serverName}, mode...)
			return append(a, "-n", strconv.Itoa(e.idleConns), "-c", "64", "-d", "150s", "-hold", "150s")
		}
	}
	return []*scenario{
		{
			Name: "http1", Short: "HTTP/1.1 keep-alive, 100 B", Title: "HTTP/1.1 keep-alive, 100-byte responses", Unit: "CPU s / 10k req",
			kind: "wrk",
			argv: wrk(64, func(p ports) string { return fmt.Sprintf("http://127.0.0.1:%d/small", p.HTTP) }),
		},
		{
			Name: "http1-backhaul", Short: "HTTP/1.1 via a worker, 100 B", Title: "HTTP/1.1 keep-alive, 100-byte responses, edge → worker → machine", Unit: "CPU s / 10k req",
			kind: "wrk", Only: []string{"edgeproxy"}, CompareTo: "http1",
			Note:   "as http1, but the origin is a machine a worker runs: edgeproxy is two processes on the proxy's core, an edge (role edge) that relays each request over the backhaul (mutual TLS, HTTP/2) and a worker (role worker, running the fleet's NATS) that forwards it to the origin; the CPU and memory are both processes'. Against edgeproxy's own http1 row it is the cost of the extra hop; its ratios compare it with the peers' http1",
			argv:   wrk(64, func(p ports) string { return fmt.Sprintf("http://127.0.0.1:%d/small", p.HTTP) }),
			launch: backhaulLaunch,
		},
		{
			Name: "https1", Short: "HTTP/1.1 over TLS keep-alive, 100 B", Title: "HTTP/1.1 over TLS 1.3 keep-alive, 100-byte responses", Unit: "CPU s / 10k req",
			kind: "wrk",
			argv: wrk(64, func(p ports) string { return fmt.Sprintf("https://127.0.0.1:%d/small", p.HTTPS) }),
		},
		{
			Name: "handshake", Short: "Full TLS handshakes (X25519)", Title: "Full TLS 1.3 handshakes (X25519, ECDSA P-256) at a fixed rate, one request each", Unit: "CPU s / 10k handshakes",
			kind: "client", Cert: "ECDSA P-256",
			Note: "the suite's client: a new tls.Config per connection, session tickets disabled, no session cache; X25519 is the only group offered; the same rate for every proxy, below what the slowest sustains, so that CPU per handshake is compared at the same load",
			argv: handshake(serverName, "x25519"),
		},
		{
			Name: "handshake-pq", Short: "Handshakes: edgeproxy PQ vs peers X25519", Title: "Full TLS 1.3 handshakes, X25519MLKEM768 (edgeproxy only), same rate", Unit: "CPU s / 10k handshakes",
			kind: "client", Only: []string{"edgeproxy"}, CompareTo: "handshake", Cert: "ECDSA P-256",
			Note: "the peers' OpenSSL 3.0 has no ML-KEM, so this is edgeproxy alone; its ratios compare it with the peers' X25519 handshakes",
			argv: handshake(serverName, "x25519mlkem768"),
		},
		{
			Name: "handshake-rsa", Short: "Full TLS handshakes (X25519, RSA-2048)", Title: "Full TLS 1.3 handshakes (X25519, RSA-2048) at the same rate, one request each", Unit: "CPU s / 10k handshakes",
			kind: "client", Cert: "RSA-2048",
			Note: "as handshake, but the client asks for " + rsaServerName + ", for which every proxy serves an RSA-2048 certificate on the same listener: the signature each handshake costs the proxy is RSA-PSS instead of ECDSA",
			argv: handshake(rsaServerName, "x25519"),
		},
		{
			Name: "h2", Short: "HTTP/2 over TLS, 100 B", Title: "HTTP/2 over TLS 1.3, 100-byte responses", Unit: "CPU s / 10k req",
			kind: "h2load",
			argv: func(e *env, d time.Duration, measure bool, logFile string) []string {
				a := []string{"h2load", "-t1", "-c16", "-m10", "-D", h2Dur(d)}
				if measure {
					a = append(a, "--log-file="+logFile)
				}
				return append(a, fmt.Sprintf("https://127.0.0.1:%d/small", e.ports.HTTPS))
			},
		},
		{
			Name: "http1-1mib", Short: "HTTP/1.1 keep-alive, 1 MiB", Title: "HTTP/1.1 keep-alive, 1 MiB responses", Unit: "CPU s / GB", ByteUnit: true,
			kind: "wrk",
			argv: wrk(8, func(p ports) string { return fmt.Sprintf("http://127.0.0.1:%d/large", p.HTTP) }),
		},
		{
			Name: "http1-1mib-64k", Short: "HTTP/1.1 1 MiB, 64 conns, 64 KiB reads", Title: "HTTP/1.1 keep-alive, 1 MiB responses, 64 connections reading 64 KiB at a time", Unit: "CPU s / GB", ByteUnit: true,
			kind: "client",
			Note: "the suite's client on 64 connections, reading each body 64 KiB at a time: a faster reader than wrk (8 KiB reads), which leaves the proxy the bottleneck",
			argv: func(e *env, d time.Duration, _ bool, _ string) []string {
				return []string{e.clientBin, "get", "-addr", fmt.Sprintf("127.0.0.1:%d", e.ports.HTTP), "-sni", serverName,
					"-path", "/large", "-c", "64", "-read", strconv.Itoa(64 << 10), "-d", d.String()}
			},
		},
		{
			Name: "http1-gzip", Short: "HTTP/1.1 gzip, 64 KiB HTML", Title: "HTTP/1.1 keep-alive, 64 KiB HTML responses compressed with gzip by the proxy", Unit: "CPU s / 10k req",
			kind: "wrk",
			Note: "the client asks for gzip; the origin sends 64 KiB of uncompressed HTML-like text (about 4:1 under gzip); edgeproxy (http_options.compress) and nginx compress at gzip level 5, HAProxy with its built-in one-level compressor. 10k requests are 655 MB before compression, so CPU ms per MB compressed is this figure × 1.53",
			argv: func(e *env, d time.Duration, measure bool, _ string) []string {
				a := []string{"wrk", "-t1", "-c16", "-d" + wrkDur(d), "-H", "Accept-Encoding: gzip"}
				if measure {
					a = append(a, "--latency")
				}
				return append(a, fmt.Sprintf("http://127.0.0.1:%d/text", e.ports.HTTP))
			},
		},
		{
			Name: "tcp-stream", Short: "Raw TCP streaming", Title: "Raw TCP streaming, 1 MiB per round trip", Unit: "CPU s / GB", ByteUnit: true,
			kind: "client",
			Note: "the suite's client asks the origin's tcp-source for 1 MiB at a time on 8 connections",
			argv: func(e *env, d time.Duration, _ bool, _ string) []string {
				return []string{e.clientBin, "stream", "-addr", fmt.Sprintf("127.0.0.1:%d", e.ports.TCP),
					"-c", "8", "-chunk", strconv.Itoa(mib), "-d", d.String()}
			},
		},
		{
			Name: "idle-tls", Short: "Idle TLS connections (memory)", Title: "Idle TLS keep-alive connections: memory", Unit: "KiB RSS / idle conn",
			kind: "client", Idle: true,
			Note: "each connection: full handshake (X25519), one request, then idle; RSS of the proxy (all its processes) with the connections open, minus its RSS before, divided by the connections",
			argv: idle(func(p ports) int { return p.HTTPS }, "-group", "x25519"),
		},
		{
			Name: "idle-http", Short: "Idle HTTP/1.1 connections (memory)", Title: "Idle plain HTTP/1.1 keep-alive connections: memory", Unit: "KiB RSS / idle conn",
			kind: "client", Idle: true,
			Note: "as idle-tls, but plain HTTP/1.1 on the HTTP port: each connection sends one request, reads the answer, then stays idle; the difference from idle-tls is what the TLS state of a connection costs",
			argv: idle(func(p ports) int { return p.HTTP }, "-plain"),
		},
	}
}

// scenarioNames lists the scenarios in the order they run, for -h.
func scenarioNames() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.Name)
	}
	return names
}

// clientResult mirrors bench/client's JSON.
type clientResult struct {
	Mode       string           `json:"mode"`
	Ops        int64            `json:"ops"`
	Errors     int64            `json:"errors"`
	Bytes      int64            `json:"bytes"`
	Seconds    float64          `json:"seconds"`
	OpsPerSec  float64          `json:"ops_per_sec"`
	BytesSec   float64          `json:"bytes_per_sec"`
	P50us      float64          `json:"p50_us"`
	P99us      float64          `json:"p99_us"`
	Group      string           `json:"group"`
	Version    string           `json:"tls_version"`
	Cert       string           `json:"cert"`
	Resumed    int64            `json:"resumed"`
	FirstErr   string           `json:"first_error"`
	ErrorKinds map[string]int64 `json:"error_kinds"`
}

func parseClient(out []byte) (clientResult, loadStats, error) {
	var r clientResult
	line := bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, loadStats{}, fmt.Errorf("client output %q: %w", out, err)
	}
	return r, loadStats{
		Ops: r.Ops, Bytes: r.Bytes, Seconds: r.Seconds, Rate: r.OpsPerSec,
		P50us: r.P50us, P99us: r.P99us, Errors: r.Errors,
	}, nil
}

// generate runs the load generator once, pinned to the generator core,
// and returns what it measured and its own CPU seconds.
func (e *env) generate(sc *scenario, d time.Duration, measure bool) (loadStats, float64, string, error) {
	logFile := filepath.Join(e.dir, "h2load.log")
	os.Remove(logFile)
	argv := sc.argv(e, d, measure, logFile)
	var stdout, stderr bytes.Buffer
	p, err := startProc(argv[0], e.genCore, []string{"GOMAXPROCS=1"}, nil, &stdout, &stderr, argv...)
	if err != nil {
		return loadStats{}, nan, "", err
	}
	select {
	case <-p.done:
	case <-time.After(d + 60*time.Second):
		p.stop(time.Second)
		return loadStats{}, nan, "", fmt.Errorf("%s did not finish within %v", argv[0], d+60*time.Second)
	}
	p.stop(0) // reap and unregister
	cpu := p.cpuSeconds()
	if p.err != nil {
		return loadStats{}, cpu, "", fmt.Errorf("%s: %v\n%s%s", strings.Join(argv, " "), p.err, stdout.String(), stderr.String())
	}
	var ls loadStats
	note := ""
	switch sc.kind {
	case "wrk":
		if !measure {
			return ls, cpu, "", nil
		}
		ls, err = parseWrk(stdout.String())
		if err == nil && sc.ByteUnit {
			ls.Bytes = ls.Ops * mib
		}
	case "h2load":
		ls, err = parseH2load(stdout.String())
		if err == nil && measure {
			f, ferr := os.Open(logFile)
			if ferr != nil {
				return ls, cpu, "", ferr
			}
			ls.P50us, ls.P99us, _, err = parseH2loadLog(f)
			f.Close()
			os.Remove(logFile)
		}
	case "client":
		var cr clientResult
		cr, ls, err = parseClient(stdout.Bytes())
		if err == nil {
			switch {
			case cr.Resumed > 0:
				err = fmt.Errorf("%d handshakes resumed a session: the handshake client is broken", cr.Resumed)
			case sc.Cert != "" && cr.Ops > 0 && cr.Cert != sc.Cert:
				// A proxy that fell back to its default certificate would
				// be measured doing the other scenario's handshake.
				err = fmt.Errorf("the proxy served a certificate with a %s key, want %s", cr.Cert, sc.Cert)
			}
			if len(cr.ErrorKinds) > 0 {
				var kinds []string
				for k, n := range cr.ErrorKinds {
					kinds = append(kinds, fmt.Sprintf("%d× %s", n, k))
				}
				sort.Strings(kinds)
				note = "errors: " + strings.Join(kinds, ", ")
			}
			if cr.Group != "" {
				neg := "negotiated " + cr.Version + " " + cr.Group
				if cr.Cert != "" {
					neg += ", " + cr.Cert + " certificate"
				}
				note = joinNote(note, neg)
			}
		}
	}
	if err != nil {
		return ls, cpu, note, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if measure && ls.Ops == 0 {
		return ls, cpu, note, fmt.Errorf("%s: no successful operation\n%s%s", strings.Join(argv, " "), stdout.String(), stderr.String())
	}
	return ls, cpu, note, nil
}

// runIdle opens the idle connections and measures the proxy's memory.
func (e *env) runIdle(sc *scenario, pp *proc, r *row) error {
	time.Sleep(500 * time.Millisecond)
	base, _ := treeMem(pp.pid())
	argv := sc.argv(e, 0, true, "")
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer stdinW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		return err
	}
	defer outR.Close()
	var stderr bytes.Buffer
	before := e.snapshot(pp)
	p, err := startProc("client idle", e.genCore, []string{"GOMAXPROCS=1"}, stdinR, outW, &stderr, argv...)
	stdinR.Close()
	outW.Close()
	if err != nil {
		return err
	}
	defer p.stop(2 * time.Second)
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(outR).ReadString('\n')
		lines <- l
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(180 * time.Second):
		return fmt.Errorf("idle client: no result after 180s\n%s", stderr.String())
	case <-p.done:
		select {
		case line = <-lines:
		default:
		}
	}
	cr, ls, err := parseClient([]byte(line))
	if err != nil {
		return fmt.Errorf("%w\n%s", err, stderr.String())
	}
	// CPU and core figures cover the opening of the connections. The
	// client is still running, so its CPU is read from /proc.
	after := e.snapshot(pp)
	genCPU := treeCPU(p.pid())
	time.Sleep(e.settle)
	rss, hwm := treeMem(pp.pid())
	stdinW.Close()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("%d of %d connections still open", cr.Ops, cr.Ops)) {
		r.Note = joinNote(r.Note, "not every connection stayed open: "+strings.TrimSpace(stderr.String()))
	}
	e.fill(r, sc, ls, before, after, genCPU)
	r.Conns = cr.Ops
	r.BaseRSSKiB, r.IdleRSSKiB, r.PeakRSSKiB = base, rss, hwm
	if cr.Ops > 0 {
		r.RSSPerConnKiB = float64(rss-base) / float64(cr.Ops)
	}
	if cr.Ops < int64(e.idleConns) {
		r.Note = joinNote(r.Note, fmt.Sprintf("only %d of %d connections opened (%s)", cr.Ops, e.idleConns, cr.FirstErr))
	}
	return nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
