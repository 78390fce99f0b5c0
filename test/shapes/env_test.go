//go:build linux

package shapes_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// proxyConfig is one app on one demo machine, served as an http_service:
// public 443 (tls + http, self-signed) and 80 (http), both remapped to
// ports the kernel picks. handshake_timeout is short so slowloris clients
// are closed within the test, yet long enough that thousands of them are
// all dialed and open before the first is closed, even on a busy CI
// machine; lingering_timeout is short so closes settle quickly. The per-app connection limit is lifted so that connections
// leaked by one shape show up as leaked descriptors in that shape's
// subtest rather than as refusals in every later one.
const proxyConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0 }
handshake_timeout = "5s"
idle_timeout = "10s"
lingering_timeout = "1s"

[limits]
max_connections_per_app = -1

[admin]
listen = "127.0.0.1:0"

[[apps]]
name = "shapes"
  [apps.http_service]
  internal_port = 8080
    [apps.http_service.tls_options]
    default_self_signed = true
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
`

// handshakeTimeout is proxyConfig's handshake_timeout.
const handshakeTimeout = 5 * time.Second

// serverName is the SNI and Host every client here sends; the port has
// one app, so any name reaches it.
const serverName = "shapes.test"

// upstreamPoolCap is the proxy's cap on idle upstream connections per
// machine (MaxIdlePerMachine in internal/httpproxy/transport.go). After a
// storm no request is in flight, so every upstream connection left is an
// idle pooled one and there can be no more than this many.
const upstreamPoolCap = 128

// proxyEnv is a running proxy in front of one demo machine.
type proxyEnv struct {
	proxy      *proctest.Proc
	pid        int
	tlsAddr    string // local address of public port 443
	plainAddr  string // local address of public port 80
	adminAddr  string
	metricsURL string
	demoPort   uint16
	// publicPorts are the local ports of 80 and 443, so the census can
	// tell client connections from upstream and admin ones.
	publicPorts []uint16
}

func startProxy(t *testing.T) *proxyEnv {
	t.Helper()
	demo := startProc(t, "demo-machine", "demo-machine", "-listen", "127.0.0.1:0", "-id", "m1")
	demoAddr := demo.AwaitAddr(t, "demo machine listening", readyTimeout)

	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	if err := os.WriteFile(path, fmt.Appendf(nil, proxyConfig, demoAddr.Port()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "edgeproxy run", "run", "-config", path)
	env := &proxyEnv{proxy: p, pid: p.Pid(), demoPort: demoAddr.Port()}
	ports, admin := p.AwaitListening(t, readyTimeout, 80, 443)
	tlsAP, plainAP := ports[443], ports[80]
	env.tlsAddr, env.plainAddr = tlsAP.String(), plainAP.String()
	env.adminAddr = admin.String()
	env.metricsURL = "http://" + env.adminAddr + "/metrics"
	env.publicPorts = []uint16{tlsAP.Port(), plainAP.Port()}
	return env
}

// census is what the proxy's descriptors are, read from /proc.
type census struct {
	Total    int            // every open descriptor
	Client   int            // connections accepted on ports 80 and 443
	Upstream int            // connections to the demo machine
	Other    int            // every other descriptor (listeners, admin, epoll, ...)
	States   map[string]int // TCP states of the client connections
}

// Settled is the count that must return to its value before a storm: every
// descriptor except idle upstream connections, which the proxy keeps
// pooled on purpose.
func (c census) Settled() int { return c.Total - c.Upstream }

func (c census) String() string {
	s := fmt.Sprintf("%d fds (%d client, %d upstream, %d other)", c.Total, c.Client, c.Upstream, c.Other)
	if len(c.States) > 0 {
		var parts []string
		for st, n := range c.States {
			parts = append(parts, fmt.Sprintf("%s×%d", st, n))
		}
		slices.Sort(parts)
		s += "; client sockets " + strings.Join(parts, ", ")
	}
	return s
}

// takeCensus classifies the proxy's descriptors by matching the socket
// inodes of /proc/PID/fd with the proxy's TCP table.
func (e *proxyEnv) takeCensus() (census, error) {
	c := census{States: map[string]int{}}
	dir := fmt.Sprintf("/proc/%d/fd", e.pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return c, err
	}
	inodes := map[string]bool{}
	for _, ent := range ents {
		link, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue // closed while listing
		}
		c.Total++
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	socks, err := e.tcpSockets(inodes)
	if err != nil {
		return c, err
	}
	for _, s := range socks {
		switch {
		case s.state != "LISTEN" && slices.Contains(e.publicPorts, s.local):
			c.Client++
			c.States[s.state]++
		case s.remote == e.demoPort:
			c.Upstream++
		}
	}
	c.Other = c.Total - c.Client - c.Upstream
	return c, nil
}

type tcpSocket struct {
	local, remote uint16
	state         string
}

// tcpStates names the states of /proc/net/tcp (include/net/tcp_states.h).
var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
	"05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
	"09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}

// tcpSockets returns the proxy's TCP sockets among inodes, read from the
// TCP tables of its network namespace. The kernel produces those tables a
// page at a time while connections come and go, so a socket may be listed
// twice or missed in one reading: entries are kept once per inode, and the
// tables are read again while a socket of the proxy is missing.
func (e *proxyEnv) tcpSockets(inodes map[string]bool) (map[string]tcpSocket, error) {
	found := map[string]tcpSocket{}
	for range 3 {
		for _, name := range []string{"tcp", "tcp6"} {
			if err := e.readTCPTable(name, inodes, found); err != nil {
				return nil, err
			}
		}
		if len(found) == len(inodes) {
			break
		}
	}
	return found, nil
}

func (e *proxyEnv) readTCPTable(name string, inodes map[string]bool, found map[string]tcpSocket) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", e.pid, name))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || !inodes[fs[9]] {
			continue
		}
		st := tcpStates[fs[3]]
		if st == "" {
			st = fs[3]
		}
		found[fs[9]] = tcpSocket{local: hexPort(fs[1]), remote: hexPort(fs[2]), state: st}
	}
	return sc.Err()
}

func hexPort(addr string) uint16 {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseUint(p, 16, 16)
	return uint16(n)
}

// census returns the census or fails the test.
func (e *proxyEnv) census(t *testing.T) census {
	t.Helper()
	c, err := e.takeCensus()
	if err != nil {
		t.Fatalf("census of the proxy's descriptors: %v", err)
	}
	return c
}

// settleTimeout bounds the wait for descriptors to return after a storm:
// lingering closes take up to lingering_timeout (1s), and closes started by
// deadlines a little more.
const settleTimeout = 10 * time.Second

// waitSettled polls until the proxy holds no more client connections and
// no more non-pooled descriptors than in base, or settleTimeout passes, and
// returns the last census.
func (e *proxyEnv) waitSettled(t *testing.T, base census) (census, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		c := e.census(t)
		if (c.Settled() <= base.Settled() && c.Client <= base.Client) || time.Since(start) > settleTimeout {
			return c, time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSettled asserts that the proxy's descriptors came back to base.
func checkSettled(t *testing.T, base, after census, took time.Duration) {
	t.Helper()
	t.Logf("proxy descriptors: before %s; after %s (settled in %s)", base, after, took.Round(10*time.Millisecond))
	if after.Client > base.Client {
		t.Errorf("the proxy still holds %d client connections %s after the storm (%d before): %s",
			after.Client, settleTimeout, base.Client, after)
	}
	if after.Settled() > base.Settled() {
		t.Errorf("the proxy holds %d descriptors besides pooled upstream connections, %d before the storm: %s",
			after.Settled(), base.Settled(), after)
	}
	if after.Upstream > upstreamPoolCap {
		t.Errorf("the proxy holds %d upstream connections with no request in flight, more than its idle pool's cap of %d",
			after.Upstream, upstreamPoolCap)
	}
}

// logGoroutines logs the proxy's goroutines, aggregated by stack, from its
// admin pprof endpoint: when a storm leaves connections open or the CPU
// busy, the stacks say where they are stuck.
func (e *proxyEnv) logGoroutines(t *testing.T) {
	t.Helper()
	const maxDump = 32 << 10
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	url := "http://" + e.adminAddr + "/debug/pprof/goroutine?debug=1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Logf("goroutine dump from %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDump))
	if err != nil {
		t.Logf("goroutine dump from %s: %v", url, err)
	}
	t.Logf("proxy goroutines (first %d KiB of %s):\n%s", maxDump>>10, url, b)
}

// scrape reads the admin /metrics and returns the value of every series of
// the named families, keyed by family name and then by label text.
func (e *proxyEnv) scrape(t *testing.T, families ...string) map[string]map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.metricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", e.metricsURL, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", e.metricsURL, err)
	}
	out := map[string]map[string]float64{}
	for _, name := range families {
		out[name] = map[string]float64{}
		for _, m := range fams[name].GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			out[name][strings.Join(labels, ",")] = v
		}
	}
	return out
}

// procCPU is the proxy's user+system CPU time so far.
func (e *proxyEnv) procCPU(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses; utime and
	// stime are fields 14 and 15, in clock ticks of 1/100 s on Linux.
	fs := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseInt(fs[11], 10, 64)
	stime, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// openFilesLimit reads the soft RLIMIT_NOFILE of the proxy.
func (e *proxyEnv) openFilesLimit(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", e.pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				if fs[0] == "unlimited" {
					return 1 << 62
				}
				n, err := strconv.ParseUint(fs[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", e.pid)
	return 0
}
