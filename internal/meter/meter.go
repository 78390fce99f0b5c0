// Package meter counts the bytes a client connection moves on the wire,
// below TLS, and adds them to per-app totals. Counting happens on the
// connection (one uncontended add per read or write, never a shared
// counter); totals are added once, when the connection is settled, so
// apps with many connections do not fight over one cache line.
package meter

import (
	"net"
	"sort"
	"sync"
	"sync/atomic"
)

// Conn counts the bytes read from and written to the connection it wraps.
type Conn struct {
	net.Conn
	in, out atomic.Int64
}

// New wraps c.
func New(c net.Conn) *Conn { return &Conn{Conn: c} }

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in.Add(int64(n))
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.out.Add(int64(n))
	}
	return n, err
}

// Spliceable, SpliceRead and SpliceWrite let the duplex splice beneath
// the meter (iox.Transparent): bytes moved by splice are counted as if
// read and written here.
func (c *Conn) Spliceable() bool { return true }

func (c *Conn) SpliceRead(n int, _ error) error {
	if n > 0 {
		c.in.Add(int64(n))
	}
	return nil
}

func (c *Conn) SpliceWrite(n int) {
	if n > 0 {
		c.out.Add(int64(n))
	}
}

// Bytes returns the bytes read (in) and written (out) so far.
func (c *Conn) Bytes() (in, out int64) { return c.in.Load(), c.out.Load() }

// Unwrap returns the wrapped connection, for layer chains.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// CloseWrite passes a half-close through.
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

// Totals is one app's wire bytes.
type Totals struct{ In, Out atomic.Int64 }

// Apps holds Totals by app name. Apps are created on first use and kept
// (their number is bounded by the config).
type Apps struct{ m sync.Map }

// Add settles a connection's counts into app's totals. Call it once per
// connection, when its app is known and it is done; Settle makes that
// easy to get right.
func (a *Apps) Add(app string, in, out int64) {
	t := a.Totals(app)
	t.In.Add(in)
	t.Out.Add(out)
}

// Totals returns app's totals.
func (a *Apps) Totals(app string) *Totals {
	if v, ok := a.m.Load(app); ok {
		return v.(*Totals)
	}
	v, _ := a.m.LoadOrStore(app, new(Totals))
	return v.(*Totals)
}

// Names lists the apps with totals, sorted.
func (a *Apps) Names() []string {
	var out []string
	a.m.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	sort.Strings(out)
	return out
}

// Settle adds what c counted since its last settlement to app's totals.
// It may be called more than once (for long connections) without double
// counting; calls must not race with each other.
func (c *Conn) Settle(a *Apps, app string, settled *[2]int64) {
	in, out := c.Bytes()
	a.Add(app, in-settled[0], out-settled[1])
	settled[0], settled[1] = in, out
}
