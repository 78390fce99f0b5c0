// Package compress chooses and runs the response compression the proxy
// applies for ports with http_options.compress: which encoding a client
// accepts (Negotiate), which responses are worth compressing
// (Compressible), and pooled encoders that flush when a stream does.
//
// It is pure: no I/O of its own, no clock, no globals; the HTTP core
// decides when to compress and owns the Pools.
package compress

import "github.com/edgeproxy/edgeproxy/internal/h1"

// Encoding is a content coding the proxy can produce.
type Encoding uint8

const (
	None Encoding = iota
	Gzip
	Brotli
	Zstd
	numEncodings
)

// String is the coding's token, as in Content-Encoding.
func (e Encoding) String() string {
	switch e {
	case Gzip:
		return "gzip"
	case Brotli:
		return "br"
	case Zstd:
		return "zstd"
	}
	return "identity"
}

// preference orders the codings a client weighs equally, by what they
// cost at the levels a proxy can afford on every response (writer.go).
// Measured on 64 KiB of markup (BenchmarkCompressedResponse has the
// in-proxy figures): zstd's fastest level takes two thirds of gzip level
// 5's CPU and memory for about 8% more bytes; brotli at quality 4 (in Go)
// makes gzip's size in three times its CPU. So zstd, then gzip; brotli
// only for a client that prefers it by q-value or accepts nothing else.
var preference = [numEncodings]int{None: 0, Brotli: 1, Gzip: 2, Zstd: 3}

// Negotiate picks the coding for a response from the request's
// Accept-Encoding field values (RFC 9110, 12.5.3): the highest q-value
// wins, ties go to the proxy's preference, q=0 refuses a coding, "*"
// stands for every coding not named. Values are parsed leniently: a
// member that does not parse is skipped, never an error, since a client's
// odd header must not fail its request. None when nothing acceptable (an
// absent header means the client did not ask for compression).
func Negotiate(values ...[]byte) Encoding {
	// q in thousandths; -1: not named.
	var q [numEncodings]int
	for i := range q {
		q[i] = -1
	}
	star := -1
	for _, v := range values {
		for len(v) > 0 {
			var member []byte
			member, v = cutComma(v)
			name, weight, ok := parseMember(member)
			if !ok {
				continue
			}
			switch {
			case h1.EqualFold(name, "gzip"), h1.EqualFold(name, "x-gzip"):
				q[Gzip] = max(q[Gzip], weight)
			case h1.EqualFold(name, "br"):
				q[Brotli] = max(q[Brotli], weight)
			case h1.EqualFold(name, "zstd"):
				q[Zstd] = max(q[Zstd], weight)
			case len(name) == 1 && name[0] == '*':
				star = max(star, weight)
			}
		}
	}
	best, bestQ := None, 0
	for e := Gzip; e < numEncodings; e++ {
		w := q[e]
		if w < 0 {
			w = star
		}
		if w <= 0 {
			continue
		}
		if w > bestQ || w == bestQ && preference[e] > preference[best] {
			best, bestQ = e, w
		}
	}
	return best
}

// cutComma splits off the first comma-separated member.
func cutComma(v []byte) (member, rest []byte) {
	for i, c := range v {
		if c == ',' {
			return v[:i], v[i+1:]
		}
	}
	return v, nil
}

// parseMember reads `coding *( OWS ";" OWS param )`, where the only
// parameter that matters is q. The weight is in thousandths, 1000 when
// absent; ok is false for an empty or malformed member.
func parseMember(m []byte) (name []byte, weight int, ok bool) {
	m = trim(m)
	i := 0
	for i < len(m) && m[i] != ';' && m[i] != ' ' && m[i] != '\t' {
		if !h1.IsTchar(m[i]) {
			return nil, 0, false
		}
		i++
	}
	if i == 0 {
		return nil, 0, false
	}
	name, weight = m[:i], 1000
	params := m[i:]
	for len(params) > 0 {
		params = trim(params)
		if len(params) == 0 {
			break
		}
		if params[0] != ';' {
			return nil, 0, false
		}
		params = trim(params[1:])
		var p []byte
		j := 0
		for j < len(params) && params[j] != ';' {
			j++
		}
		p, params = trim(params[:j]), params[j:]
		if len(p) >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=' {
			w, ok := parseQ(p[2:])
			if !ok {
				return nil, 0, false
			}
			weight = w
		}
	}
	return name, weight, true
}

// parseQ reads a qvalue: "0" ["." 0*3DIGIT] or "1" ["." 0*3("0")].
func parseQ(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 5 || v[0] != '0' && v[0] != '1' {
		return 0, false
	}
	w := int(v[0]-'0') * 1000
	if len(v) == 1 {
		return w, true
	}
	if v[1] != '.' {
		return 0, false
	}
	scale := 100
	for _, c := range v[2:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		w += int(c-'0') * scale
		scale /= 10
	}
	if w > 1000 {
		return 0, false
	}
	return w, true
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
