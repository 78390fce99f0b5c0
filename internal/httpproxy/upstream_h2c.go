package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"

	"github.com/edgeproxy/edgeproxy/internal/h1"
	"github.com/edgeproxy/edgeproxy/internal/perr"
)

// h2cClient sends requests to machines that speak HTTP/2 without TLS
// (http_options.h2_backend), over the standard library's transport. The
// request head the core built is turned into an http.Request, and the
// response's header into a head the core reads like any other: this path
// allocates per request, which the HTTP/1.1 path does not, and serves the
// few apps (gRPC) that need it.
type h2cClient struct {
	t *http.Transport
}

type exchangeKey struct{}

func newH2CClient(p *Pools, header func(net.Conn) error) *h2cClient {
	dial := p.dialer(header)
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			x, _ := ctx.Value(exchangeKey{}).(*Exchange)
			ap, err := netip.ParseAddrPort(addr)
			if x == nil || err != nil {
				return nil, perr.New(perr.InternalError, fmt.Errorf("machine dial without an exchange to %q", addr))
			}
			return dial(ctx, x, ap)
		},
		// The client's Accept-Encoding goes through untouched; asking for
		// gzip itself would change what the app sends.
		DisableCompression:     true,
		MaxIdleConnsPerHost:    p.opts.MaxIdlePerMachine,
		IdleConnTimeout:        p.opts.IdleConnTimeout,
		ResponseHeaderTimeout:  p.opts.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: maxResponseHeader,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return &h2cClient{t: t}
}

func (c *h2cClient) closeIdle() { c.t.CloseIdleConnections() }

func (c *h2cClient) roundTrip(x *Exchange, addr netip.AddrPort, out []byte, body io.Reader, length int64) (*upResponse, error) {
	req, err := h2Request(x, addr.String(), out, body, length)
	if err != nil {
		return nil, err
	}
	resp, err := c.t.RoundTrip(req)
	if err != nil {
		return nil, attemptError(x, err)
	}
	return h2cResponse(resp)
}

// attemptError is a failed round trip's error: the exchange's own cause
// when it was cut, else the transport's.
func attemptError(x *Exchange, err error) error {
	if errors.Is(err, context.Canceled) && x.Ctx.Err() != nil {
		return context.Cause(x.Ctx)
	}
	return err
}

// h2Request turns the request head the core built into an HTTP/2
// request to host, with body (nil: none) and the exchange's trailers.
func h2Request(x *Exchange, host string, out []byte, body io.Reader, length int64) (*http.Request, error) {
	var head h1.Head
	if _, err := h1.ParseRequest(out, &head, h1.Limits{MaxHead: len(out) + 1}); err != nil {
		return nil, perr.New(perr.InternalError, fmt.Errorf("request head for an h2c machine: %w", err))
	}
	target := head.String(head.Target)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, perr.New(perr.MalformedRequest, fmt.Errorf("request target %q: %w", target, err))
	}
	keepTarget(u, target)
	u.Scheme, u.Host = "http", host
	req := &http.Request{Method: head.String(head.Method), URL: u, Header: make(http.Header, len(head.Fields)),
		Host: head.String(head.Host), ContentLength: length, Proto: "HTTP/2.0", ProtoMajor: 2}
	for _, f := range head.Fields {
		name := http.CanonicalHeaderKey(head.String(f.Name))
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade":
			continue
		}
		req.Header[name] = append(req.Header[name], head.String(f.Value))
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		// Not Go's default agent: the client sent none.
		req.Header["User-Agent"] = []string{""}
	}
	if body != nil {
		req.Body = io.NopCloser(body)
		req.Trailer = x.Trailer
	} else {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	return req.WithContext(context.WithValue(x.Ctx, exchangeKey{}, x)), nil
}

// h2cResponse reads resp's header into a head of its own.
func h2cResponse(resp *http.Response) (*upResponse, error) {
	b := append(make([]byte, 0, 512), "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.StatusCode), 10)
	b = append(b, " \r\n"...)
	for name, vals := range resp.Header {
		switch name {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		for _, v := range vals {
			b = h1.AppendFieldString(b, name, v)
		}
	}
	b = append(b, "\r\n"...)
	head := &h1.Head{}
	if _, err := h1.ParseResponse(b, head, nil, h1.Limits{MaxHead: len(b) + 1}); err != nil {
		resp.Body.Close()
		return nil, perr.New(perr.MalformedResponse, err)
	}
	r := &upResponse{Status: resp.StatusCode, Head: head, Body: resp.Body, Length: resp.ContentLength,
		src: h2cSource{resp}}
	if resp.Body == http.NoBody {
		r.Body, r.Length = nil, 0
	}
	r.trailerFn = func() []byte {
		var t []byte
		for name, vals := range resp.Trailer {
			for _, v := range vals {
				t = h1.AppendFieldString(t, name, v)
			}
		}
		return t
	}
	return r, nil
}

type h2cSource struct{ resp *http.Response }

func (h2cSource) headDone() {}

func (s h2cSource) release(bool) { s.resp.Body.Close() }
