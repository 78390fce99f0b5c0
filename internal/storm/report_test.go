package storm

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted on purpose
	}
	tests := []struct {
		in   []time.Duration
		want Latency
	}{
		{nil, Latency{}},
		{ms(7), Latency{7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond}},
		// Nearest rank over 1..100 is the value itself.
		{ms(hundred...), Latency{50 * time.Millisecond, 90 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond}},
		// Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
		{ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5), Latency{5 * time.Millisecond, 9 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}},
		{ms(3, 1), Latency{1 * time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond}},
	}
	for _, tt := range tests {
		before := slices.Clone(tt.in)
		if got := Percentiles(tt.in); got != tt.want {
			t.Errorf("Percentiles(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
		if !slices.Equal(before, tt.in) {
			t.Errorf("Percentiles sorted its input")
		}
	}
}

func TestParseShapes(t *testing.T) {
	tests := []struct {
		in   string
		want []ShapeWeight
	}{
		{"all", allShapes(1)},
		{"keepalive", []ShapeWeight{{KeepAlive, 1}}},
		{" cn-junk-hold=3 , keepalive=1", []ShapeWeight{{CNJunkHold, 3}, {KeepAlive, 1}}},
		{"all,cn-junk-rst=0,keepalive=4", []ShapeWeight{
			{CNJunkHold, 1}, {CNJunkFIN, 1}, {CNJunkRST, 0}, {FINMidBody, 1}, {CompleteCN, 1}, {KeepAlive, 4}}},
	}
	for _, tt := range tests {
		got, err := ParseShapes(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseShapes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "nope", "keepalive=x", "keepalive=-1", "keepalive=0", "keepalive=20000",
		"cn-junk-hold=6000,keepalive=6000"} {
		if _, err := ParseShapes(bad); err == nil {
			t.Errorf("ParseShapes(%q): no error", bad)
		}
	}
}

func TestShapeCycleInterleaves(t *testing.T) {
	cycle, err := newShapeCycle([]ShapeWeight{{CNJunkHold, 3}, {KeepAlive, 1}, {CNJunkRST, 0}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Shape{CNJunkHold, CNJunkHold, KeepAlive, CNJunkHold}
	if !slices.Equal(cycle, want) {
		t.Errorf("cycle %v, want %v", cycle, want)
	}
}

func TestErrOutcome(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	tests := []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{opErr(syscall.ECONNREFUSED), Refused},
		{opErr(syscall.ECONNRESET), Reset},
		{opErr(syscall.EPIPE), Reset},
		{opErr(syscall.ENOTCONN), Reset},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, Timeout},
		{io.EOF, ClosedEarly},
		{io.ErrUnexpectedEOF, ClosedEarly},
		{handshakeError{io.EOF}, ClosedEarly},
		{handshakeError{opErr(syscall.ECONNRESET)}, Reset},
		{handshakeError{errors.New("tls: first record does not look like a TLS handshake")}, TLSError},
		{handshakeError{errors.New("anything")}, TLSError},
		{tls.RecordHeaderError{Msg: "bad"}, TLSError},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, TLSError},
		{errors.New("something new"), Other},
	}
	for _, tt := range tests {
		if got := errOutcome(tt.err, ClosedEarly); got != tt.want {
			t.Errorf("errOutcome(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestWriteTextAndJSON(t *testing.T) {
	sr := newShapeReport()
	for i, o := range []Outcome{OK, OK, Reset, Other} {
		sr.add(result{outcome: o, statuses: []int{200}, latency: time.Duration(i+1) * time.Millisecond,
			err: fmt.Errorf("boom %d", i)})
	}
	sr.finish()
	rep := &Report{
		Target: "127.0.0.1:8443", SNI: "app.test", Planned: 4, Started: 4, Completed: 4,
		Elapsed: time.Second, Rate: 4, Shapes: map[Shape]*ShapeReport{CNJunkHold: sr},
		CPUSource: "proc", StormCPU: CPUTimes{0.3, 0.1, 0.4}, StormCPUPercent: 40,
		IdleCPU: CPUTimes{0.01, 0, 0.01}, IdleCPUPercent: 1, IdleWindow: time.Second,
		FDsBefore: 10, FDsAfterStorm: 12, FDsAfter: 10,
		Counters: map[string]float64{"edgeproxy_spin_kills_total": 0},
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"storm against 127.0.0.1:8443 (TLS, SNI app.test)",
		"cn-junk-hold", "ok 2, reset 1, other 1", "200×4", "first other error: boom 3",
		"p50 2ms", "max 4ms", "user 0.30s, system 0.10s", "1.0% of a core",
		"10 before, 12 after the storm, 10 after idle", "edgeproxy_spin_kills_total",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Shapes[CNJunkHold]; got.Outcomes[OK] != 2 || got.Statuses[200] != 4 || got.Latency.Max != 4*time.Millisecond {
		t.Errorf("JSON round trip lost data: %s", js)
	}
}

func TestProgressBar(t *testing.T) {
	got := progressBar(50, 200, 3, 2*time.Second)
	want := "[#######-----------------------] 50/200 conns, 25/s, 3 errors, 2s"
	if got != want {
		t.Errorf("progressBar = %q, want %q", got, want)
	}
	if got := progressBar(300, 200, 0, 0); !strings.HasPrefix(got, "["+strings.Repeat("#", 30)+"]") {
		t.Errorf("overfull bar %q", got)
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}

// Configuration errors come back before any dial.
func TestRunValidatesConfig(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Config{Target: "127.0.0.1:1", Shapes: []ShapeWeight{{"bogus", 1}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown shape") {
		t.Errorf("bogus shape: %v", err)
	}
	_, err = Run(ctx, Config{Target: "127.0.0.1:1", Path: "no-slash"}, nil)
	if err == nil {
		t.Error("path without a slash: no error")
	}
}
