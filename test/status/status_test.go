//go:build linux

// Package status_test opens the admin status page of the real binary in a
// real headless Chromium, as an operator would, and checks that it shows
// the proxy's state and follows it live.
package status_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

var bin proctest.Bin

func TestMain(m *testing.M) {
	os.Exit(bin.Main(m, "status", false))
}

const token = "status-page-token"

const config = `
[proxy]
bind = "127.0.0.1"
port_map = { 80 = 0 }

[admin]
listen = "127.0.0.1:0"
token = "` + token + `"

[[apps]]
name = "web"
hostnames = ["web.test"]
  [[apps.services]]
  internal_port = 8080
    [[apps.services.ports]]
    port = 80
    handlers = ["http"]
    [[apps.services.http_checks]]
    interval = "1s"
    timeout = "500ms"
    path = "/healthz"
  [[apps.machines]]
  id = "m-web-1"
  region = "ams"
  address = "127.0.0.1"
  ports = { 8080 = MACHINE_PORT }
`

// chromium finds the browser: Debian's package installs it as chromium.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: .ci/run installs Debian's chromium package")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// machine is the app's machine: a page of text, and a health check.
func machine(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from m-web-1\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// number reads a tile's figure ("1,234" or "–").
func number(s string) int {
	n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), ",", ""))
	if err != nil {
		return -1
	}
	return n
}

func TestStatusPageFollowsTraffic(t *testing.T) {
	browser := chromium(t)
	path := filepath.Join(t.TempDir(), "edgeproxy.toml")
	cfg := strings.ReplaceAll(config, "MACHINE_PORT", strconv.Itoa(machine(t)))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lim := proctest.Limits{Lifetime: 3 * time.Minute, Grace: 10 * time.Second}
	p := proctest.Run(t, lim, "edgeproxy run", bin.Path(t, "the status suite runs the proxy and a browser; skipped in -short mode"), "run", path)
	ports, admin := p.AwaitListening(t, 15*time.Second, 80)
	proxy := "http://" + ports[80].String()

	// The data needs the token; the page itself holds none.
	resp, err := http.Get("http://" + admin.String() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("/v1/status without the token: %d, want 401", resp.StatusCode)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1100),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// The first action starts the browser, and its context must not carry
	// a timeout (it would stop the browser); later ones are bounded.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+admin.String()+"/status")); err != nil {
		t.Fatalf("opening the status page: %v", err)
	}
	within := func(d time.Duration) context.Context {
		c, cancel := context.WithTimeout(ctx, d)
		t.Cleanup(cancel)
		return c
	}
	text := func(sel string) string {
		s, _ := chromedp.Run(within(5*time.Second), chromedp.TextContent(chromedp.CSS(sel)))
		return s
	}
	poll := func(what, expr string, d time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(within(d), chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// The page asks for the token, then goes live.
	err = chromedp.Do(within(20*time.Second),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS("#main")),
	)
	if err != nil {
		t.Fatalf("logging in to the status page: %v (state %q)", err, text("#state"))
	}
	poll("the page going live", `document.getElementById("state").textContent === "live"`, 20*time.Second)

	// The machine shows, with its region, and turns healthy once its
	// check passes.
	poll("machine row", `(() => {
		const t = document.getElementById("machines").textContent;
		return t.includes("m-web-1") && t.includes("ams") && t.includes("healthy") && !t.includes("failing");
	})()`, 20*time.Second)

	before := text("#requests")
	n0 := number(before)
	if n0 < 0 {
		t.Fatalf("requests tile reads %q", before)
	}

	// Traffic: 30 requests, and one connection held open so it shows in
	// the connection lists with its layers.
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 30; i++ {
		req, _ := http.NewRequest("GET", proxy+"/", nil)
		req.Host = "web.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	held, err := net.Dial("tcp", ports[80].String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	fmt.Fprintf(held, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
	buf := make([]byte, 512)
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(buf); err != nil {
		t.Fatal(err)
	}

	// The page follows without a reload.
	poll(fmt.Sprintf("requests tile reaching %d (was %q)", n0+30, before), fmt.Sprintf(`(() => {
		const n = parseInt(document.getElementById("requests").textContent.replace(/,/g, ""), 10);
		return n >= %d;
	})()`, n0+30), 15*time.Second)
	poll("held connection listed with its app and layers", `(() => {
		const t = document.getElementById("oldest").textContent;
		return t.includes("web") && t.includes("tcp");
	})()`, 10*time.Second)
	t.Logf("requests tile: %s before, %s after", before, text("#requests"))

	shot, err := chromedp.Run(within(20*time.Second), chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.ArtifactDir(), "status.png")
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (go test -artifacts keeps it)", out)
}
