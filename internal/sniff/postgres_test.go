package sniff

import (
	"encoding/binary"
	"testing"
)

func pgMsg(code uint32, extra ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(extra)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, extra...)
}

func TestPostgres(t *testing.T) {
	startup := append(binary.BigEndian.AppendUint32(nil, 40), 0, 3, 0, 0) // protocol 3.0
	for _, tc := range []struct {
		name string
		b    []byte
		r    Result
		kind PgRequest
	}{
		{"empty", nil, NeedMore, PgUnknown},
		{"ssl", pgMsg(pgSSLCode), Match, PgSSL},
		{"ssl prefix", pgMsg(pgSSLCode)[:6], NeedMore, PgUnknown},
		{"gssenc", pgMsg(pgGSSENCCode), Match, PgGSSENC},
		{"cancel", pgMsg(pgCancelCode, 0, 0, 0, 42, 1, 2, 3, 4), Match, PgCancel},
		{"cancel header only", pgMsg(pgCancelCode, 0, 0, 0, 42, 1, 2, 3, 4)[:8], NeedMore, PgUnknown},
		{"direct tls", []byte{0x16}, Match, PgDirectTLS},
		{"startup (sslmode=disable)", startup, NoMatch, PgUnknown},
		{"startup prefix", startup[:4], NoMatch, PgUnknown},
		{"ssl code, cancel length", pgMsg(pgSSLCode, 0, 0, 0, 0, 0, 0, 0, 0), NoMatch, PgUnknown},
		{"http", []byte("GET / HTTP/1.1\r\n"), NoMatch, PgUnknown},
	} {
		r, kind := Postgres(tc.b)
		if r != tc.r || kind != tc.kind {
			t.Errorf("%s: got %v %v, want %v %v", tc.name, r, kind, tc.r, tc.kind)
		}
	}
}

// FuzzPostgres holds the classifier to the package's contract: no panic,
// and a decision, once made on a prefix, never changes as bytes arrive.
func FuzzPostgres(f *testing.F) {
	f.Add(pgMsg(pgSSLCode))
	f.Add(pgMsg(pgCancelCode, 1, 2, 3, 4, 5, 6, 7, 8))
	f.Add([]byte{0x16, 3, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var decided bool
		var first Result
		var firstKind PgRequest
		for n := 0; n <= len(b); n++ {
			r, kind := Postgres(b[:n])
			if r == Match && kind == PgUnknown || r != Match && kind != PgUnknown {
				t.Fatalf("prefix %x: %v with %v", b[:n], r, kind)
			}
			if decided && (r != first || kind != firstKind) {
				t.Fatalf("prefix %x: %v %v after %v %v on a shorter one", b[:n], r, kind, first, firstKind)
			}
			if !decided && r != NeedMore {
				decided, first, firstKind = true, r, kind
			}
		}
	})
}
