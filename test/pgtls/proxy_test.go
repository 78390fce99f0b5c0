//go:build linux

package pgtls_test

// The proxy in front of the server, and the psql runs that go through it.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

// serverName is the name the proxy's certificate is for, and the host
// verify-full clients ask for (resolved with hostaddr, not DNS).
const serverName = "pg.test"

// proxyConfig is one app with one machine, the PostgreSQL server: public
// port 5432, moved by port_map to a port the kernel picks, runs pg_tls.
// The certificate comes from gen-cert, as the quick start makes one.
const proxyConfig = `
[proxy]
bind = "127.0.0.1"
port_map = { 5432 = 0 }

[admin]
listen = "127.0.0.1:0"

[[certificates]]
cert_file = "cert.pem"
key_file = "key.pem"

[[apps]]
name = "pg"
hostnames = [%q]
  [[apps.services]]
  internal_port = 5432
    [[apps.services.ports]]
    port = 5432
    handlers = ["pg_tls"]
  [[apps.machines]]
  id = "pg1"
  address = "127.0.0.1"
  ports = { 5432 = %d }
`

// pgEnv is a PostgreSQL server with the proxy in front of it.
type pgEnv struct {
	pg    *pgServer
	proxy *proctest.Proc
	// proxyPort is the local port of public port 5432.
	proxyPort int
	psqlBin   string
	// certFile is the proxy's certificate; otherCert one from another,
	// untrusted, issuer.
	certFile, otherCert string
	// psqlEnv is psql's whole environment.
	psqlEnv []string
}

func startEnv(t *testing.T) *pgEnv {
	t.Helper()
	bin := binary(t) // skips in -short mode before anything starts
	inst := findPostgres(t)
	e := &pgEnv{pg: startPostgres(t, inst), psqlBin: inst.psql}

	dir := t.TempDir()
	e.certFile, e.otherCert = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "other.pem")
	genCert(t, bin, e.certFile, filepath.Join(dir, "key.pem"), serverName)
	genCert(t, bin, e.otherCert, filepath.Join(dir, "other-key.pem"), serverName)
	path := filepath.Join(dir, "edgeproxy.toml")
	if err := os.WriteFile(path, fmt.Appendf(nil, proxyConfig, serverName, e.pg.Port), 0o600); err != nil {
		t.Fatal(err)
	}
	lim := proctest.Limits{Lifetime: 5 * time.Minute, Grace: 10 * time.Second}
	e.proxy = proctest.Run(t, lim, "edgeproxy run", bin, "run", "-config", path)
	e.proxy.Await(t, "the listening line of public port 5432", readyTimeout, func(r proctest.Record) bool {
		if r["msg"] == "listening" && r["port"] == float64(5432) {
			e.proxyPort = int(proctest.MustAddr(t, r).Port())
			return true
		}
		return false
	})

	home := t.TempDir()
	e.psqlEnv = []string{
		"PATH=" + os.Getenv("PATH"),
		"LC_ALL=C", // untranslated messages, which the tests match
		// No ~/.pgpass, ~/.psqlrc or ~/.postgresql/root.crt of the user:
		// the last would make sslmode=require verify the certificate.
		"HOME=" + home,
		"PGPASSWORD=" + e.pg.Password,
		// No Kerberos credentials, so psql's default gssencmode=prefer
		// never tries GSSAPI encryption before its SSLRequest.
		"KRB5CCNAME=FILE:" + filepath.Join(home, "no-krb5cc"),
	}
	return e
}

// genCert writes a self-signed certificate for names with the binary's
// gen-cert.
func genCert(t *testing.T, bin, cert, key string, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	args := append([]string{"gen-cert", "-cert", cert, "-key", key}, names...)
	if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("gen-cert: %v\n%s", err, out)
	}
}

// conninfo is a libpq connection string to port (the proxy's or the
// server's) as the test's user, plus extra keyword=value settings.
func (e *pgEnv) conninfo(port int, extra ...string) string {
	return strings.Join(append([]string{"host=127.0.0.1", fmt.Sprintf("port=%d", port),
		"user=" + pgUser, "dbname=postgres", "connect_timeout=5"}, extra...), " ")
}

// psqlResult is what one psql run printed.
type psqlResult struct {
	Stdout, Stderr string
	Err            error
}

func (r psqlResult) String() string {
	return fmt.Sprintf("%v\nstdout:\n%s\nstderr:\n%s", r.Err, r.Stdout, r.Stderr)
}

// psqlArgs are the flags of every run: no psqlrc, never prompt for a
// password, stop at the first error, unaligned output with no headers, no
// command tags.
var psqlArgs = []string{"-X", "-w", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-q"}

// psql runs the psql client on conninfo with args, and stdin (a script,
// when there are no -c args) as its input. It is safe to call from several
// goroutines; a run that outlives clientTimeout is an error.
func (e *pgEnv) psql(conninfo, stdin string, args ...string) psqlResult {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := e.psqlCmd(ctx, conninfo, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("psql did not finish within %v (the proxy hung?): %v", clientTimeout, err)
	}
	return psqlResult{Stdout: out.String(), Stderr: errOut.String(), Err: err}
}

func (e *pgEnv) psqlCmd(ctx context.Context, conninfo string, args ...string) *exec.Cmd {
	all := append(append(append([]string(nil), psqlArgs...), "-d", conninfo), args...)
	cmd := exec.CommandContext(ctx, e.psqlBin, all...)
	cmd.Env = e.psqlEnv
	cmd.WaitDelay = time.Second
	return cmd
}

// mustPsql is psql that fails t unless psql succeeds.
func (e *pgEnv) mustPsql(t *testing.T, conninfo, stdin string, args ...string) string {
	t.Helper()
	r := e.psql(conninfo, stdin, args...)
	if r.Err != nil {
		t.Fatalf("psql %q %q: %v", conninfo, args, r)
	}
	return r.Stdout
}

// quote makes v one value of a connection string.
func quote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
