package sniff

import (
	"bytes"
	"reflect"
	"testing"

	"go.uber.org/goleak"
)

// The live-capture tests run crypto/tls clients in goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testHello describes a ClientHello for the table and property tests, so each
// case states the one field it breaks instead of patching bytes at offsets.
type testHello struct {
	version   uint16
	sessionID []byte
	suites    []byte // raw cipher_suites contents
	comp      []byte // raw compression_methods contents
	exts      []testExt
	noExts    bool   // omit the extensions block entirely (TLS 1.0 style)
	trailer   []byte // bytes after the extensions block, inside the body
}

type testExt struct {
	typ  uint16
	data []byte
}

// baseHello is a minimal well-formed TLS 1.3 style hello.
func baseHello(exts ...testExt) testHello {
	return testHello{
		version:   0x0303,
		sessionID: bytes.Repeat([]byte{0xaa}, 32),
		suites:    []byte{0x13, 0x01, 0x13, 0x02},
		comp:      []byte{0},
		exts:      exts,
	}
}

func u16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

// vec8 and vec16 prefix data with its length.
func vec8(data []byte) []byte  { return append([]byte{byte(len(data))}, data...) }
func vec16(data []byte) []byte { return append(u16(len(data)), data...) }

func (h testHello) body() []byte {
	b := u16(int(h.version))
	b = append(b, bytes.Repeat([]byte{0x42}, 32)...)
	b = append(b, vec8(h.sessionID)...)
	b = append(b, vec16(h.suites)...)
	b = append(b, vec8(h.comp)...)
	if !h.noExts {
		var exts []byte
		for _, e := range h.exts {
			exts = append(exts, u16(int(e.typ))...)
			exts = append(exts, vec16(e.data)...)
		}
		b = append(b, vec16(exts)...)
	}
	return append(b, h.trailer...)
}

// message wraps a body in a handshake header of the given type.
func message(typ byte, body []byte) []byte {
	n := len(body)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// records frames msg as handshake records of at most size bytes each.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1)
		out = append(out, u16(n)...)
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// wire is the usual framing: one record holding one ClientHello.
func (h testHello) wire() []byte {
	return records(message(typeClientHello, h.body()), maxRecordLen)
}

func sniExt(names ...string) testExt {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = append(list, vec16([]byte(n))...)
	}
	return testExt{extServerName, vec16(list)}
}

func alpnExt(protos ...string) testExt {
	var list []byte
	for _, p := range protos {
		list = append(list, vec8([]byte(p))...)
	}
	return testExt{extALPN, vec16(list)}
}

func versionsExt(vs ...uint16) testExt {
	var list []byte
	for _, v := range vs {
		list = append(list, u16(int(v))...)
	}
	return testExt{extSupportedVersions, vec8(list)}
}

func rawExt(typ uint16, data ...byte) testExt { return testExt{typ, data} }

// verdict is one detector answer on one prefix, so the prefix checks can be
// shared by every detector.
type verdict struct {
	r    Result
	info any // details that must not change once Match
}

// fataler is the part of testing.TB that rapid.T also has.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// checkPrefixes asserts the monotonic contract on the prefixes of b: a run
// of NeedMore, then either Match with the same details throughout or NoMatch
// throughout. It returns the verdict on b itself.
func checkPrefixes(tb fataler, b []byte, detect func([]byte) verdict) verdict {
	tb.Helper()
	return checkCuts(tb, b, detect, 4096)
}

// checkCuts is checkPrefixes with a budget of detector calls: inputs longer
// than that are checked at every cut of the first half of the budget and at
// evenly spaced cuts after it. Fuzzers use a small budget, because the cost
// per input is what decides how many inputs they try.
func checkCuts(tb fataler, b []byte, detect func([]byte) verdict, budget int) verdict {
	tb.Helper()
	dense, step := len(b), 1
	if len(b) >= budget {
		dense = budget / 2
		step = (len(b)-dense)/(budget/2) + 1
	}
	var first verdict
	decided := -1
	for i := 0; ; {
		v := detect(b[:i])
		switch {
		case decided < 0 && v.r != NeedMore:
			first, decided = v, i
		case decided >= 0 && v.r != first.r:
			tb.Fatalf("prefix %d gives %v after prefix %d gave %v", i, v.r, decided, first.r)
		case decided >= 0 && v.r == Match && !reflect.DeepEqual(v.info, first.info):
			tb.Fatalf("prefix %d matched %+v after prefix %d matched %+v", i, v.info, decided, first.info)
		}
		if i == len(b) {
			return v
		}
		if i < dense {
			i++
		} else {
			i = min(i+step, len(b))
		}
	}
}

// helloVerdict adapts ClientHello to checkPrefixes and checks the invariants
// of every single answer: an error exactly with NoMatch, and a Match that
// consumed no more than it was given.
func helloVerdict(tb fataler) func([]byte) verdict {
	return func(b []byte) verdict {
		r, info, err := ClientHello(b)
		if (err != nil) != (r == NoMatch) {
			tb.Fatalf("ClientHello(% x) = %v with error %v", b, r, err)
		}
		if r == Match && (info.Len > len(b) || len(info.Versions) == 0) {
			tb.Fatalf("ClientHello(% x) matched %+v", b, info)
		}
		return verdict{r, info}
	}
}

func http1Verdict(b []byte) verdict {
	r, line := HTTP1(b)
	return verdict{r, line}
}

func detectVerdict(b []byte) verdict {
	p, r := Detect(b)
	return verdict{r, p}
}
