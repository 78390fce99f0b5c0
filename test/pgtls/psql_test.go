//go:build linux

package pgtls_test

// The real psql client against a real PostgreSQL server through the pg_tls
// handler. One server and one proxy serve all subtests, which keeps the
// suite within seconds.

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/proctest"
)

func TestPsqlThroughPgTLS(t *testing.T) {
	e := startEnv(t)
	t.Logf("postgres on 127.0.0.1:%d, pg_tls on 127.0.0.1:%d", e.pg.Port, e.proxyPort)

	t.Run("sslmode=require", func(t *testing.T) {
		out := e.mustPsql(t, e.conninfo(e.proxyPort, "sslmode=require"), "",
			"-c", "select 'hello ' || current_user",
			"-c", `\conninfo`,
			"-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || lines[0] != "hello "+pgUser {
			t.Fatalf("output %q, want the greeting, two lines of \\conninfo and the backend's ssl column", out)
		}
		// The client's leg is TLS, as psql itself reports...
		if !strings.HasPrefix(lines[2], "SSL connection (protocol: TLSv1.3,") {
			t.Errorf(`\conninfo says %q, want an SSL connection with TLSv1.3`, lines[2])
		}
		// ...while the server saw plain text: the proxy terminated TLS,
		// so pg_stat_ssl cannot be what proves the client's leg.
		if lines[3] != "f" {
			t.Errorf("pg_stat_ssl.ssl of the backend is %q, want f (the proxy's leg to the server is plain)", lines[3])
		}
	})

	t.Run("sslmode=verify-full", func(t *testing.T) {
		// The name the certificate is for, at the proxy's address: libpq
		// sends it as SNI and checks it against the certificate.
		ci := e.conninfo(e.proxyPort, "host="+serverName, "hostaddr=127.0.0.1",
			"sslmode=verify-full", "sslrootcert="+quote(e.certFile))
		out := e.mustPsql(t, ci, "", "-c", "select inet_server_port()", "-c", `\conninfo`)
		if want := strconv.Itoa(e.pg.Port) + "\n"; !strings.HasPrefix(out, want) {
			t.Errorf("output %q, want the server's port %s first", out, want)
		}
		if !strings.Contains(out, `on host "`+serverName+`"`) || !strings.Contains(out, "SSL connection (protocol: TLSv1.3,") {
			t.Errorf(`\conninfo says %q, want an SSL connection to %s`, out, serverName)
		}
	})

	t.Run("verify-full refuses a certificate from another issuer", func(t *testing.T) {
		ci := e.conninfo(e.proxyPort, "host="+serverName, "hostaddr=127.0.0.1",
			"sslmode=verify-full", "sslrootcert="+quote(e.otherCert))
		r := e.psql(ci, "", "-c", "select 1")
		if r.Err == nil || !strings.Contains(r.Stderr, "certificate verify failed") {
			t.Fatalf("psql trusting another certificate: %v; want a failed verification", r)
		}
	})

	t.Run("verify-full refuses a name the certificate lacks", func(t *testing.T) {
		ci := e.conninfo(e.proxyPort, "sslmode=verify-full", "sslrootcert="+quote(e.certFile))
		r := e.psql(ci, "", "-c", "select 1")
		if r.Err == nil || !strings.Contains(r.Stderr, `does not match host name "127.0.0.1"`) {
			t.Fatalf("psql to 127.0.0.1 with a certificate for %s: %v; want a host name mismatch", serverName, r)
		}
	})

	t.Run("sslmode=prefer uses TLS", func(t *testing.T) {
		out := e.mustPsql(t, e.conninfo(e.proxyPort, "sslmode=prefer"), "", "-c", `\conninfo`)
		if !strings.Contains(out, "SSL connection (protocol: TLSv1.3,") {
			t.Errorf(`\conninfo says %q, want an SSL connection`, out)
		}
	})

	t.Run("sslmode=disable is refused", func(t *testing.T) {
		// The server itself takes plain connections, so a refusal comes
		// from the proxy.
		if out := e.mustPsql(t, e.conninfo(e.pg.Port, "sslmode=disable"), "", "-c", "select 1"); out != "1\n" {
			t.Fatalf("control, straight to the server: output %q, want 1", out)
		}
		r := e.psql(e.conninfo(e.proxyPort, "sslmode=disable"), "", "-c", "select 1")
		if r.Err == nil || r.Stdout != "" {
			t.Fatalf("psql with sslmode=disable through pg_tls: %v; want it refused", r)
		}
		if !strings.Contains(r.Stderr, "server closed the connection unexpectedly") {
			t.Errorf("psql's error %q, want the connection closed", r.Stderr)
		}
		e.proxy.Await(t, "the proxy's log of a client without SSLRequest", 5*time.Second, func(r proctest.Record) bool {
			return r["msg"] == "pg_tls: no SSLRequest"
		})
	})

	t.Run("session", func(t *testing.T) {
		// Statements, a transaction and its results, in one session.
		const script = `
create table items (id int primary key, name text not null);
insert into items values (1, 'one'), (2, 'two');
insert into items select g, 'n' || g from generate_series(3, 5) g;
begin;
update items set name = upper(name) where id <= 2;
delete from items where id = 4;
commit;
begin;
insert into items values (6, 'rolled back');
rollback;
select id, name from items order by id;
select count(*) from items;
`
		out := e.mustPsql(t, e.conninfo(e.proxyPort, "sslmode=require"), script)
		if want := "1|ONE\n2|TWO\n3|n3\n5|n5\n4\n"; out != want {
			t.Fatalf("session printed %q, want %q", out, want)
		}
	})

	t.Run("large result", func(t *testing.T) {
		const rows = 100_000
		out := e.mustPsql(t, e.conninfo(e.proxyPort, "sslmode=require"), "",
			"-c", fmt.Sprintf("select g, md5(g::text) from generate_series(1, %d) g", rows))
		var want strings.Builder
		for g := 1; g <= rows; g++ {
			s := strconv.Itoa(g)
			fmt.Fprintf(&want, "%s|%x\n", s, md5.Sum([]byte(s)))
		}
		if out != want.String() {
			t.Fatalf("got %d bytes in %d lines, want %d bytes in %d lines, the same", len(out), strings.Count(out, "\n"),
				want.Len(), rows)
		}
	})

	t.Run("large upload", func(t *testing.T) {
		// COPY FROM STDIN: the client sends megabytes, the server checks.
		const rows = 100_000
		var script strings.Builder
		script.WriteString("create table blobs (id int primary key, v text not null);\ncopy blobs from stdin;\n")
		all := md5.New()
		total := 0
		for id := 1; id <= rows; id++ {
			sum := sha256.Sum256([]byte(strconv.Itoa(id)))
			v := hex.EncodeToString(sum[:])
			fmt.Fprintf(&script, "%d\t%s\n", id, v)
			all.Write([]byte(v))
			total += len(v)
		}
		script.WriteString("\\.\nselect count(*), sum(length(v)), md5(string_agg(v, '' order by id)) from blobs;\n")
		out := e.mustPsql(t, e.conninfo(e.proxyPort, "sslmode=require"), script.String())
		if want := fmt.Sprintf("%d|%d|%x\n", rows, total, all.Sum(nil)); out != want {
			t.Fatalf("after uploading %d bytes the server counts %q, want %q", script.Len(), out, want)
		}
	})

	t.Run("concurrent clients", func(t *testing.T) {
		const clients = 10
		results := make([]psqlResult, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				// Each holds its session a moment, so they overlap.
				q := fmt.Sprintf("with s as (select pg_sleep(0.3)) select pg_backend_pid(), %d, sum(g) from generate_series(1, %d) g, s", i, (i+1)*1000)
				results[i] = e.psql(e.conninfo(e.proxyPort, "sslmode=require"), "", "-c", q)
			})
		}
		wg.Wait()
		var pids []string
		for i, r := range results {
			n := (i + 1) * 1000
			f := strings.Split(strings.TrimSpace(r.Stdout), "|")
			if r.Err != nil || len(f) != 3 || f[1] != strconv.Itoa(i) || f[2] != strconv.Itoa(n*(n+1)/2) {
				t.Errorf("client %d: %v; want its number and the sum 1..%d", i, r, n)
				continue
			}
			pids = append(pids, f[0])
		}
		slices.Sort(pids)
		if len(slices.Compact(pids)) != len(pids) {
			t.Errorf("backend pids %v: clients shared a session", pids)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		if err := e.cancelQuery(e.pg.Port); err != nil {
			t.Fatalf("control, straight to the server: %v", err)
		}
		// psql (libpq before 17) sends its CancelRequest on a new,
		// unencrypted connection; pg_tls forwards it to the machines.
		if err := e.cancelQuery(e.proxyPort); err != nil {
			t.Fatalf("through pg_tls: %v", err)
		}
	})
}

