package sniff

import (
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

const (
	hostChars  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	tcharChars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// stringOf draws a string of n to m bytes from chars.
func stringOf(chars string, n, m int) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		idx := rapid.SliceOfN(rapid.IntRange(0, len(chars)-1), n, m).Draw(t, "idx")
		var b strings.Builder
		for _, i := range idx {
			b.WriteByte(chars[i])
		}
		return b.String()
	})
}

// genHello draws a valid ClientHello with its expected info (Len unset).
func genHello(t *rapid.T) (testHello, HelloInfo) {
	h := baseHello()
	h.version = rapid.SampledFrom([]uint16{0x0301, 0x0302, 0x0303}).Draw(t, "legacy")
	h.sessionID = rapid.SliceOfN(rapid.Byte(), 0, 32).Draw(t, "session_id")
	h.suites = rapid.SliceOfN(rapid.Byte(), 1, 20).Draw(t, "suites")
	h.suites = h.suites[:len(h.suites)&^1]
	if len(h.suites) == 0 {
		h.suites = []byte{0x13, 0x01}
	}
	want := HelloInfo{Versions: []uint16{h.version}}

	var exts []testExt
	if rapid.Bool().Draw(t, "sni") {
		labels := rapid.SliceOfN(stringOf(hostChars, 1, 63), 1, 3).Draw(t, "labels")
		want.ServerName = strings.Join(labels, ".")
		exts = append(exts, sniExt(want.ServerName))
	}
	if rapid.Bool().Draw(t, "alpn") {
		want.ALPN = rapid.SliceOfN(rapid.StringN(1, 20, 20), 1, 4).Draw(t, "protos")
		exts = append(exts, alpnExt(want.ALPN...))
	}
	if rapid.Bool().Draw(t, "versions") {
		sent := rapid.SliceOfN(rapid.SampledFrom([]uint16{0x0304, 0x0303, 0x0302, 0x1a1a, 0xfafa, 0x7f1c}), 1, 6).Draw(t, "sent")
		sent = append(sent, rapid.SampledFrom([]uint16{0x0304, 0x0303}).Draw(t, "real"))
		want.Versions = nil
		for _, v := range sent {
			if !isGREASE(v) {
				want.Versions = append(want.Versions, v)
			}
		}
		exts = append(exts, versionsExt(sent...))
	}
	// Unknown extensions with distinct types, anywhere in the list.
	types := rapid.SliceOfNDistinct(rapid.Uint16Range(44, 0xffff), 0, 6, rapid.ID).Draw(t, "types")
	for _, typ := range types {
		exts = append(exts, testExt{typ, rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "data")})
	}
	h.exts = rapid.Permutation(exts).Draw(t, "order")
	return h, want
}

// TestClientHelloProperty: any valid hello, framed in records of any size
// and followed by anything, matches with exactly its own fields, and every
// cut before its end is NeedMore.
func TestClientHelloProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h, want := genHello(t)
		size := rapid.OneOf(rapid.IntRange(1, 16), rapid.IntRange(17, maxRecordLen)).Draw(t, "record size")
		wire := records(message(typeClientHello, h.body()), size)
		want.Len = len(wire)
		in := append(wire, rapid.SliceOfN(rapid.Byte(), 0, 16).Draw(t, "after")...)
		v := checkPrefixes(t, in, helloVerdict(t))
		if v.r != Match || !reflect.DeepEqual(v.info, want) {
			_, _, err := ClientHello(in)
			t.Fatalf("ClientHello = %v %+v (%v), want Match %+v", v.r, v.info, err, want)
		}
	})
}

// invalidLineByte draws a byte no position of a request line accepts
// (controls other than CR and LF, DEL, and non-ASCII).
func invalidLineByte() *rapid.Generator[byte] {
	return rapid.OneOf(rapid.ByteRange(0, 0x1f), rapid.ByteRange(0x7f, 0xff)).
		Filter(func(b byte) bool { return b != '\r' && b != '\n' })
}

// visibleASCII is every byte a request-target may hold.
func visibleASCII() string {
	var b strings.Builder
	for c := byte('!'); c <= '~'; c++ {
		b.WriteByte(c)
	}
	return b.String()
}

// TestHTTP1Property: a request line built from the grammar matches with its
// parts; the same line with one invalid byte inserted anywhere is NoMatch,
// decided exactly at that byte.
func TestHTTP1Property(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := RequestLine{
			Method: stringOf(tcharChars, 1, maxMethod).Draw(t, "method"),
			Target: stringOf(visibleASCII(), 1, 300).Draw(t, "target"),
			Proto:  "HTTP/1." + stringOf("0123456789", 1, 1).Draw(t, "minor"),
		}
		line := want.Method + " " + want.Target + " " + want.Proto + "\r\n"
		rest := rapid.SliceOfN(rapid.Byte(), 0, 20).Draw(t, "rest")
		v := checkPrefixes(t, append([]byte(line), rest...), http1Verdict)
		if v.r != Match || v.info != want {
			t.Fatalf("HTTP1(%q) = %v %+v, want Match %+v", line, v.r, v.info, want)
		}

		at := rapid.IntRange(0, len(line)-1).Draw(t, "at")
		bad := []byte(line[:at] + string(invalidLineByte().Draw(t, "byte")) + line[at:])
		if r, _ := HTTP1(bad[:at]); r != NeedMore {
			t.Fatalf("HTTP1(%q) = %v before the bad byte, want NeedMore", bad[:at], r)
		}
		if r, _ := HTTP1(bad[:at+1]); r != NoMatch {
			t.Fatalf("HTTP1(%q) = %v at the bad byte, want NoMatch", bad[:at+1], r)
		}
	})
}

// TestDetectProperty: each protocol's opening, followed by anything, is
// detected as that protocol.
func TestDetectProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var in []byte
		want := rapid.SampledFrom([]Protocol{ProtoTLS, ProtoHTTP1, ProtoH2C, ProtoPROXYv1, ProtoPROXYv2}).Draw(t, "protocol")
		switch want {
		case ProtoTLS:
			h, _ := genHello(t)
			in = records(message(typeClientHello, h.body()), rapid.IntRange(1, maxRecordLen).Draw(t, "record size"))
		case ProtoHTTP1:
			in = []byte(stringOf(tcharChars, 1, maxMethod).Draw(t, "method") + " /" + stringOf(hostChars, 0, 20).Draw(t, "path") + " HTTP/1.1\r\n")
		case ProtoH2C:
			in = []byte(h2Preface)
		case ProtoPROXYv1:
			in = []byte(proxyV1Sig)
		case ProtoPROXYv2:
			in = []byte(proxyV2Sig)
		}
		in = append(in, rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "after")...)
		v := checkPrefixes(t, in, detectVerdict)
		if v.r != Match || v.info != want {
			t.Fatalf("Detect(%q) = %v %v, want Match %v", in, v.info, v.r, want)
		}
	})
}
