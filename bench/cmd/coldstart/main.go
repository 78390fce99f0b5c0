// Command coldstart measures what edgeproxy adds to a cold start: a
// request for an app whose one machine is stopped, which the exec driver
// starts (a demo machine process) and the request then reaches. For each
// start it takes the time from the request's send to its first response
// byte, and subtracts the machine's own boot: from the proxy spawning the
// process to the process listening, both read from their logs, on one
// clock. What is left is the proxy's: deciding to start, spawning,
// noticing the port accept, rebuilding the app's routes, and forwarding.
// Between starts the autostop loop stops the machine again.
//
// Loopback only, bounded in count and time; it stops everything it
// started and prints p50, p99 and max.
//
//	go run ./bench/cmd/coldstart [-n 40] [-boot 0]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/internal/prep"
)

var (
	n       = flag.Int("n", 40, "cold starts to measure")
	boot    = flag.String("boot", "0", "seconds the machine sleeps before it listens (its boot time)")
	edgeBin = flag.String("edgeproxy-bin", "", "edgeproxy binary (default: build ./cmd/edgeproxy)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := prep.Dir("coldstart")
	check(err)
	defer os.RemoveAll(dir)
	bin, err := prep.Edgeproxy(*edgeBin, dir)
	check(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logs := filepath.Join(dir, "logs")
	cfg := fmt.Sprintf(`[proxy]
region = "iad"
bind = "127.0.0.1"
port_map = { 80 = 0 }
autostop_interval = "100ms"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = "off"
[tripwire]
enabled = false

[[apps]]
name = "web"
hostnames = ["web.test"]
kill_signal = "SIGKILL"
  [apps.driver]
  type = "exec"
  command = ["sh", "-c", "sleep %s; exec %s demo-machine -listen 127.0.0.1:$PORT -id $FLY_MACHINE_ID"]
  log_dir = %q
  [[apps.services]]
  internal_port = 8080
  auto_stop_machines = "stop"
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
  [[apps.machines]]
  id = "m1"
  address = "127.0.0.1"
  ports = { 8080 = %d }
  state = "stopped"
`, *boot, bin, logs, port)
	path := filepath.Join(dir, "edgeproxy.toml")
	check(os.WriteFile(path, []byte(cfg), 0o600))
	proxyLog := filepath.Join(dir, "proxy.log")
	lf, err := os.Create(proxyLog)
	check(err)
	cmd := exec.Command(bin, "run", "-config", path)
	cmd.Stdout, cmd.Stderr = lf, lf
	check(cmd.Start())
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	httpAddr, admin := waitListening(proxyLog)

	var overhead, total, toSpawn, toReady, toFirst []time.Duration
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < *n && time.Now().Before(deadline); i++ {
		waitState(admin, "stopped")
		// The machine log is appended to by each run; note where this
		// one's lines begin.
		mlog := filepath.Join(logs, "web-m1.log")
		before := size(mlog)
		plBefore := size(proxyLog)
		sent, first := request(httpAddr)
		spawned := logTime(proxyLog, plBefore, "machine process started")
		listening := logTime(mlog, before, "demo machine listening")
		ready := logTime(proxyLog, plBefore, "machine started")
		bootTime := listening.Sub(spawned)
		total = append(total, first.Sub(sent))
		overhead = append(overhead, first.Sub(sent)-bootTime)
		toSpawn = append(toSpawn, spawned.Sub(sent))
		toReady = append(toReady, ready.Sub(listening))
		toFirst = append(toFirst, first.Sub(ready))
	}
	for _, d := range [][]time.Duration{overhead, total, toSpawn, toReady, toFirst} {
		slices.Sort(d)
	}
	fmt.Printf("cold starts: %d (exec driver, demo machine, boot sleep %ss)\n", len(overhead), *boot)
	fmt.Printf("arrival to first byte: p50 %v, p99 %v, max %v\n", pct(total, 50), pct(total, 99), total[len(total)-1])
	fmt.Printf("proxy's own part (minus the machine's boot): p50 %v, p99 %v, max %v\n", pct(overhead, 50), pct(overhead, 99), overhead[len(overhead)-1])
	fmt.Printf("  of which: arrival to process spawned p50 %v; machine listening to routable p50 %v; routable to first byte p50 %v\n",
		pct(toSpawn, 50), pct(toReady, 50), pct(toFirst, 50))
}

func pct(d []time.Duration, p int) time.Duration {
	return d[min(len(d)-1, len(d)*p/100)].Round(10 * time.Microsecond)
}

// request sends one GET for web.test on a new connection and returns
// when it was sent and when its first response byte came.
func request(addr string) (sent, first time.Time) {
	c, err := net.Dial("tcp", addr)
	check(err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	sent = time.Now()
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
	check(err)
	var b [1]byte
	_, err = c.Read(b[:])
	check(err)
	first = time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(string(b[:])), c)), nil)
	check(err)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		log.Fatalf("cold start answered %d %s", resp.StatusCode, resp.Header.Get("Edgeproxy-Error-Code"))
	}
	return sent, first
}

// waitListening reads the proxy's log until its port 80 and admin
// listener are up.
func waitListening(path string) (httpAddr, admin string) {
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		for _, r := range records(path, 0) {
			switch {
			case r["msg"] == "listening" && r["port"] == float64(80):
				httpAddr, _ = r["addr"].(string)
			case r["msg"] == "admin listening":
				admin, _ = r["addr"].(string)
			}
		}
		if httpAddr != "" && admin != "" {
			return httpAddr, admin
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatal("edgeproxy did not listen within 30 s")
	return "", ""
}

// waitState waits for the machine to be in state, by the admin API.
func waitState(admin, state string) {
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		resp, err := http.Get("http://" + admin + "/v1/machines")
		if err == nil {
			var ms []struct{ State string }
			json.NewDecoder(resp.Body).Decode(&ms)
			resp.Body.Close()
			if len(ms) == 1 && ms[0].State == state {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Fatalf("machine not %s within 30 s", state)
}

// logTime is the time of the first record at or after offset from whose
// msg is msg, waiting for it up to 10 s.
func logTime(path string, from int64, msg string) time.Time {
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		for _, r := range records(path, from) {
			if r["msg"] == msg {
				t, err := time.Parse(time.RFC3339Nano, r["time"].(string))
				check(err)
				return t
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Fatalf("no %q in %s", msg, path)
	return time.Time{}
}

func records(path string, from int64) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	f.Seek(from, io.SeekStart)
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

func size(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