// cancelQuery starts a long query through port, interrupts psql once the
// server runs it (as Ctrl-C would), and reports an error unless the query
// was cancelled. The server is watched and cleaned up directly, never
// through the proxy.
func (e *pgEnv) cancelQuery(port int) error {
	app := fmt.Sprintf("pgtls-cancel-%d", port)
	direct := e.conninfo(e.pg.Port, "sslmode=disable")
	count := fmt.Sprintf("select count(*) from pg_stat_activity where application_name = '%s' and state = 'active'", app)
	defer e.psql(direct, "", "-c", fmt.Sprintf("select pg_terminate_backend(pid) from pg_stat_activity where application_name = '%s'", app))

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := e.psqlCmd(ctx, e.conninfo(port, "sslmode=prefer", "application_name="+app), "-c", "select pg_sleep(30)")
	stderr := proctest.NewOutput() // read while psql runs
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.psql(direct, "", "-c", count)
		if r.Err != nil {
			return fmt.Errorf("watching the server: %v", r)
		}
		if strings.TrimSpace(r.Stdout) == "1" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the query never ran: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred wait
		if !strings.Contains(stderr.String(), "canceling statement due to user request") {
			return fmt.Errorf("psql exited (%v) without the query cancelled: %s", err, stderr.String())
		}
		return nil
	case <-time.After(3 * time.Second):
		return fmt.Errorf("the query still ran 3s after Ctrl-C; psql said %q", stderr.String())
	}
}
