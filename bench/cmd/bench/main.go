// Command bench runs edgeproxy, nginx and HAProxy one at a time in front of
// the same origin, drives the same workloads through each and writes the
// comparison: bench/results/latest.csv, docs/performance.md and
// docs/performance.svg. Start it with bench/run.sh (or `make bench`), which
// installs the peers and the load generators first.
//
// Each proxy is pinned to one core (taskset -c 1) with one worker or
// thread; the load generator and the origin share the other (taskset -c 0).
// The headline figure is the proxy's CPU time per unit of work, read from
// /proc/PID/stat, because on two cores the generator can be the limit.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

var nan = math.NaN()

type env struct {
	root, dir                    string
	edgeproxyBin, originBin      string
	clientBin                    string
	cert, key, combined          string
	rsaCert, rsaKey, rsaCombined string // handshake-rsa's certificate
	certDER, rsaCertDER          []byte // what the sanity check expects to be served
	ports                        ports
	genCore, proxyCore           int
	duration, warmup, settle     time.Duration
	runs, idleConns, maxConns    int
	nofile, haproxyMaxConn       int
	idleNote                     string
	wait                         time.Duration
	elapsed                      time.Duration
	hsRate                       int
	// built is the checkout's state when edgeproxy was built.
	built                             string
	mi                                machineInfo
	forced                            bool
	busyAtStart                       float64
	proxies                           []*proxyDef
	scenarios                         []*scenario
	origin                            *proc
	started                           time.Time
	invocation                        string
	quick                             bool
	selfCPU0                          float64
	outDir, docPath, svgPath, csvName string
}

