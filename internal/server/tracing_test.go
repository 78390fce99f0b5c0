package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/proxytest"
	"github.com/edgeproxy/edgeproxy/internal/telemetry"
)

// TestTracingContinuesAndPropagates: a client's W3C trace context is
// continued by the proxy's request span, whose context reaches the machine;
// the connection gets accept and tls spans, the request route and upstream
// connect spans.
func TestTracingContinuesAndPropagates(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := telemetry.NewTracingWith(sdktrace.WithSpanProcessor(rec), config.Tracing{SampleRatio: 1, ServiceName: "test"}, "test")
	p := proxytest.Start(t, singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService), proxytest.Options{Tracing: tr})

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	cl := p.Client(443, false)
	_, rep := get(t, cl, "https://app.test/", map[string]string{"Traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"})
	cl.CloseIdleConnections()
	got := http.Header(rep.Headers).Get("Traceparent")
	if !strings.HasPrefix(got, "00-"+clientTrace+"-") || strings.Contains(got, clientSpan) {
		t.Fatalf("machine got traceparent %q: want the client's trace with the proxy's span", got)
	}

	deadline := time.Now().Add(5 * time.Second)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for time.Now().Before(deadline) {
		for _, s := range rec.Ended() {
			byName[s.Name()] = s
		}
		if len(byName) >= 5 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	req := byName["proxy request"]
	if req == nil || req.SpanContext().TraceID().String() != clientTrace || req.Parent().SpanID().String() != clientSpan {
		t.Fatalf("proxy request span: %v", req)
	}
	if !strings.Contains(got, req.SpanContext().SpanID().String()) {
		t.Errorf("machine's parent %q is not the proxy request span %s", got, req.SpanContext().SpanID())
	}
	for _, child := range []string{"route", "upstream connect"} {
		s := byName[child]
		if s == nil || s.Parent().SpanID() != req.SpanContext().SpanID() {
			t.Errorf("%s span missing or not a child of the request span: %v", child, s)
		}
	}
	acc, tlsSpan := byName["accept"], byName["tls"]
	if acc == nil || tlsSpan == nil || tlsSpan.Parent().SpanID() != acc.SpanContext().SpanID() {
		t.Errorf("connection spans: accept %v tls %v", acc, tlsSpan)
	}
}

// TestTracingExportsOTLP: with tracing on in the config, spans reach an
// OTLP/HTTP receiver.
func TestTracingExportsOTLP(t *testing.T) {
	var posts atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method == "POST" && r.URL.Path == "/v1/traces" && strings.Contains(r.Header.Get("Content-Type"), "protobuf") {
			posts.Add(1)
		}
	}))
	defer recv.Close()
	cfg := "[tracing]\nenabled = true\nendpoint = \"" + recv.URL + "\"\nsample_ratio = 1.0\n" +
		singleApp(machine("m1", proxytest.Machine(t, "m1")), httpService)
	p := proxytest.Start(t, cfg, proxytest.Options{})
	get(t, p.Client(80, false), "http://app.test/", nil)
	p.Close() // flushes the batcher
	if posts.Load() == 0 {
		t.Error("no spans reached the OTLP receiver")
	}
}
