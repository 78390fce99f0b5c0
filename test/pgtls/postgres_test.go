//go:build linux

package pgtls_test

// A real PostgreSQL server for one test: initdb into a new directory, then
// postgres on a free loopback port, stopped with a fast shutdown when the
// test ends. PostgreSQL refuses to run as root, so when the tests do
// (as here and on CI) both run as the postgres system user that Debian's
// package creates.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
)

// pgUser is the database superuser initdb creates; it logs in with a
// password over SCRAM, as a deployed server would ask.
const pgUser = "edge"

// pgInstall is where an installed PostgreSQL keeps its programs.
type pgInstall struct {
	bindir string // holds initdb and postgres
	psql   string
}

// findPostgres locates initdb and postgres, and psql. pg_config names the
// bindir when it is installed (libpq-dev), but a fresh Debian machine with
// only the server package has just /usr/lib/postgresql/NN/bin, and
// pg_config may describe another version than the installed server, so
// every candidate is checked.
func findPostgres(t *testing.T) pgInstall {
	t.Helper()
	var dirs []string
	if pc := lookPath("pg_config"); pc != "" {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		out, err := exec.CommandContext(ctx, pc, "--bindir").Output()
		cancel()
		if err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	dirs = append(dirs, debianBindirs()...)
	if p := lookPath("postgres"); p != "" {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			inst := pgInstall{bindir: d, psql: filepath.Join(d, "psql")}
			if !isExec(inst.psql) {
				inst.psql = lookPath("psql")
			}
			if inst.psql == "" {
				missing(t, "psql not found (in %s or on PATH)", d)
			}
			return inst
		}
	}
	missing(t, "PostgreSQL server programs initdb and postgres not found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH)")
	return pgInstall{}
}

// debianBindirs lists /usr/lib/postgresql/NN/bin, newest version first.
func debianBindirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		va, vb := version(a), version(b)
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	return dirs
}

// serverCredential is who runs initdb and postgres: nil (the test's own
// user) unless the test runs as root, then the postgres system user.
func serverCredential(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		missing(t, "running as root, and PostgreSQL refuses root, but there is no postgres user to run it as: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("postgres user: %v", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// pgServer is a running postmaster.
type pgServer struct {
	Port     int
	Password string
	dataDir  string
	cmd      *exec.Cmd
	log      *proctest.Output
	done     chan struct{} // closed once the postmaster was reaped
}

// startPostgres initialises a cluster in a new directory and starts it on
// a free loopback port. Cleanup stops it (fast shutdown), fails the test
// unless it exited cleanly with no process of its group left, and removes
// the directory.
func startPostgres(t *testing.T, inst pgInstall) *pgServer {
	t.Helper()
	cred := serverCredential(t)
	// Not t.TempDir: its parents are root's and mode 0700, which the
	// postgres user could not traverse.
	dir, err := os.MkdirTemp("", "edgeproxy-pgtls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // registered first, so runs after the stop
	// The real path, which is what /proc shows as the server's working
	// directory (see inDir).
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(dir, "sock")
	pwFile := filepath.Join(dir, "pwfile")
	password := "pw-" + rand.Text()
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		for _, p := range []string{dir, sockDir, pwFile} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The server's messages in English, so its log can be read.
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C"}
	attrs := func() *syscall.SysProcAttr {
		// SIGQUIT (immediate shutdown) if the test binary dies without
		// cleaning up.
		return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	}

	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	initdb := exec.CommandContext(ctx, filepath.Join(inst.bindir, "initdb"), "-D", data, "-U", pgUser,
		"--auth=scram-sha-256", "--pwfile="+pwFile, "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir, initdb.Env, initdb.SysProcAttr = dir, env, attrs()
	out, err := initdb.CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}

	// postgres cannot be told to bind port 0, so a port is picked by
	// binding one and closing it; another process may take it meanwhile,
	// and then the server is started again on another.
	for attempt := 1; ; attempt++ {
		s := &pgServer{Port: proxytest.DeadPort(t), Password: password, dataDir: data, log: proctest.NewOutput(), done: make(chan struct{})}
		s.cmd = exec.Command(filepath.Join(inst.bindir, "postgres"), "-D", data, "-k", sockDir,
			"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port),
			// A throwaway cluster: durability only slows the test.
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
		s.cmd.Dir, s.cmd.Env, s.cmd.SysProcAttr = dir, env, attrs()
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start postgres: %v", err)
		}
		go func() {
			_ = s.cmd.Wait() // the outcome is read from ProcessState
			close(s.done)
		}()
		switch err := s.awaitReady(readyTimeout); {
		case err == nil:
			if len(inDir(data)) == 0 {
				t.Logf("the postgres processes are not visible in /proc: leftovers will not be detected")
			}
			t.Cleanup(func() {
				if err := s.stop(); err != nil {
					t.Error(err)
				}
				if t.Failed() {
					t.Logf("postgres log:\n%s", s.log)
				}
			})
			return s
		case errors.Is(err, errPortTaken) && attempt < 5:
			continue
		default:
			_ = s.stop()
			t.Fatalf("postgres on port %d: %v\n%s", s.Port, err, s.log)
		}
	}
}

var errPortTaken = errors.New("port taken")

// readyLine is what the postmaster logs once it accepts connections
// (LC_ALL=C keeps it untranslated).
const readyLine = "database system is ready to accept connections"

// awaitReady waits for the ready line in the server's log.
func (s *pgServer) awaitReady(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		text, changed := s.log.Snapshot()
		if strings.Contains(text, readyLine) {
			return nil
		}
		select {
		case <-changed:
		case <-s.done:
			if strings.Contains(s.log.String(), "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("exited before it was ready: %v", s.cmd.ProcessState)
		case <-timer.C:
			return fmt.Errorf("not ready within %v", timeout)
		}
	}
}

// stop asks for a fast shutdown (SIGINT: clients are disconnected, a
// checkpoint is written) and waits for the postmaster, which waits for all
// of its children. It reports an error unless the postmaster was running
// and exited 0 with none of its processes left.
func (s *pgServer) stop() error {
	var errs []error
	select {
	case <-s.done:
		errs = append(errs, fmt.Errorf("postgres exited before it was stopped: %v", s.cmd.ProcessState))
	default:
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			errs = append(errs, errors.New("postgres did not finish a fast shutdown within 15s; killed"))
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if st := s.cmd.ProcessState; !st.Success() {
			errs = append(errs, fmt.Errorf("postgres did not exit cleanly on SIGINT: %v", st))
		}
	}
	if pids := inDir(s.dataDir); len(pids) > 0 {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		errs = append(errs, fmt.Errorf("postgres processes %v outlived the postmaster; killed", pids))
	}
	return errors.Join(errs...)
}

// inDir lists the processes whose working directory is dir. Every
// PostgreSQL process works in its data directory, and its children leave
// the postmaster's process group (they call setsid), so this is how
// leftovers are found.
func inDir(dir string) []int {
	links, _ := filepath.Glob("/proc/[0-9]*/cwd")
	var pids []int
	for _, l := range links {
		if cwd, err := os.Readlink(l); err == nil && cwd == dir {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(l))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