func (e *env) proxy(name string) *proxyDef {
	for _, p := range e.proxies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// row is one measured run: one scenario, one proxy, one repeat.
type row struct {
	Scenario, Proxy string
	Run             int
	Ops, Bytes      int64
	Seconds         float64
	Rate            float64 // operations per second
	BytesPerSec     float64
	P50ms, P99ms    float64
	Errors          int64
	ProxyCPU        float64 // seconds, all of the proxy's processes
	CPUPerUnit      float64 // per 10k operations, or per GB for byte scenarios
	PeakRSSKiB      int64
	BaseRSSKiB      int64 // idle scenarios
	IdleRSSKiB      int64
	RSSPerConnKiB   float64
	Conns           int64
	GenCPU          float64
	OriginCPU       float64
	GenCorePct      float64
	ProxyCorePct    float64
	OtherCPUPct     float64 // CPU of processes not started by the bench, % of a core
	Bottleneck      string
	Forced          bool
	Note            string
	Failed          bool
}

// headline is the figure the ratios are taken of.
func (r *row) headline(sc *scenario) float64 {
	if sc.Idle {
		return r.RSSPerConnKiB
	}
	return r.CPUPerUnit
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		runs       = flag.Int("runs", 3, "repeats of each scenario and proxy")
		duration   = flag.Duration("duration", 10*time.Second, "length of each measured run")
		warmup     = flag.Duration("warmup", 2*time.Second, "load before each measured run, not measured")
		quick      = flag.Bool("quick", false, "smoke test: 3 s runs, 1 repeat, 1 s warm-up, 1,000 idle connections, results to bench/results/quick.csv, docs untouched")
		force      = flag.Bool("force", false, "run even if the machine is busy (recorded in the results)")
		wait       = flag.Duration("wait", 0, "if the machine is busy, keep checking for this long before refusing")
		idleConns  = flag.Int("idle-conns", 10000, "connections of the idle scenarios")
		hsRate     = flag.Int("handshake-rate", 600, "full TLS handshakes per second offered in the handshake scenarios (the same for every proxy)")
		proxyList  = flag.String("proxies", "edgeproxy,nginx,haproxy", "proxies to run, comma-separated")
		scenList   = flag.String("scenarios", "all", "scenarios to run, comma-separated ("+strings.Join(scenarioNames(), ",")+")")
		portBase   = flag.Int("port-base", 18100, "ports used: base+1..3 (origin), base+10..12 (proxy) and base+20..25 (the backhaul scenario's worker)")
		genCore    = flag.Int("gen-core", 0, "core for the load generator and the origin")
		proxyCore  = flag.Int("proxy-core", 1, "core for the proxy under test")
		docs       = flag.Bool("docs", true, "write docs/performance.md and docs/performance.svg (default false with -quick)")
		edgeBin    = flag.String("edgeproxy-bin", "", "use this edgeproxy binary instead of building ./cmd/edgeproxy")
		keep       = flag.Bool("keep", false, "keep the temporary directory (configs, logs)")
		invocation = flag.String("invocation", os.Getenv("BENCH_INVOCATION"), "the command line recorded in the doc")
		regen      = flag.String("regen", "", "run nothing: rewrite docs/performance.md and the chart from this CSV (and the -meta.json beside it) of an earlier run")
	)
	flag.Parse()
	if *regen != "" {
		if err := regenerate(*regen); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}
	docsSet := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "docs" {
			docsSet = true
		}
	})
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["runs"] {
			*runs = 1
		}
		if !set["duration"] {
			*duration = 3 * time.Second
		}
		if !set["warmup"] {
			*warmup = time.Second
		}
		if !set["idle-conns"] {
			*idleConns = 1000
		}
		if !docsSet {
			*docs = false
		}
	}
	if *invocation == "" {
		*invocation = "go run ./bench/cmd/bench " + strings.Join(os.Args[1:], " ")
	}
	handleSignals()
	defer stopAll()

	e := &env{
		ports: newPorts(*portBase), genCore: *genCore, proxyCore: *proxyCore,
		duration: *duration, warmup: *warmup, settle: 2 * time.Second,
		runs: *runs, idleConns: *idleConns, quick: *quick, hsRate: *hsRate,
		started: time.Now(), invocation: *invocation,
	}
	if *quick {
		e.settle = time.Second
	}
	// Between runs the bench waits at least 5 minutes for other work on
	// the machine to finish before measuring anyway (and saying so).
	e.wait = max(*wait, 5*time.Minute)
	if err := e.setup(*proxyList, *scenList, *edgeBin, *force, *wait, *keep); err != nil {
		stopAll()
		if e.dir != "" && !*keep {
			os.RemoveAll(e.dir)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if !*keep {
		defer os.RemoveAll(e.dir)
	} else {
		fmt.Printf("bench: temporary files kept in %s\n", e.dir)
	}
	e.outDir = filepath.Join(e.root, "bench", "results")
	e.csvName = "latest.csv"
	if *quick {
		e.csvName = "quick.csv"
	}
	e.docPath = filepath.Join(e.root, "docs", "performance.md")
	e.svgPath = filepath.Join(e.root, "docs", "performance.svg")

	rows := e.runAll()
	stopAll()
	e.elapsed = time.Since(e.started)
	e.mi = e.machine()

	res := e.results(rows)
	fmt.Println()
	fmt.Print(res.textTable())
	if err := e.writeCSV(rows, res); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if err := e.writeMeta(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if *docs {
		if err := e.writeDocs(res); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Printf("bench: wrote %s and %s\n", rel(e.root, e.docPath), rel(e.root, e.svgPath))
	}
	for _, r := range rows {
		if r.Failed {
			fmt.Fprintln(os.Stderr, "bench: some runs failed; see the notes in the CSV")
			return 1
		}
	}
	return 0
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}

func (e *env) setup(proxyList, scenList, edgeBin string, force bool, wait time.Duration, keep bool) error {
	initClkTck()
	root, err := findRoot()
	if err != nil {
		return err
	}
	e.root = root
	for _, name := range strings.Split(proxyList, ",") {
		name = strings.TrimSpace(name)
		var found *proxyDef
		for _, p := range proxyDefs() {
			if p.Name == name {
				found = p
			}
		}
		if found == nil {
			return fmt.Errorf("unknown proxy %q", name)
		}
		e.proxies = append(e.proxies, found)
	}
	all := scenarios()
	if scenList == "all" {
		e.scenarios = all
	} else {
		for _, name := range strings.Split(scenList, ",") {
			var found *scenario
			for _, s := range all {
				if s.Name == strings.TrimSpace(name) {
					found = s
				}
			}
			if found == nil {
				return fmt.Errorf("unknown scenario %q", name)
			}
			e.scenarios = append(e.scenarios, found)
		}
	}
	if runtime.GOOS != "linux" {
		return errors.New("the benchmark reads /proc and uses taskset: Linux only")
	}
	if n := runtime.NumCPU(); n < 2 || e.genCore >= n || e.proxyCore >= n || e.genCore == e.proxyCore {
		return fmt.Errorf("need two distinct cores (have %d; -gen-core %d, -proxy-core %d)", n, e.genCore, e.proxyCore)
	}
	tools := []string{"taskset", "wrk", "h2load", "go"}
	for _, p := range e.proxies {
		if p.Name != "edgeproxy" {
			tools = append(tools, p.Name)
		}
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (bench/run.sh installs it)", t)
		}
	}

	// Refuse to run on a busy machine or with the ports taken.
	if err := portsFree(e.ports.all()); err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		busy, err := machineBusy(time.Second)
		if err != nil {
			return err
		}
		e.busyAtStart = busy
		if busy <= 0.15 {
			break
		}
		if force {
			e.forced = true
			fmt.Printf("bench: the machine is busy (%.0f%% of a core) but -force was given; the results say so\n", busy*100)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the machine is busy: %.0f%% of a core in use by other processes over 1 s (limit 15%%); "+
				"wait for it to be idle, or give -wait 5m, or -force (recorded in the results)", busy*100)
		}
		fmt.Printf("bench: machine busy (%.0f%% of a core), checking again in 10 s\n", busy*100)
		time.Sleep(10 * time.Second)
	}

	// Each proxy needs a descriptor per client connection and per
	// upstream connection; HAProxy reserves two per connection up front.
	// Where the hard limit cannot be raised (no CAP_SYS_RESOURCE), the
	// idle scenarios open as many connections as HAProxy can take.
	e.nofile = int(min(raiseNoFile(200000), 1<<20))
	e.maxConns = e.nofile - 100
	if fit := ((e.nofile-100)/2 - 500) / 500 * 500; e.idleConns > fit {
		e.idleNote = fmt.Sprintf("%d idle connections instead of %d: the open-file limit here is %d and cannot be raised, "+
			"and HAProxy reserves two descriptors per connection", fit, e.idleConns, e.nofile)
		fmt.Println("bench:", e.idleNote)
		e.idleConns = fit
	}
	e.haproxyMaxConn = e.idleConns + 500

	e.dir, err = os.MkdirTemp("", "edgeproxy-bench-")
	if err != nil {
		return err
	}
	if !keep {
		removeOnSignal = e.dir
	}
	os.Chmod(e.dir, 0o755) // nginx's worker runs as nobody
	fmt.Printf("bench: building into %s\n", e.dir)
	// The checkout as built, not as it is when the run ends: files may be
	// edited while a long run goes on.
	e.built = e.gitState()
	e.originBin = filepath.Join(e.dir, "origin")
	e.clientBin = filepath.Join(e.dir, "client")
	builds := [][2]string{{e.originBin, "./bench/origin"}, {e.clientBin, "./bench/client"}}
	if edgeBin != "" {
		e.edgeproxyBin, _ = filepath.Abs(edgeBin)
	} else {
		e.edgeproxyBin = filepath.Join(e.dir, "edgeproxy")
		builds = append(builds, [2]string{e.edgeproxyBin, "./cmd/edgeproxy"})
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir = e.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}

	// One ECDSA P-256 certificate for every proxy, made by edgeproxy, and
	// for handshake-rsa one RSA-2048 certificate, which edgeproxy gen-cert
	// does not make. HAProxy wants each with its key in one file.
	e.cert, e.key = filepath.Join(e.dir, "cert.pem"), filepath.Join(e.dir, "key.pem")
	if err := runQuiet(e.edgeproxyBin, "gen-cert", "-cert", e.cert, "-key", e.key, serverName); err != nil {
		return err
	}
	if err := checkP256(e.cert); err != nil {
		return err
	}
	e.rsaCert, e.rsaKey = filepath.Join(e.dir, "rsa-cert.pem"), filepath.Join(e.dir, "rsa-key.pem")
	if err := writeRSACert(e.rsaCert, e.rsaKey, rsaServerName); err != nil {
		return err
	}
	e.combined, e.rsaCombined = filepath.Join(e.dir, "combined.pem"), filepath.Join(e.dir, "rsa-combined.pem")
	for _, c := range []struct {
		cert, key, combined string
		der                 *[]byte
	}{{e.cert, e.key, e.combined, &e.certDER}, {e.rsaCert, e.rsaKey, e.rsaCombined, &e.rsaCertDER}} {
		certPEM, err := os.ReadFile(c.cert)
		if err != nil {
			return err
		}
		keyPEM, err := os.ReadFile(c.key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.combined, append(certPEM, keyPEM...), 0o600); err != nil {
			return err
		}
		leaf, err := readLeaf(c.cert)
		if err != nil {
			return err
		}
		*c.der = leaf.Raw
	}
	if err := e.writeConfigs(); err != nil {
		return err
	}

	// The origin shares the generator's core.
	var originLog bytes.Buffer
	e.origin, err = startProc("origin", e.genCore, []string{"GOMAXPROCS=1"}, nil, io.Discard, &originLog,
		e.originBin, "-http", fmt.Sprintf("127.0.0.1:%d", e.ports.OriginHTTP),
		"-tcp-echo", fmt.Sprintf("127.0.0.1:%d", e.ports.OriginEcho),
		"-tcp-source", fmt.Sprintf("127.0.0.1:%d", e.ports.OriginSource))
	if err != nil {
		return err
	}
	if err := waitPorts(e.origin, []int{e.ports.OriginHTTP, e.ports.OriginEcho, e.ports.OriginSource}, 10*time.Second); err != nil {
		return fmt.Errorf("origin: %w\n%s", err, originLog.String())
	}
	e.selfCPU0 = selfCPU()
	return nil
}

