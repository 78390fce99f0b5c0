package backhaul

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/perr"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, tg := range []Target{
		{App: "web", Machine: "m1", Port: 8080, Client: netip.MustParseAddrPort("203.0.113.7:40000")},
		{App: "a-b.c", Machine: "0123456789abcdef", Port: 1, Client: netip.MustParseAddrPort("[2001:db8::1]:65535")},
	} {
		line := AppendHeader(nil, tg)
		if line[len(line)-1] != '\n' || bytes.Count(line, []byte("\n")) != 1 {
			t.Fatalf("%q: not one line", line)
		}
		got, err := ParseHeader(line[:len(line)-1])
		if err != nil || got != tg {
			t.Errorf("%+v: parsed back as %+v, %v", tg, got, err)
		}
	}
}

func TestHeaderRefusals(t *testing.T) {
	for _, line := range []string{
		"", "EPS1", "EPS2 web m1 8080 1.2.3.4:5", "EPS1 web m1 8080", "EPS1 web m1 0 1.2.3.4:5",
		"EPS1 web m1 65536 1.2.3.4:5", "EPS1 web m1 8080 1.2.3.4", "EPS1 web m1 8080 1.2.3.4:5 extra",
		"EPS1  m1 8080 1.2.3.4:5", "EPS1 w\x00b m1 8080 1.2.3.4:5", "EPS1 web m1 +80 1.2.3.4:5",
	} {
		if _, err := ParseHeader([]byte(line)); err == nil {
			t.Errorf("%q accepted", line)
		}
	}
}

func TestAnswers(t *testing.T) {
	if err := ParseAnswer([]byte("OK"), "w1"); err != nil {
		t.Fatal(err)
	}
	in := perr.New(perr.InstanceRefused, errors.New("dial tcp 10.0.0.2:8080: connect: connection refused\nsecond line"))
	line := AppendAnswer(nil, in)
	if bytes.Count(line, []byte("\n")) != 1 || len(line) > MaxLine {
		t.Fatalf("answer %q: not one bounded line", line)
	}
	err := ParseAnswer(line[:len(line)-1], "w1")
	pe, ok := perr.As(err)
	if !ok || pe.Code != perr.InstanceRefused || !pe.Retryable {
		t.Fatalf("got %v, want a retryable PC01", err)
	}
	for _, bad := range []string{"ERR PZ99 1 what", "NOPE", "ERR"} {
		if pe, ok := perr.As(ParseAnswer([]byte(bad), "w1")); !ok || pe.Code != perr.BackhaulProtocol {
			t.Errorf("%q: got %v, want PB03", bad, pe)
		}
	}
}

// FuzzParseHeader: whatever an edge sends, the worker's parser returns a
// target that writes back as the same line, or an error; never a panic.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("EPS1 web m1 8080 203.0.113.7:40000"))
	f.Add([]byte("EPS1 a b 1 [::1]:2"))
	f.Fuzz(func(t *testing.T, line []byte) {
		tg, err := ParseHeader(line)
		if err != nil {
			return
		}
		again, err := ParseHeader(bytes.TrimSuffix(AppendHeader(nil, tg), []byte("\n")))
		if err != nil || again != tg {
			t.Fatalf("%q: %+v does not survive a round trip (%+v, %v)", line, tg, again, err)
		}
	})
}

// FuzzParseAnswer: an answer parses to nil or a registered code.
func FuzzParseAnswer(f *testing.F) {
	f.Add([]byte("OK"))
	f.Add([]byte("ERR PC01 1 refused"))
	f.Fuzz(func(t *testing.T, line []byte) {
		err := ParseAnswer(line, "w1")
		if err == nil {
			return
		}
		if _, ok := perr.As(err); !ok {
			t.Fatalf("%q: an error without a code: %v", line, err)
		}
	})
}
