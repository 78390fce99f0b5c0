package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/catalog"
	"github.com/edgeproxy/edgeproxy/internal/perr"
	"github.com/edgeproxy/edgeproxy/internal/upstream"
)

func dialer(intn func(int) int, attempts int) *upstream.Dialer {
	return &upstream.Dialer{Picker: picker(intn, 100*time.Millisecond), Timeout: 2 * time.Second, Attempts: attempts}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassifyDial(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	already := perr.New(perr.InstanceClosed, errors.New("x"))
	tests := []struct {
		name      string
		err       error
		code      perr.Code
		retryable bool
	}{
		{"refused", refused, perr.InstanceRefused, true},
		{"refused wrapped", fmt.Errorf("dialing: %w", refused), perr.InstanceRefused, true},
		{"deadline", context.DeadlineExceeded, perr.ConnectTimeout, true},
		{"net timeout", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, perr.ConnectTimeout, true},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, perr.ConnectFailed, true},
		{"already classified", already, perr.InstanceClosed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upstream.ClassifyDial(tt.err)
			if got.Code != tt.code || got.Retryable != tt.retryable {
				t.Errorf("ClassifyDial(%v) = %s retryable %v, want %s %v", tt.err, got.Code, got.Retryable, tt.code, tt.retryable)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("cause lost: %v does not wrap %v", got, tt.err)
			}
		})
	}
}

// TestConnectRefused dials a loopback port nothing listens on. The dial
// error itself is PC01 and retryable (no byte reached an app); once
// Connect has used its only attempt it keeps the code, so the user sees
// PC01's hint, but no outer loop may retry it further.
func TestConnectRefused(t *testing.T) {
	port := deadPort(t)
	svc := service(t, 0, mach{id: "dead", port: port})
	d := dialer(firstTie, 1)

	_, err := d.Dial(context.Background(), "app", "local", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
	pe := wantCode(t, err, perr.InstanceRefused)
	if !pe.Retryable || pe.Source != perr.SourceUpstream {
		t.Errorf("Dial: PC01 retryable %v source %v, want true upstream", pe.Retryable, pe.Source)
	}

	c, lease, err := d.Connect(context.Background(), svc, netip.AddrPort{})
	if c != nil || lease != nil {
		t.Error("conn or lease returned with an error")
	}
	pe = wantCode(t, err, perr.InstanceRefused)
	if pe.Source != perr.SourceUpstream {
		t.Errorf("Connect: source %v, want upstream", pe.Source)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("cause %v is not ECONNREFUSED", err)
	}
	if got := loadOf(t, svc, "dead"); got != 0 {
		t.Errorf("failed connect left load %d", got)
	}
}

func readID(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from machine: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestConnectRetriesOnLive puts a dead and a live machine on 127.0.0.1,
// told apart only by their ports mapping, and makes either one the first
// choice: Connect must end on the live one, and the dead one's unit must
// have been given back.
func TestConnectRetriesOnLive(t *testing.T) {
	dead, live := deadPort(t), liveMachine(t, "live")
	for _, tt := range []struct {
		name      string
		intn      func(int) int
		firstDead bool
	}{{"dead first", firstTie, true}, {"live first", lastTie, false}} {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, 0, mach{id: "dead", port: dead}, mach{id: "live", port: live})
			var dialed []string
			var mu sync.Mutex
			d := dialer(tt.intn, 2)
			d.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dialed = append(dialed, addr)
				mu.Unlock()
				if _, ok := ctx.Deadline(); !ok {
					t.Error("dial has no deadline: Timeout not applied")
				}
				var nd net.Dialer
				return nd.DialContext(ctx, network, addr)
			}
			c, lease, err := d.Connect(context.Background(), svc, netip.AddrPort{})
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer c.Close()
			if lease.Machine.ID != "live" || lease.Addr != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(live)) {
				t.Errorf("lease on %s at %v, want live at port %d", lease.Machine.ID, lease.Addr, live)
			}
			if got := readID(t, c); got != "live" {
				t.Errorf("connected to %q, want live", got)
			}
			wantDials := 1
			if tt.firstDead {
				wantDials = 2
			}
			if len(dialed) != wantDials {
				t.Errorf("dialed %v, want %d dial(s)", dialed, wantDials)
			}
			if got := loadOf(t, svc, "dead"); got != 0 {
				t.Errorf("dead machine load %d, want 0: its lease was not released", got)
			}
			if got := loadOf(t, svc, "live"); got != 1 {
				t.Errorf("live machine load %d while the connection is held, want 1", got)
			}
			lease.Release()
			if got := loadOf(t, svc, "live"); got != 0 {
				t.Errorf("live machine load %d after release", got)
			}
		})
	}
}

