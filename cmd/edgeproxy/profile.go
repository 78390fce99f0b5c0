package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// maxProfileBytes bounds what `edgeproxy profile` reads: a CPU profile of
// a busy proxy is a few megabytes at most, so anything near this is not one.
const maxProfileBytes = 256 << 20

// runProfile is `edgeproxy profile`: it pulls a CPU profile from a running
// proxy's admin API, checks that what came back is a profile (a proxy or
// login page in between would otherwise leave an operator with a file
// pprof rejects only later), and writes it.
func runProfile(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: edgeproxy profile [-admin URL] [-seconds N] [-o FILE] [-token-file FILE | -token TOKEN]

Records a CPU profile of a running edgeproxy through its admin API
(/debug/pprof/profile), checks it, and writes it to FILE. View it with
go tool pprof -http=: FILE.

flags:
`)
		fs.PrintDefaults()
	}
	var (
		admin     string
		seconds   int
		out       string
		token     string
		tokenFile string
	)
	fs.StringVar(&admin, "admin", "http://"+config.DefaultAdminListen, "the proxy's admin API `URL` (admin.listen)")
	fs.IntVar(&seconds, "seconds", 30, "profile for `N` seconds, 1 to 3600")
	fs.StringVar(&out, "o", "", "`FILE` to write (default cpu-TIME.pprof in the current directory)")
	fs.StringVar(&token, "token", "", "admin bearer `TOKEN` (other local users can see it in ps; prefer -token-file)")
	fs.StringVar(&tokenFile, "token-file", "", "read the admin bearer token from `FILE` (admin.token_file)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	var bad string
	switch {
	case fs.NArg() > 0:
		bad = fmt.Sprintf("unexpected argument %q", fs.Arg(0))
	case token != "" && tokenFile != "":
		bad = "set -token or -token-file, not both"
	case seconds < 1 || seconds > 3600:
		bad = fmt.Sprintf("-seconds must be between 1 and 3600, got %d", seconds)
	}
	if bad != "" {
		fmt.Fprintf(stderr, "edgeproxy profile: %s\n", bad)
		fs.Usage()
		return usageError{errors.New(bad)}
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("token file %s is empty", tokenFile)
		}
	}
	u, err := profileURL(admin, seconds)
	if err != nil {
		return err
	}
	if out == "" {
		out = "cpu-" + time.Now().UTC().Format("20060102T150405Z") + ".pprof"
	}

	fmt.Fprintf(stderr, "recording a %ds CPU profile from %s...\n", seconds, u.Redacted())
	// The server answers only when the profile ends; a minute more covers
	// a slow network without letting a stuck server hold the command forever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+time.Minute)
	defer cancel()
	body, err := fetchProfile(ctx, u, token)
	if err != nil {
		return err
	}
	return writeProfile(out, body, seconds, u.Redacted(), stdout)
}

// writeProfile checks that body is a profile (a proxy or login page in
// between would otherwise leave a file pprof rejects only later) and
// writes it to out.
func writeProfile(out string, body []byte, seconds int, from string, stdout io.Writer) error {
	p, err := profile.ParseData(body)
	if err != nil {
		return fmt.Errorf("%s did not answer with a profile (%v); it began %q", from, err, snippet(body))
	}
	if err := os.WriteFile(out, body, 0o600); err != nil {
		return err
	}
	var samples int64
	for _, s := range p.Sample {
		samples += s.Value[0]
	}
	fmt.Fprintf(stdout, "wrote %s: %ds CPU profile, %d samples\nview it with: go tool pprof -http=: %s\n", out, seconds, samples, out)
	return nil
}

// profileURL turns the admin address into the profile endpoint. A bare
// HOST:PORT, as admin.listen is written, is taken as http.
func profileURL(admin string, seconds int) (*url.URL, error) {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	u, err := url.Parse(admin)
	if err != nil {
		return nil, fmt.Errorf("bad -admin URL: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bad -admin URL %q: want http://HOST:PORT", admin)
	}
	u = u.JoinPath("debug", "pprof", "profile")
	u.RawQuery = url.Values{"seconds": {strconv.Itoa(seconds)}}.Encode()
	return u, nil
}

func fetchProfile(ctx context.Context, u *url.URL, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Close = true // one request: leave no idle connection behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the profile: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && token == "":
		return nil, errors.New("the admin API wants a token: pass -token-file FILE (or -token TOKEN)")
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errors.New("the admin API refused the token (401 Unauthorized)")
	case resp.StatusCode != http.StatusOK:
		msg := fmt.Sprintf("%s answered %s: %s", u.Redacted(), resp.Status, snippet(body))
		if bytes.Contains(body, []byte("already in use")) {
			// The runtime has one CPU profiler: another pull, or the CPU
			// tripwire, is using it.
			msg += " (another CPU profile is being taken, perhaps by the CPU tripwire; try again when it ends)"
		}
		return nil, errors.New(msg)
	case len(body) > maxProfileBytes:
		return nil, fmt.Errorf("%s sent more than %d MiB, which is no CPU profile", u.Redacted(), maxProfileBytes>>20)
	}
	return body, nil
}

// snippet is the start of a body for an error message.
func snippet(b []byte) string {
	const n = 200
	s := strings.TrimSpace(string(b[:min(len(b), n)]))
	if len(b) > n {
		s += "..."
	}
	return s
}
