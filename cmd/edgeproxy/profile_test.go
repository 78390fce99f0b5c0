package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"go.uber.org/goleak"
)

// recordProfile takes a short real CPU profile of the test binary, so the
// fake admin API below serves exactly what net/http/pprof would.
func recordProfile(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Skipf("cannot record a CPU profile here: %v", err)
	}
	x := 0
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		for i := range 1000 {
			x += i * i
		}
	}
	pprof.StopCPUProfile()
	if x == 42 {
		t.Log("unlikely") // keeps the loop from being optimized away
	}
	return buf.Bytes()
}

// fakeAdmin is the admin API's /debug/pprof/profile behind its bearer
// token, answering with body and status.
type fakeAdmin struct {
	mu      sync.Mutex
	status  int
	body    []byte
	seconds []string // the seconds= of each authorized request
}

func (a *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/debug/pprof/profile" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer s3cret" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgeproxy"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	a.mu.Lock()
	a.seconds = append(a.seconds, r.URL.Query().Get("seconds"))
	status, body := a.status, a.body
	a.mu.Unlock()
	w.WriteHeader(status)
	w.Write(body)
}

func (a *fakeAdmin) set(status int, body []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.body = status, body
}

func profileCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(append([]string{"profile"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestProfileCommand(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	prof := recordProfile(t)
	admin := &fakeAdmin{status: http.StatusOK, body: prof}
	srv := httptest.NewServer(admin)
	defer srv.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("writes a checked profile", func(t *testing.T) {
		out := filepath.Join(dir, "cpu.pprof")
		code, stdout, stderr := profileCLI("-admin", srv.URL, "-seconds", "3", "-token", "s3cret", "-o", out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(b, prof) {
			t.Fatalf("file holds %d bytes (err %v), want the %d served", len(b), err, len(prof))
		}
		if _, err := profile.ParseData(b); err != nil {
			t.Errorf("written file does not parse: %v", err)
		}
		if !strings.Contains(stdout, "wrote "+out) || !strings.Contains(stdout, "go tool pprof -http=: "+out) {
			t.Errorf("stdout lacks the path or the pprof hint:\n%s", stdout)
		}
		admin.mu.Lock()
		defer admin.mu.Unlock()
		if n := len(admin.seconds); n == 0 || admin.seconds[n-1] != "3" {
			t.Errorf("server saw seconds=%v, want 3", admin.seconds)
		}
	})

	t.Run("token file and bare HOST:PORT", func(t *testing.T) {
		out := filepath.Join(dir, "cpu2.pprof")
		code, _, stderr := profileCLI("-admin", strings.TrimPrefix(srv.URL, "http://"), "-seconds", "1",
			"-token-file", tokenFile, "-o", out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if _, err := os.Stat(out); err != nil {
			t.Error(err)
		}
	})

	failures := []struct {
		name   string
		args   []string
		status int
		body   string
		code   int
		want   string
	}{
		{name: "no token", args: []string{"-admin", srv.URL}, code: 1, want: "the admin API wants a token"},
		{name: "wrong token", args: []string{"-admin", srv.URL, "-token", "guess"}, code: 1, want: "refused the token"},
		{name: "bad scheme", args: []string{"-admin", "ftp://127.0.0.1:9901"}, code: 1, want: "bad -admin URL"},
		{name: "unparsable URL", args: []string{"-admin", "http://[::1"}, code: 1, want: "bad -admin URL"},
		{name: "nothing listening", args: []string{"-admin", closedURL(t), "-token", "s3cret"}, code: 1, want: "dial tcp"},
		{name: "not a profile", args: []string{"-admin", srv.URL, "-token", "s3cret"},
			status: http.StatusOK, body: "<html>please log in</html>", code: 1, want: "did not answer with a profile"},
		{name: "profiler busy", args: []string{"-admin", srv.URL, "-token", "s3cret"}, status: http.StatusInternalServerError,
			body: "Could not enable CPU profiling: cpu profiling already in use\n", code: 1, want: "perhaps by the CPU tripwire"},
		{name: "both token flags", args: []string{"-token", "a", "-token-file", tokenFile}, code: 2, want: "not both"},
		{name: "zero seconds", args: []string{"-seconds", "0"}, code: 2, want: "-seconds must be between"},
		{name: "missing token file", args: []string{"-token-file", filepath.Join(dir, "nope")}, code: 1, want: "no such file"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			if tc.status != 0 {
				admin.set(tc.status, []byte(tc.body))
				defer admin.set(http.StatusOK, prof)
			}
			out := filepath.Join(dir, "failed.pprof")
			code, _, stderr := profileCLI(append(tc.args, "-o", out)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tc.code, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed pull left %s behind (stat: %v)", out, err)
			}
		})
	}
}

// closedURL is the URL of a loopback port that nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}
