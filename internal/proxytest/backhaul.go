package proxytest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/backhaul"
	"github.com/edgeproxy/edgeproxy/internal/demo"
)

// OnlyFrom is a loopback listener that closes, unread, every connection
// not from one source address: a machine only its worker can reach.
type OnlyFrom struct {
	net.Listener
	src     string
	refused atomic.Int64
}

// ListenOnlyFrom listens on a free loopback port for connections from
// src only, until the test ends.
func ListenOnlyFrom(t testing.TB, src string) *OnlyFrom {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &OnlyFrom{Listener: ln, src: src}
}

func (l *OnlyFrom) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && a.IP.String() == l.src {
			return c, nil
		}
		l.refused.Add(1)
		c.Close()
	}
}

// Port is the listener's port.
func (l *OnlyFrom) Port() int { return l.Addr().(*net.TCPAddr).Port }

// Refused counts the connections closed for their source.
func (l *OnlyFrom) Refused() int64 { return l.refused.Load() }

// PrivateMachine is a demo machine reachable from src only.
func PrivateMachine(t testing.TB, id, src string) *OnlyFrom {
	t.Helper()
	l := ListenOnlyFrom(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { demo.Serve(ctx, l, id, nil); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// FleetCerts makes a fleet CA and certificates for nodes in a directory
// of the test's.
func FleetCerts(t testing.TB, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := backhaul.InitCA(dir, "test fleet", 24*time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := backhaul.IssueNode(dir, dir, n, time.Hour, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// BackhaulKeys are the [fleet] lines naming node's backhaul files in dir.
func BackhaulKeys(dir, node string) string {
	cert, key := backhaul.NodeFiles(dir, node)
	return fmt.Sprintf("backhaul_ca_file = %q\nbackhaul_cert_file = %q\nbackhaul_key_file = %q\n",
		filepath.Join(dir, backhaul.CACertFile), cert, key)
}
