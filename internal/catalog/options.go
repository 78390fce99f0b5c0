package catalog

import (
	"net/http"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/tlsterm"
)

func (t *TLSOptions) from(o *config.TLSOptions, http, pg bool) error {
	var versions []string
	if o != nil {
		versions = o.Versions
		t.ALPN = o.ALPN
		t.DefaultSelfSigned = o.DefaultSelfSigned
	}
	if t.ALPN == nil && http {
		// A port that parses HTTP offers both versions unless told otherwise.
		t.ALPN = []string{"h2", "http/1.1"}
	}
	if t.ALPN == nil && pg {
		// libpq 17 offers "postgresql" and, for sslnegotiation=direct,
		// requires the server to select it; older clients offer nothing.
		t.ALPN = []string{"postgresql"}
	}
	var err error
	t.MinVersion, t.MaxVersion, err = tlsterm.Versions(versions)
	return err
}

func (h *HTTPOptions) from(o *config.HTTPOptions) {
	if o == nil {
		return
	}
	h.H2Backend = o.H2Backend
	h.AbortOnClose = o.AbortOnClose
	h.IdleTimeout = o.IdleTimeout.D()
	h.DebugRouting = o.DebugRouting
	h.Compress = o.Compress != nil && *o.Compress
	if r := o.Response; r != nil {
		h.Pristine = r.Pristine
		for name, v := range r.Headers {
			// Validated by config; an error cannot happen here.
			vals, remove, _ := config.HeaderValue(v)
			name = http.CanonicalHeaderKey(name)
			if remove {
				h.RemoveHeaders = append(h.RemoveHeaders, name)
				continue
			}
			if h.AddHeaders == nil {
				h.AddHeaders = map[string][]string{}
			}
			h.AddHeaders[name] = append(h.AddHeaders[name], vals...)
		}
	}
}
