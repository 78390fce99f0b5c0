package perr

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/errors.md from the registry")

// docsPath is relative to this package: go test runs in the package directory.
var docsPath = filepath.Join("..", "..", "docs", "errors.md")

// TestErrorsDoc keeps docs/errors.md generated from Codes(): a registry change
// without regenerating the doc fails here, so the published table never drifts
// from what the proxy sends.
func TestErrorsDoc(t *testing.T) {
	got := renderErrorsDoc(Codes())
	if *update {
		if err := os.WriteFile(docsPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./internal/perr -run TestErrorsDoc -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale; regenerate it with: go test ./internal/perr -run TestErrorsDoc -update", docsPath)
	}
}

func renderErrorsDoc(infos []Info) []byte {
	var b bytes.Buffer
	b.WriteString(`# Proxy error codes

<!-- Generated from internal/perr by "go test ./internal/perr -run TestErrorsDoc -update". Do not edit. -->

Every error edgeproxy reports to a client or logs carries a stable code. HTTP
responses carry it in the body; logs and metrics carry it with its source.
The log line of a failed request or connection also carries the code's hint
(below), the app and, for a request, the last machine tried; the client's
response stays terse and names neither.

The second letter is the category: P internal, U upstream response,
C upstream connection, T TLS, M machine, A app / replay, R routing, L limit,
H client HTTP protocol.

- **source** says whose behaviour caused the error: ` + "`client`" + ` (the client
  sent something the proxy cannot serve), ` + "`upstream`" + ` (a machine failed or
  misbehaved), ` + "`internal`" + ` (the proxy refused by routing or limit policy, or
  failed).
- **retryable** means the proxy may send the request to another machine,
  because no request byte reached an app.
- A status of "none" means the error happens before HTTP (during TLS); the
  connection is closed without a response.
- Counts that vary ("within N attempts") are not part of the message; they
  follow it in the logged error.
- **gRPC** is the status a gRPC client gets instead: a request whose
  ` + "`Content-Type`" + ` starts with ` + "`application/grpc`" + ` is answered HTTP 200 with
  ` + "`grpc-status`" + ` and ` + "`grpc-message`" + ` (` + "`CODE: message`" + `) in the header and no body
  (a trailers-only response). 14 is Unavailable (no byte reached an app:
  clients may retry), 8 ResourceExhausted, 13 Internal.

| code | HTTP status | gRPC | source | retryable | message | hint |
|---|---|---|---|---|---|---|
`)
	for _, info := range infos {
		status := "none"
		if info.Status != 0 {
			status = strconv.Itoa(info.Status)
		}
		retry := "no"
		if info.Retryable {
			retry = "yes"
		}
		grpc := "none"
		if info.Status != 0 {
			grpc = strconv.Itoa(GRPCStatus(info.Code))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n",
			info.Code, status, grpc, info.Source, retry, mdCell(info.Msg), mdCell(info.Hint))
	}
	return b.Bytes()
}

// mdCell escapes what would break a table row; messages are plain text.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
