// Command fleetscale measures edgeproxy's fleet at scale: it starts a NATS
// server and fills the catalog with 10,000 apps and 30,000 machines over 5
// regions, then starts two edges, one watching one region and one
// watching all, and prints:
//
//   - time from an edge's start to its first request served;
//   - each edge's RSS once its copy is complete;
//   - the latency and CPU of applying one change;
//   - the CPU an edge spends absorbing 1,000 machine updates a second.
//
// Loopback only, bounded in time; it stops everything it started.
//
//	go run ./bench/cmd/fleetscale [-apps 10000] [-machines 30000] [-regions 5]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/fleet"
	"github.com/edgeproxy/edgeproxy/internal/proctest"

	"github.com/edgeproxy/edgeproxy/bench/internal/prep"
)

var (
	nApps     = flag.Int("apps", 10000, "apps in the catalog")
	nMachines = flag.Int("machines", 30000, "machines in the catalog")
	nRegions  = flag.Int("regions", 5, "regions the machines are spread over")
	rate      = flag.Int("rate", 1000, "machine updates per second in the absorb phase")
	absorb    = flag.Duration("absorb", 10*time.Second, "length of the absorb phase")
	edgeBin   = flag.String("edgeproxy-bin", "", "edgeproxy binary (default: build ./cmd/edgeproxy)")
)

