package httpproxy

import (
	"bytes"

	"github.com/edgeproxy/edgeproxy/internal/compress"
	"github.com/edgeproxy/edgeproxy/internal/h1"
)

// compressPlan is what http_options.compress does to one response.
type compressPlan struct {
	// enc is the coding the body is sent in (None: as the machine sent it).
	enc compress.Encoding
	// vary: the response could have been compressed, so its form depends
	// on Accept-Encoding and caches must know it.
	vary bool
}

// compression decides a response's plan. It reads r.Head, so it runs
// before the head is released. A response is compressed only when the
// port asks for it, the client accepts a coding the proxy has, and the
// response is one a compressor may touch and gains from: not already
// encoded, not no-transform, not a range, not empty or tiny, and of a
// type that compresses. A worker answering an edge (relayTo set) passes
// the machine's response on as it is: the edge, which answers the client
// and writes the response's fields, compresses.
func (x *Exchange) compression(r *upResponse, bodyless bool) compressPlan {
	if x.relayTo != nil || !x.entry().HTTP.Compress || r.Body == nil || bodyless {
		return compressPlan{}
	}
	if r.Status < 200 || r.Status == 204 || r.Status == 206 || r.Status == 304 {
		return compressPlan{}
	}
	if r.Length >= 0 && (r.Length == 0 || r.Length < x.env.CompressMinSize) {
		return compressPlan{}
	}
	h := r.Head
	if ce, ok := h.Get("Content-Encoding"); ok && !h1.EqualFold(bytes.TrimSpace(ce), "identity") {
		return compressPlan{}
	}
	if h.Has("Content-Range") {
		return compressPlan{}
	}
	ct, _ := h.Get("Content-Type")
	if !compress.Compressible(ct) {
		return compressPlan{}
	}
	noTransform := false
	h.Values("Cache-Control", func(v []byte) {
		if hasToken(v, "no-transform") {
			noTransform = true
		}
	})
	if noTransform {
		return compressPlan{}
	}
	p := compressPlan{vary: true}
	var ae [][]byte
	x.Req.Values("Accept-Encoding", func(v []byte) { ae = append(ae, v) })
	p.enc = compress.Negotiate(ae...)
	return p
}

// hasToken reports whether a comma-separated field value lists token,
// ignoring case and parameters ("no-transform", "max-age=0, no-transform").
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		member := v
		if i >= 0 {
			member, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if j := bytes.IndexAny(member, ";="); j >= 0 {
			member = member[:j]
		}
		if h1.EqualFold(bytes.TrimSpace(member), token) {
			return true
		}
	}
	return false
}

// compressedField reports how a machine's response field changes when
// the body is compressed: Accept-Ranges goes (ranges of the encoded body
// are not the machine's), and so does a Content-Encoding of identity; a
// strong ETag becomes weak, since the bytes are no longer the ones it
// named (a weak one still validates). keep is false to drop the field;
// weak asks for the value with W/ in front.
func compressedField(name, value []byte) (keep bool, newValue []byte, weak bool) {
	switch {
	case h1.EqualFold(name, "accept-ranges"), h1.EqualFold(name, "content-encoding"):
		return false, nil, false
	case h1.EqualFold(name, "etag"):
		v := bytes.TrimSpace(value)
		if len(v) > 0 && v[0] == '"' {
			return true, v, true
		}
	}
	return true, value, false
}

// appendCompressFields adds the plan's fields to a response head: Vary
// unless one already names Accept-Encoding or is "*", and the coding.
func appendCompressFields(dst []byte, h *h1.Head, p compressPlan) []byte {
	if p.vary {
		covered := false
		h.Values("Vary", func(v []byte) {
			if hasToken(v, "accept-encoding") || hasToken(v, "*") {
				covered = true
			}
		})
		if !covered {
			dst = append(dst, "Vary: Accept-Encoding\r\n"...)
		}
	}
	if p.enc != compress.None {
		dst = append(dst, "Content-Encoding: "...)
		dst = append(dst, p.enc.String()...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}