func selfCPU() float64 { return treeCPUOne(os.Getpid()) }

func treeCPUOne(pid int) float64 {
	t, _, err := readProcCPUTicks(pid)
	if err != nil {
		return 0
	}
	return float64(t) / clkTck
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/edgeproxy/edgeproxy")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the edgeproxy repository")
		}
		dir = parent
	}
}

func readLeaf(certFile string) (*x509.Certificate, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", certFile)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func checkP256(certFile string) error {
	c, err := readLeaf(certFile)
	if err != nil {
		return err
	}
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("%s: want an ECDSA P-256 certificate, got %T", certFile, c.PublicKey)
	}
	return nil
}

// writeRSACert writes a self-signed RSA-2048 certificate for name alone,
// so that each proxy serves it for that name only (by SNI), and its
// PKCS#8 key, which edgeproxy, nginx and HAProxy all read.
func writeRSACert(certFile, keyFile, name string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func portsFree(ps []int) error {
	var taken []string
	for _, p := range ps {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			taken = append(taken, fmt.Sprint(p))
			continue
		}
		ln.Close()
	}
	if len(taken) > 0 {
		return fmt.Errorf("port(s) %s on 127.0.0.1 are in use: stop what holds them or choose other ports with -port-base", strings.Join(taken, ", "))
	}
	return nil
}

