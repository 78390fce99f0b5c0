package admin

import (
	"embed"
	"io/fs"
	"net/http"
)

// The status page: plain HTML, CSS and JavaScript, embedded so the binary
// serves it with no build step and no files beside it.
//
//go:embed status
var statusFiles embed.FS

// statusPage serves /status (the page) and /status/* (its script and
// style sheet). The page's script polls /v1/status.
func statusPage() http.Handler {
	sub, _ := fs.Sub(statusFiles, "status") // the directory is embedded; cannot fail
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page's own script and style only: nothing framed, fetched
		// or run from elsewhere.
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/status" || r.URL.Path == "/status/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = r.URL.Path[len("/status"):]
		files.ServeHTTP(w, r2)
	})
}