func TestConnectAllDead(t *testing.T) {
	svc := service(t, 0, mach{id: "d1", port: deadPort(t)}, mach{id: "d2", port: deadPort(t)})
	_, lease, err := dialer(firstTie, 3).Connect(context.Background(), svc, netip.AddrPort{})
	if lease != nil {
		t.Error("lease returned with an error")
	}
	// Several failed machines are reported as PM05 carrying the last
	// refusal, never as "no candidate left" (PR03), which would hide why.
	pe := wantCode(t, err, perr.MachineUnreachable)
	if pe.Retryable {
		t.Error("the final error must not invite another retry")
	}
	if inner, ok := perr.As(pe.Err); !ok || inner.Code != perr.InstanceRefused || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not carry the PC01 refusal", err)
	}
	if !strings.Contains(err.Error(), "after 2 attempts") {
		t.Errorf("error %q does not count the 2 attempts made", err)
	}
	for _, id := range []string{"d1", "d2"} {
		if got := loadOf(t, svc, id); got != 0 {
			t.Errorf("%s load %d after failed connects", id, got)
		}
	}
}

func TestConnectAttemptsBound(t *testing.T) {
	ms := []mach{{id: "d1"}, {id: "d2"}, {id: "d3"}, {id: "d4"}}
	for i := range ms {
		ms[i].port = deadPort(t)
	}
	svc := service(t, 0, ms...)
	d := dialer(firstTie, 2)
	var dials int
	d.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	}
	_, _, err := d.Connect(context.Background(), svc, netip.AddrPort{})
	wantCode(t, err, perr.MachineUnreachable)
	if dials != 2 {
		t.Errorf("%d dials, want Attempts = 2", dials)
	}
	if !strings.Contains(err.Error(), "after 2 attempts") {
		t.Errorf("error %q does not count attempts", err)
	}
}

func TestConnectTimeout(t *testing.T) {
	svc := service(t, 0, mach{id: "slow"})
	d := dialer(firstTie, 1)
	d.Timeout = 50 * time.Millisecond
	d.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done() // a machine that never answers the SYN
		return nil, ctx.Err()
	}
	_, _, err := d.Connect(context.Background(), svc, netip.AddrPort{})
	wantCode(t, err, perr.ConnectTimeout)
	if pe := upstream.ClassifyDial(context.DeadlineExceeded); !pe.Retryable {
		t.Error("PC02 must be retryable")
	}
	if got := loadOf(t, svc, "slow"); got != 0 {
		t.Errorf("load %d after timeout", got)
	}
}

// TestRetryStopsOnNonRetryable: once bytes may have reached an app, no
// other machine is tried and the lease is released.
func TestRetryStopsOnNonRetryable(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"coded", perr.New(perr.InstanceClosed, io.ErrUnexpectedEOF)},
		{"plain", io.ErrUnexpectedEOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, 0, mach{id: "a"}, mach{id: "b"})
			calls := 0
			_, lease, err := upstream.Retry(context.Background(), dialer(firstTie, 3), svc, nil, func(l *upstream.Lease) (int, error) {
				calls++
				return 0, tt.err
			})
			if lease != nil || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("lease %v err %v", lease, err)
			}
			if calls != 1 {
				t.Errorf("%d tries, want 1", calls)
			}
			if loadOf(t, svc, "a")+loadOf(t, svc, "b") != 0 {
				t.Error("lease of the failed try not released")
			}
		})
	}
}