func waitPorts(p *proc, ps []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, port := range ps {
		for {
			if p.exited() {
				return fmt.Errorf("%s exited: %v", p.name, p.err)
			}
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: port %d not listening after %v", p.name, port, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// runAll runs every scenario: each repeat runs every proxy once, in an
// order rotated from one repeat to the next so that drift over time does
// not always favour the same proxy.
func (e *env) runAll() []*row {
	var rows []*row
	for _, sc := range e.scenarios {
		for run := 1; run <= e.runs; run++ {
			n := len(e.proxies)
			for i := range n {
				px := e.proxies[(i+run-1)%n]
				if !sc.appliesTo(px.Name) {
					continue
				}
				rows = append(rows, e.runWithRetries(sc, px, run))
			}
		}
	}
	return rows
}

// maxAttempts bounds the repeats of a run that other processes disturbed.
const maxAttempts = 3

// runWithRetries runs one scenario on one proxy, first waiting for the
// machine to be quiet, and runs it again (up to maxAttempts in all) when
// processes the bench did not start used more than 15% of a core during
// the measurement. With -force it neither waits nor repeats.
func (e *env) runWithRetries(sc *scenario, px *proxyDef, run int) *row {
	var r *row
	for attempt := 1; ; attempt++ {
		var busyNote string
		if !e.forced {
			if busy := e.waitQuiet(); busy > 0.15 {
				busyNote = fmt.Sprintf("the machine was %.0f%% of a core busy before the run, even after waiting %v", busy*100, e.wait)
			}
		}
		r = &row{Scenario: sc.Name, Proxy: px.Name, Run: run, Forced: e.forced}
		fmt.Printf("bench: %-12s %-9s run %d/%d ... ", sc.Name, px.Name, run, e.runs)
		err := e.runOne(sc, px, r)
		r.Note = joinNote(busyNote, r.Note)
		if err != nil {
			r.Failed = true
			r.Note = joinNote(r.Note, "FAILED: "+firstLine(err.Error()))
			fmt.Printf("FAILED\n%v\n", err)
			return r
		}
		fmt.Println(r.short(sc))
		erratic := r.Errors > 0 && float64(r.Errors) > 0.01*float64(r.Ops)
		if e.forced || (r.OtherCPUPct <= 15 && !erratic) || attempt == maxAttempts {
			if attempt > 1 {
				r.Note = joinNote(r.Note, fmt.Sprintf("attempt %d: the earlier ones were disturbed by other processes or had errors", attempt))
			}
			return r
		}
		if erratic {
			fmt.Printf("bench: %d errors in that run; running it again\n", r.Errors)
		} else {
			fmt.Printf("bench: other processes used %.0f%% of a core during that run; running it again\n", r.OtherCPUPct)
		}
	}
}

// waitQuiet samples the machine for half a second and, while more than
// 15% of a core is busy, waits (up to e.wait) for it to calm down. It
// returns the last busy figure, in cores.
func (e *env) waitQuiet() float64 {
	deadline := time.Now().Add(e.wait)
	for {
		busy, err := machineBusy(500 * time.Millisecond)
		if err != nil || busy <= 0.15 || time.Now().After(deadline) {
			return busy
		}
		fmt.Printf("bench: machine busy (%.0f%% of a core), waiting\n", busy*100)
		time.Sleep(5 * time.Second)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (r *row) short(sc *scenario) string {
	var tp string
	switch {
	case sc.Idle:
		return fmt.Sprintf("%d conns, %.2f KiB RSS each, peak RSS %.1f MiB, %s", r.Conns, r.RSSPerConnKiB, float64(r.PeakRSSKiB)/1024, r.Bottleneck)
	case sc.ByteUnit:
		tp = fmt.Sprintf("%.0f MB/s", r.BytesPerSec/1e6)
	default:
		tp = fmt.Sprintf("%.0f/s", r.Rate)
	}
	s := fmt.Sprintf("%s, p50 %.3f ms, p99 %.3f ms, %.3f %s, peak RSS %.1f MiB, cores %.0f%%/%.0f%% (%s)",
		tp, r.P50ms, r.P99ms, r.CPUPerUnit, sc.Unit, float64(r.PeakRSSKiB)/1024, r.GenCorePct, r.ProxyCorePct, r.Bottleneck)
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors", r.Errors)
	}
	return s
}

// snap is what is sampled just before and just after a measured run.
type snap struct {
	at        time.Time
	all       coreTimes
	cores     map[int]coreTimes
	proxyCPU  float64
	originCPU float64
	selfCPU   float64
}

func (e *env) snapshot(p *proc) snap {
	all, cores, _ := readCores()
	return snap{
		at: time.Now(), all: all, cores: cores,
		proxyCPU: treeCPU(p.pid()), originCPU: treeCPUOne(e.origin.pid()), selfCPU: selfCPU(),
	}
}

// fill computes a row's figures from the load generator's report and the
// samples around it.
func (e *env) fill(r *row, sc *scenario, ls loadStats, a, b snap, genCPU float64) {
	r.Ops, r.Bytes, r.Seconds, r.Rate, r.Errors = ls.Ops, ls.Bytes, ls.Seconds, ls.Rate, ls.Errors
	r.P50ms, r.P99ms = ls.P50us/1e3, ls.P99us/1e3
	if ls.Seconds > 0 {
		r.BytesPerSec = float64(ls.Bytes) / ls.Seconds
	}
	r.ProxyCPU = b.proxyCPU - a.proxyCPU
	r.OriginCPU = b.originCPU - a.originCPU
	r.GenCPU = genCPU
	switch {
	case sc.ByteUnit && ls.Bytes > 0:
		r.CPUPerUnit = r.ProxyCPU / (float64(ls.Bytes) / 1e9)
	case ls.Ops > 0:
		r.CPUPerUnit = r.ProxyCPU / float64(ls.Ops) * 1e4
	default:
		r.CPUPerUnit = nan
	}
	r.GenCorePct = busyPct(a.cores[e.genCore], b.cores[e.genCore])
	r.ProxyCorePct = busyPct(a.cores[e.proxyCore], b.cores[e.proxyCore])
	r.Bottleneck = bottleneck(r.GenCorePct, r.ProxyCorePct)
	wall := b.at.Sub(a.at).Seconds()
	allBusy := float64(b.all.Busy-a.all.Busy) / 100 // /proc/stat counts USER_HZ (100)
	other := allBusy - r.ProxyCPU - r.OriginCPU - r.GenCPU - (b.selfCPU - a.selfCPU)
	if wall > 0 && !math.IsNaN(other) {
		r.OtherCPUPct = math.Max(0, 100*other/wall)
	}
	if r.OtherCPUPct > 15 {
		r.Note = joinNote(r.Note, fmt.Sprintf("other processes used %.0f%% of a core during the run", r.OtherCPUPct))
	}
	if ls.Ops > 0 && float64(ls.Errors) > 0.001*float64(ls.Ops) {
		r.Note = joinNote(r.Note, fmt.Sprintf("%d errors", ls.Errors))
	}
}

func (e *env) runOne(sc *scenario, px *proxyDef, r *row) error {
	if err := portsFree(e.ports.proxy()); err != nil {
		return err
	}
	if e.origin.exited() {
		return fmt.Errorf("the origin exited: %v", e.origin.err)
	}
	args, penv := px.command(e)
	if sc.launch != nil && px.Name == "edgeproxy" {
		args, penv = sc.launch(e)
	}
	logPath := filepath.Join(e.dir, px.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s run %d\n", sc.Name, r.Run)
	p, err := startProc(px.Name, e.proxyCore, penv, nil, logf, logf, args...)
	if err != nil {
		return err
	}
	defer p.stop(3 * time.Second)
	if err := waitPorts(p, e.ports.proxy(), 15*time.Second); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	if err := e.sanity(); err != nil {
		return fmt.Errorf("%s sanity check: %w", px.Name, err)
	}
	if sc.Idle {
		return e.runIdle(sc, p, r)
	}
	if e.warmup > 0 {
		if _, _, _, err := e.generate(sc, e.warmup, false); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	a := e.snapshot(p)
	ls, genCPU, note, err := e.generate(sc, e.duration, true)
	b := e.snapshot(p)
	if err != nil {
		return err
	}
	r.Note = note
	if sc.launch != nil && px.Name == "edgeproxy" {
		r.Note = strings.TrimPrefix(r.Note+"; "+backhaulConns(e), "; ")
	}
	e.fill(r, sc, ls, a, b, genCPU)
	_, r.PeakRSSKiB = treeMem(p.pid())
	if p.exited() {
		return fmt.Errorf("%s exited during the run: %v", px.Name, p.err)
	}
	return nil
}

// sanity checks, through the proxy just started, that every port answers
// as the scenarios expect: HTTP/1.1; HTTP/1.1 over TLS 1.3 with the ECDSA
// certificate for bench.local and the RSA one for rsa.bench.local; HTTP/2
// over TLS 1.3 without SNI, as h2load connects, with the ECDSA certificate
// (the second certificate must not have become the default); and the raw
// TCP source.
func (e *env) sanity() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func(c *http.Client, url, host, wantProto string, wantCert []byte) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || len(body) != 100 {
			return fmt.Errorf("GET %s: status %d, %d bytes (want 200, 100 bytes): %q", url, resp.StatusCode, len(body), body)
		}
		if resp.Proto != wantProto {
			return fmt.Errorf("GET %s: %s, want %s", url, resp.Proto, wantProto)
		}
		if resp.TLS != nil {
			if resp.TLS.Version != tls.VersionTLS13 {
				return fmt.Errorf("GET %s: TLS version %x, want TLS 1.3", url, resp.TLS.Version)
			}
			if leaf := resp.TLS.PeerCertificates[0]; !bytes.Equal(leaf.Raw, wantCert) {
				return fmt.Errorf("GET %s (SNI %q): served the certificate of %v (%T key), not the bench's for that name",
					url, resp.TLS.ServerName, leaf.DNSNames, leaf.PublicKey)
			}
		}
		return nil
	}
	// An empty sni sends none: Go sends no server name for an IP address.
	tlsGet := func(sni, wantProto string, wantCert []byte, alpn string) error {
		c := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{alpn},
				MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}},
			ForceAttemptHTTP2: alpn == "h2",
		}}
		defer c.CloseIdleConnections()
		host := sni
		if host == "" {
			host = serverName
		}
		return get(c, fmt.Sprintf("https://127.0.0.1:%d/small", e.ports.HTTPS), host, wantProto, wantCert)
	}
	h1 := &http.Client{Transport: &http.Transport{}}
	defer h1.CloseIdleConnections()
	if err := get(h1, fmt.Sprintf("http://127.0.0.1:%d/small", e.ports.HTTP), serverName, "HTTP/1.1", nil); err != nil {
		return err
	}
	if err := tlsGet(serverName, "HTTP/1.1", e.certDER, "http/1.1"); err != nil {
		return err
	}
	if err := tlsGet(rsaServerName, "HTTP/1.1", e.rsaCertDER, "http/1.1"); err != nil {
		return err
	}
	if err := tlsGet("", "HTTP/2.0", e.certDER, "h2"); err != nil {
		return err
	}
	// Raw TCP: ask the source for 1000 bytes.
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.ports.TCP), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], 1000)
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, make([]byte, 1000)); err != nil {
		return fmt.Errorf("raw TCP port: %w", err)
	}
	return nil
}
