package sniff

import "encoding/binary"

// PgRequest is the first message a PostgreSQL client sends on a pg_tls
// port, as far as the proxy cares.
type PgRequest int

const (
	PgUnknown   PgRequest = iota // none of the below (with NoMatch) or undecided
	PgSSL                        // SSLRequest: answer 'S', TLS follows
	PgGSSENC                     // GSSENCRequest: answer 'N', the client asks again
	PgCancel                     // CancelRequest: 16 bytes, no answer, no TLS
	PgDirectTLS                  // a TLS record: sslnegotiation=direct (PostgreSQL 17)
)

// The request codes of PostgreSQL's protocol: 1234 in the high 16 bits,
// then 5679, 5680 and 5678.
const (
	pgSSLCode    = 80877103
	pgGSSENCCode = 80877104
	pgCancelCode = 80877102
	// PgCancelLen is the whole CancelRequest: length, code, process id
	// and secret key.
	PgCancelLen = 16
	// PgRequestLen is SSLRequest's and GSSENCRequest's length.
	PgRequestLen = 8
)

// Postgres classifies the first bytes of a pg_tls connection. Match comes
// with a complete message: 8 bytes for SSLRequest and GSSENCRequest, 16
// for CancelRequest, 1 for a TLS handshake record (whose ClientHello is
// then sniffed as on any TLS port). Anything else, a plain StartupMessage
// included (sslmode=disable), is NoMatch.
func Postgres(b []byte) (Result, PgRequest) {
	if len(b) == 0 {
		return NeedMore, PgUnknown
	}
	if b[0] == recordTypeHandshake {
		return Match, PgDirectTLS
	}
	if len(b) < PgRequestLen {
		// A length prefix can only be 8 or 16 here: its first three
		// bytes are zero.
		for _, c := range b[:min(len(b), 3)] {
			if c != 0 {
				return NoMatch, PgUnknown
			}
		}
		if len(b) > 3 && b[3] != PgRequestLen && b[3] != PgCancelLen {
			return NoMatch, PgUnknown
		}
		// Every code starts with 1234 (0x04d2).
		if len(b) > 4 && b[4] != 0x04 || len(b) > 5 && b[5] != 0xd2 {
			return NoMatch, PgUnknown
		}
		return NeedMore, PgUnknown
	}
	n, code := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	switch {
	case n == PgRequestLen && code == pgSSLCode:
		return Match, PgSSL
	case n == PgRequestLen && code == pgGSSENCCode:
		return Match, PgGSSENC
	case n == PgCancelLen && code == pgCancelCode:
		if len(b) < PgCancelLen {
			return NeedMore, PgUnknown
		}
		return Match, PgCancel
	}
	return NoMatch, PgUnknown
}