func TestRetryReturnsHeldLease(t *testing.T) {
	svc := service(t, 0, mach{id: "a"}, mach{id: "b"})
	var seen []string
	v, lease, err := upstream.Retry(context.Background(), dialer(firstTie, 3), svc, nil, func(l *upstream.Lease) (string, error) {
		seen = append(seen, l.Machine.ID)
		if len(seen) == 1 {
			return "", perr.New(perr.InstanceRefused, syscall.ECONNREFUSED)
		}
		return "ok from " + l.Machine.ID, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if len(seen) != 2 || seen[0] == seen[1] {
		t.Errorf("tried %v, want two different machines", seen)
	}
	if v != "ok from "+lease.Machine.ID || svc.Load(lease.Machine).Value() != 1 {
		t.Errorf("value %q, lease %s load %d", v, lease.Machine.ID, svc.Load(lease.Machine).Value())
	}
}

// TestRetrySkipsCallerFailures: machines the caller already tried (an
// HTTP request whose pinned connection failed) are skipped and count
// against Attempts.
func TestRetrySkipsCallerFailures(t *testing.T) {
	svc := service(t, 0, mach{id: "a"}, mach{id: "b"}, mach{id: "c"})
	failed := []*catalog.Machine{machine(t, svc, "a")}
	var seen []string
	_, _, err := upstream.Retry(context.Background(), dialer(firstTie, 2), svc, &upstream.Want{Exclude: failed, Attempted: len(failed)}, func(l *upstream.Lease) (int, error) {
		seen = append(seen, l.Machine.ID)
		return 0, perr.New(perr.InstanceRefused, syscall.ECONNREFUSED)
	})
	if len(seen) != 1 || seen[0] == "a" {
		t.Errorf("tried %v, want one machine other than a", seen)
	}
	wantCode(t, err, perr.MachineUnreachable)
	if len(failed) != 1 || failed[0].ID != "a" {
		t.Errorf("caller's list changed: %v", failed)
	}
}

// TestConnectClientGone: a caller whose context is already cancelled is a
// client that left. Its failure is the client's (PH03), is not retried on
// other machines, and must not be blamed on the app (PM05).
func TestConnectClientGone(t *testing.T) {
	live := liveMachine(t, "live")
	svc := service(t, 0, mach{id: "a", port: live}, mach{id: "b", port: live}, mach{id: "c", port: live})
	d := dialer(firstTie, 3)
	var dials int
	d.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, lease, err := d.Connect(ctx, svc, netip.AddrPort{})
	if err == nil {
		c.Close()
		lease.Release()
		t.Fatal("Connect succeeded with a cancelled context")
	}
	for _, m := range svc.App.Machines {
		if got := svc.Load(m).Value(); got != 0 {
			t.Errorf("%s load %d", m.ID, got)
		}
	}
	pe, _ := perr.As(err)
	if pe == nil || pe.Code != perr.ClientClosed || dials > 1 {
		t.Errorf("cancelled caller got %v after %d dial(s); want PH03 after at most 1", err, dials)
	}
}

// TestDialerZeroAttempts: a Dialer built without Attempts (zero value)
// must fail cleanly rather than crash the connection's goroutine (it
// dereferenced a nil error before 3c3978f).
func TestDialerZeroAttempts(t *testing.T) {
	svc := service(t, 0, mach{id: "a", port: deadPort(t)})
	d := dialer(firstTie, 0)
	var err error
	panicked := func() (p any) {
		defer func() { p = recover() }()
		_, _, err = d.Connect(context.Background(), svc, netip.AddrPort{})
		return nil
	}()
	if panicked != nil {
		t.Fatalf("Connect with Attempts 0 panicked: %v", panicked)
	}
	if err == nil {
		t.Error("Connect with no attempts succeeded")
	}
}
