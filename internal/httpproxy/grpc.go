package httpproxy

import (
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// grpcContentType returns the request's Content-Type if it is a gRPC one
// (application/grpc, +proto, +json, -web, ...): the caller expects its
// answer in that framing.
func grpcContentType(h *h1.Head) (string, bool) {
	ct, _ := h.Get("Content-Type")
	const prefix = "application/grpc"
	if len(ct) < len(prefix) || !h1.EqualFold(ct[:len(prefix)], prefix) {
		return "", false
	}
	return string(ct), true
}

// appendGRPCError answers a gRPC call the proxy could not serve as gRPC
// does: HTTP 200 and a trailers-only response, whose header carries
// grpc-status and grpc-message. A gRPC client reads a text/plain 502 as a
// broken transport and reports neither the code nor the reason.
func appendGRPCError(fields []byte, ct string, pe *perr.Error, debug bool) []byte {
	fields = h1.AppendFieldString(fields, "Content-Type", ct)
	fields = h1.AppendFieldString(fields, "Grpc-Status", strconv.Itoa(perr.GRPCStatus(pe.Code)))
	text := errorText(pe, debug)
	return h1.AppendFieldString(fields, "Grpc-Message", grpcPercentEncode(text[:len(text)-1]))
}

// grpcPercentEncode encodes a grpc-message value as the gRPC HTTP/2
// protocol asks: bytes outside printable ASCII, and "%", as %XX.
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
