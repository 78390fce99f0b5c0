package fleet

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// Embedded is a NATS server with JetStream run inside this process.
type Embedded struct {
	srv *server.Server
}

// readyTimeout bounds the embedded server's start.
const readyTimeout = 10 * time.Second

// StartEmbedded starts the server [fleet] describes, with its JetStream
// store under the data directory. resolve turns the config's relative
// paths into real ones.
func StartEmbedded(f *config.Fleet, resolve func(string) string) (*Embedded, error) {
	host, port, err := splitHostPort(f.Listen)
	// Port 0 means "the default" to nats-server; here, as everywhere
	// in edgeproxy, it means "any free port".
	port = anyPort(port)
	if err != nil {
		return nil, fmt.Errorf("fleet.listen: %w", err)
	}
	opts := &server.Options{
		ServerName: f.Node,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(resolve(f.DataDir), "jetstream"),
		// The proxy owns the process's signals and its log.
		NoSigs: true,
		NoLog:  true,
	}
	creds, err := readCredentials(f, resolve)
	if err != nil {
		return nil, err
	}
	opts.Username, opts.Password, opts.Authorization = creds.user, creds.password, creds.token
	if f.ClusterListen != "" {
		ch, cp, err := splitHostPort(f.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("fleet.cluster_listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: f.ClusterName, Host: ch, Port: anyPort(cp),
			Username: creds.user, Password: creds.password}
		for _, r := range f.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("fleet.routes: %q: %w", r, err)
			}
			if creds.user != "" {
				u.User = url.UserPassword(creds.user, creds.password)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if port > 0 {
		// Fail at once, with the reason, when the port is taken (another
		// process of this node's, during a handover): the server itself
		// would only log it and never become ready.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server: %w", err)
		}
		ln.Close()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server not ready within %v (is %s free?)", readyTimeout, f.Listen)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is where this process's clients reach the server.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Close stops the server.
func (e *Embedded) Close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return h, n, nil
}

// credentials are read from files, never from the config text, and never
// logged: errors name the file, not its contents.
type credentials struct {
	user, password, token string
}

func readCredentials(f *config.Fleet, resolve func(string) string) (credentials, error) {
	var c credentials
	read := func(key, path string, into *string) error {
		if path == "" {
			return nil
		}
		b, err := os.ReadFile(resolve(path))
		if err != nil {
			return fmt.Errorf("fleet.%s: %w", key, err)
		}
		*into = strings.TrimSpace(string(b))
		if *into == "" {
			return fmt.Errorf("fleet.%s: %s is empty", key, path)
		}
		return nil
	}
	err := errors.Join(read("user_file", f.UserFile, &c.user), read("password_file", f.PasswordFile, &c.password),
		read("token_file", f.TokenFile, &c.token))
	return c, err
}

// ConnectOnce connects for a command: it fails at once when the fleet
// cannot be reached, instead of retrying for ever as a node does.
func ConnectOnce(f *config.Fleet, resolve func(string) string) (*nats.Conn, error) {
	return connect(f, resolve, nil, false)
}

// Connect opens this node's connection to the fleet's NATS: the URLs of
// [fleet], or the embedded server. It keeps reconnecting for ever, with
// backoff: a fleet that is down makes the catalog stale, it does not end
// the proxy.
func Connect(f *config.Fleet, resolve func(string) string, emb *Embedded) (*nats.Conn, error) {
	return connect(f, resolve, emb, true)
}

func connect(f *config.Fleet, resolve func(string) string, emb *Embedded, node bool) (*nats.Conn, error) {
	creds, err := readCredentials(f, resolve)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name("edgeproxy " + f.Node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(node),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
	}
	switch {
	case creds.token != "":
		opts = append(opts, nats.Token(creds.token))
	case creds.user != "":
		opts = append(opts, nats.UserInfo(creds.user, creds.password))
	case f.CredsFile != "":
		opts = append(opts, nats.UserCredentials(resolve(f.CredsFile)))
	}
	if f.CAFile != "" {
		opts = append(opts, nats.RootCAs(resolve(f.CAFile)))
	}
	if f.CertFile != "" {
		opts = append(opts, nats.ClientCert(resolve(f.CertFile), resolve(f.KeyFile)))
	}
	urls := strings.Join(f.URLs, ",")
	if emb != nil {
		urls = emb.ClientURL()
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the fleet's NATS: %w", err)
	}
	return nc, nil
}

// anyPort turns port 0 into nats-server's "pick a free port".
func anyPort(p int) int {
	if p == 0 {
		return server.RANDOM_PORT
	}
	return p
}
