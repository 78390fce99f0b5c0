package sniff

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/: the golden hellos,
// the same re-framed into small records, and one input per protocol.

// fuzzCuts is the prefix-check budget per fuzz input: every cut of short
// inputs, a sample of long ones. The property and golden tests check every cut.
const fuzzCuts = 256

func FuzzClientHello(f *testing.F) {
	f.Add([]byte{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		v := checkCuts(t, b, helloVerdict(t), fuzzCuts)
		if v.r != Match {
			return
		}
		info := v.info.(HelloInfo)
		if r, again, err := ClientHello(b[:info.Len]); r != Match || !reflect.DeepEqual(again, info) {
			t.Fatalf("the hello alone gives %v, %+v, %v; want Match, %+v", r, again, err, info)
		}
		if name := []byte(info.ServerName); len(name) > 0 && (len(name) > maxHostName || checkHostName(name, true) != nil && !isIPLiteral(name)) {
			t.Fatalf("matched an invalid host name %q", info.ServerName)
		}
		for _, p := range info.ALPN {
			if len(p) == 0 || len(p) > 255 {
				t.Fatalf("matched an ALPN protocol of %d bytes", len(p))
			}
		}
		for _, ver := range info.Versions {
			if isGREASE(ver) {
				t.Fatalf("returned GREASE version %#04x", ver)
			}
		}
		agreeWithCryptoTLS(t, b[:info.Len], info)
	})
}

// agreeWithCryptoTLS feeds a matched hello to a crypto/tls server. Its parser
// is stricter about extensions sniff only frames (key_share, groups, ...), so
// its refusal proves nothing; but when it accepts, it must have read the same
// name, protocols and versions.
func agreeWithCryptoTLS(t *testing.T, hello []byte, info HelloInfo) {
	t.Helper()
	chi := cryptoTLSHello(hello)
	if chi == nil {
		return
	}
	if chi.ServerName != info.ServerName || !reflect.DeepEqual(chi.SupportedProtos, info.ALPN) {
		t.Fatalf("crypto/tls read %q %q, sniff read %q %q", chi.ServerName, chi.SupportedProtos, info.ServerName, info.ALPN)
	}
	// Without supported_versions crypto/tls expands legacy_version into a
	// range; with it, both report the list minus GREASE.
	var goVers []uint16
	for _, v := range chi.SupportedVersions {
		if !isGREASE(v) {
			goVers = append(goVers, v)
		}
	}
	if (len(goVers) > 0 && goVers[0] != info.Versions[0]) || (len(info.Versions) > 1 && !reflect.DeepEqual(goVers, info.Versions)) {
		t.Fatalf("crypto/tls read versions %x, sniff read %x", goVers, info.Versions)
	}
}

// cryptoTLSHello runs a crypto/tls server handshake over a pipe until its
// GetConfigForClient hook reports the parsed hello, or returns nil when the
// server refuses the bytes.
func cryptoTLSHello(hello []byte) *tls.ClientHelloInfo {
	client, server := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	var wg sync.WaitGroup
	// Writing and draining apart: the server may answer with an alert
	// before it has read everything.
	wg.Go(func() { client.Write(hello) })
	wg.Go(func() { io.Copy(io.Discard, client) })
	var got *tls.ClientHelloInfo
	tls.Server(server, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		got = chi
		return nil, errors.New("seen")
	}}).Handshake()
	server.Close()
	wg.Wait()
	client.Close()
	return got
}

func FuzzHTTP1(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v := checkCuts(t, b, http1Verdict, fuzzCuts)
		if v.r != Match {
			return
		}
		rl := v.info.(RequestLine)
		line := rl.Method + " " + rl.Target + " " + rl.Proto + "\r\n"
		if !bytes.HasPrefix(b, []byte(line)) || len(line) > MaxRequestLine {
			t.Fatalf("matched %+v, which does not start %q", rl, b)
		}
		if len(rl.Method) > maxMethod || strings.ContainsAny(rl.Target, " \r\n\t") {
			t.Fatalf("matched %+v", rl)
		}
		// net/http refuses some targets sniff lets through (bad escapes,
		// CONNECT without authority) but must not read an accepted line
		// differently.
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(line + "Host: h\r\n\r\n")))
		if err == nil && (req.Method != rl.Method || req.RequestURI != rl.Target || req.Proto != rl.Proto) {
			t.Fatalf("net/http read %q %q %q, sniff read %+v", req.Method, req.RequestURI, req.Proto, rl)
		}
	})
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte(h2Preface))
	f.Fuzz(func(t *testing.T, b []byte) {
		v := checkCuts(t, b, detectVerdict, fuzzCuts)
		p := v.info.(Protocol)
		http1, _ := HTTP1(b)
		tls, _, _ := ClientHello(b)
		single := map[Protocol]Result{
			ProtoPROXYv2: prefixOf(b, proxyV2Sig),
			ProtoPROXYv1: prefixOf(b, proxyV1Sig),
			ProtoH2C:     H2Preface(b),
			ProtoHTTP1:   http1,
			ProtoTLS:     tls,
		}
		switch v.r {
		case Match:
			if single[p] != Match {
				t.Fatalf("Detect says %v but its detector says %v", p, single[p])
			}
		case NoMatch:
			for q, r := range single {
				if r != NoMatch || p != ProtoUnknown {
					t.Fatalf("Detect says (%v, NoMatch) but %v says %v", p, q, r)
				}
			}
		case NeedMore:
			undecided := false
			for _, r := range single {
				undecided = undecided || r == NeedMore
			}
			if !undecided || p != ProtoUnknown {
				t.Fatalf("Detect says (%v, NeedMore) with no undecided detector", p)
			}
		}
	})
}