var regionNames = []string{"iad", "ord", "fra", "syd", "gru", "nrt", "lhr", "sin"}

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := prep.Dir("fleetscale")
	check(err)
	defer os.RemoveAll(dir)
	bin, err := prep.Edgeproxy(*edgeBin, dir)
	check(err)
	natsBin := filepath.Join(dir, "nats-server")
	run("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
	ns := start(natsBin, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", filepath.Join(dir, "js"))
	defer stop(ns.cmd)
	url := "nats://127.0.0.1:" + ns.wait(regexp.MustCompile(`client connections on [0-9.]+:([0-9]+)`))

	nc, err := nats.Connect(url)
	check(err)
	defer nc.Close()
	t0 := time.Now()
	fill(nc)
	fmt.Printf("catalog: %d apps, %d machines over %d regions, written in %v\n", *nApps, *nMachines, *nRegions, time.Since(t0).Round(time.Millisecond))

	one := startEdge(bin, dir, "edge-one", url, []string{regionNames[0]})
	defer stop(one.cmd)
	all := startEdge(bin, dir, "edge-all", url, nil)
	defer stop(all.cmd)
	for _, e := range []*edge{one, all} {
		e.firstServed()
		fmt.Printf("%s (watching %s): first request served %v after start; RSS %.0f MiB\n", e.name, e.watching, e.served.Round(time.Millisecond), e.rssMiB())
	}

	// One change: stop and start the probe app's one machine, and watch
	// the edge's answer for it change (a request is cheap to watch; the
	// admin API's list of 30,000 machines is not).
	st, err := fleet.NewStore(nc)
	check(err)
	ctx := context.Background()
	m := probeMachine()
	for _, e := range []*edge{one, all} {
		var total time.Duration
		cpu0 := e.cpu()
		const changes = 10
		for i := range changes {
			m.State = "started"
			if i%2 == 0 {
				m.State = "stopped"
			}
			// A change after a quiet spell applies at once; one right
			// behind another waits out the 50 ms coalescing window.
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			check(st.PutMachine(ctx, m))
			for e.probeStopped() != (m.State == "stopped") {
				if time.Since(start) > 30*time.Second {
					log.Fatalf("%s did not apply a change within 30 s", e.name)
				}
				time.Sleep(time.Millisecond)
			}
			total += time.Since(start)
		}
		fmt.Printf("%s: one change, write to routing: %v on average; %.3f CPU s per change\n", e.name,
			(total / changes).Round(time.Millisecond), (e.cpu()-cpu0)/changes)
	}

	// Absorb: rate updates a second for the phase's length.
	js, _ := jetstream.New(nc)
	cpu := map[*edge]float64{one: one.cpu(), all: all.cpu()}
	// Every 10 ms, a hundredth of the second's updates, written at once.
	tick := time.NewTicker(10 * time.Millisecond)
	end := time.Now().Add(*absorb)
	n := 0
	for time.Now().Before(end) {
		<-tick.C
		var wg sync.WaitGroup
		for range *rate / 100 {
			rec := machine(n % *nMachines)
			rec.Cordoned = n/(*nMachines)%2 == 0
			n++
			wg.Go(func() {
				b, _ := json.Marshal(rec)
				kv, err := js.KeyValue(ctx, fleet.MachineBucket(rec.Region))
				if err == nil {
					kv.Put(ctx, fleet.MachineKey(rec.App, rec.ID), b)
				}
			})
		}
		wg.Wait()
	}
	tick.Stop()
	for _, e := range []*edge{one, all} {
		used := e.cpu() - cpu[e]
		fmt.Printf("%s: absorbing %d updates in %v (%.0f/s): %.2f CPU s, %.0f%% of a core; RSS %.0f MiB\n",
			e.name, n, *absorb, float64(n)/absorb.Seconds(), used, 100*used/absorb.Seconds(), e.rssMiB())
	}
}

// machine is machine i: app i/3, in region i%regions.
func machine(i int) *fleet.MachineRecord {
	region := regionNames[i%*nRegions]
	return &fleet.MachineRecord{Schema: fleet.Schema, ID: fmt.Sprintf("m%d", i), App: fmt.Sprintf("app-%d", i%*nApps),
		Region: region, Address: "127.0.0.1", Ports: map[string]int{"8080": 1}, State: "started", Updated: time.Now()}
}

// fill writes the catalog straight into the buckets, many puts in flight.
func fill(nc *nats.Conn) {
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	// Create the buckets as the nodes do, then write raw records.
	buckets := []string{fleet.BucketApps, fleet.BucketSummary}
	for r := range *nRegions {
		buckets = append(buckets, fleet.MachineBucket(regionNames[r]))
	}
	for _, b := range buckets {
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b, History: 1, Storage: jetstream.FileStorage})
		check(err)
	}
	put := func(bucket, key string, v any) {
		b, _ := json.Marshal(v)
		kv, err := js.KeyValue(ctx, bucket)
		check(err)
		_, err = kv.Put(ctx, key, b)
		check(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	do := func(f func()) {
		sem <- struct{}{}
		wg.Go(func() { f(); <-sem })
	}
	summary := map[string]map[string]fleet.RegionCount{}
	for i := range *nMachines {
		m := machine(i)
		if summary[m.App] == nil {
			summary[m.App] = map[string]fleet.RegionCount{}
		}
		c := summary[m.App][m.Region]
		c.Machines++
		c.Started++
		summary[m.App][m.Region] = c
		do(func() { put(fleet.MachineBucket(m.Region), fleet.MachineKey(m.App, m.ID), m) })
	}
	probe := probeMachine()
	put(fleet.MachineBucket(probe.Region), fleet.MachineKey(probe.App, probe.ID), probe)
	put(fleet.BucketApps, "probe", &fleet.AppRecord{Schema: fleet.Schema, Name: "probe", Hostnames: []string{"probe.test"},
		HTTPService: &config.HTTPService{InternalPort: 8080}, Updated: time.Now()})
	for i := range *nApps {
		name := fmt.Sprintf("app-%d", i)
		a := &fleet.AppRecord{Schema: fleet.Schema, Name: name, Hostnames: []string{name + ".test"},
			HTTPService: &config.HTTPService{InternalPort: 8080}, Updated: time.Now()}
		s := &fleet.SummaryRecord{Schema: fleet.Schema, App: name, Regions: summary[name], Updated: time.Now()}
		do(func() { put(fleet.BucketApps, name, a); put(fleet.BucketSummary, name, s) })
	}
	wg.Wait()
}

type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
	mu  *sync.Mutex
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func start(bin string, args ...string) *proc {
	p := &proc{cmd: exec.Command(bin, args...), out: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd.Stdout, p.cmd.Stderr = lockedBuf{p.mu, p.out}, lockedBuf{p.mu, p.out}
	check(p.cmd.Start())
	return p
}

// wait returns re's first submatch in the output, within 30 s.
func (p *proc) wait(re *regexp.Regexp) string {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		m := re.FindStringSubmatch(p.out.String())
		p.mu.Unlock()
		if m != nil {
			return m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	log.Fatalf("%s: %s not seen:\n%s", p.cmd.Path, re, p.out.String())
	return ""
}

type edge struct {
	*proc
	name, watching string
	started        time.Time
	served         time.Duration
	http, admin    string
}

func startEdge(bin, dir, name, url string, regions []string) *edge {
	path := filepath.Join(dir, name+".toml")
	rs, _ := json.Marshal(regions)
	if regions == nil {
		rs = []byte("[]")
	}
	cfg := fmt.Sprintf(`
[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0, 443 = 0 }
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "off"
[tripwire]
enabled = false
[fleet]
urls = [%q]
node = %q
data_dir = %q
regions = %s
`, url, name, filepath.Join(dir, name+"-data"), rs) + proctest.PlaceholderApp
	check(os.WriteFile(path, []byte(cfg), 0o600))
	e := &edge{name: name, watching: "all regions", started: time.Now()}
	if regions != nil {
		e.watching = strings.Join(regions, ",")
	}
	e.proc = start(bin, "run", "-config", path)
	e.http = "127.0.0.1:" + e.wait(regexp.MustCompile(`"msg":"listening","port":80,"addr":"127.0.0.1:([0-9]+)"`))
	e.admin = "127.0.0.1:" + e.wait(regexp.MustCompile(`"msg":"admin listening","addr":"127.0.0.1:([0-9]+)"`))
	return e
}

// firstServed polls until one of the last apps written, with a machine in
// the first region (machine i is in region i mod regions), is routed.
func (e *edge) firstServed() {
	a := *nApps - 1
	a -= a % *nRegions
	last := fmt.Sprintf("app-%d.test", a)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", "http://"+e.http+"/", nil)
		req.Host = last
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// The app's machines listen nowhere (port 1): PC01 or PM05
			// (connection refused) mean the app was routed to one. Until the
			// copy has it, the port's placeholder answers (PR01, no machine).
			if c := resp.Header.Get("Edgeproxy-Error-Code"); c == "PC01" || c == "PM05" {
				e.served = time.Since(e.started)
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.mu.Lock()
	out := e.out.String()
	e.mu.Unlock()
	log.Fatalf("%s never served %s:\n%s", e.name, last, out[max(0, len(out)-3000):])
}

// probeStopped reports whether the edge routes the probe app nowhere
// (its one machine stopped: PR01) rather than to its machine (which
// listens nowhere: PC01 or PM05).
func (e *edge) probeStopped() bool {
	req, _ := http.NewRequest("GET", "http://"+e.http+"/", nil)
	req.Host = "probe.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Edgeproxy-Error-Code") == "PR01"
}

// probeMachine is the probe app's one machine, in the first region.
func probeMachine() *fleet.MachineRecord {
	return &fleet.MachineRecord{Schema: fleet.Schema, ID: "probe-m", App: "probe", Region: regionNames[0],
		Address: "127.0.0.1", Ports: map[string]int{"8080": 1}, State: "started", Updated: time.Now()}
}

func (e *edge) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	check(err)
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

func (e *edge) rssMiB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
	check(err)
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func stop(c *exec.Cmd) {
	c.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	check(cmd.Run())
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
