package telemetry

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// Tracing is what the data path needs to trace: a tracer and the W3C
// trace-context propagator, which continues a client's trace and passes
// it on to machines.
type Tracing struct {
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	// Enabled is false for the no-op tracer, so callers can skip work
	// (such as building attributes) that only matters when tracing.
	Enabled  bool
	shutdown func(context.Context) error
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// NewTracing sets tracing up from config: off by default (a no-op tracer
// that costs nearly nothing), or OTLP over HTTP to the configured
// endpoint, sampling new traces at sample_ratio and following the
// client's decision for traces it continues. The global OpenTelemetry
// state is not touched: the provider is passed down, not installed.
func NewTracing(c config.Tracing, version string) (*Tracing, error) {
	prop := propagation.TraceContext{}
	if !c.Enabled {
		return &Tracing{Tracer: noop.NewTracerProvider().Tracer("edgeproxy"), Propagator: prop}, nil
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("tracing endpoint: %w", err)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(u.JoinPath("/v1/traces").String())}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing exporter: %w", err)
	}
	return NewTracingWith(sdktrace.WithBatcher(exp), c, version), nil
}

// NewTracingWith builds tracing around a span processor; tests pass an
// in-memory recorder.
func NewTracingWith(sp sdktrace.TracerProviderOption, c config.Tracing, version string) *Tracing {
	res := resource.NewSchemaless(semconv.ServiceName(c.ServiceName), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(sp, sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))))
	return &Tracing{Tracer: tp.Tracer("github.com/edgeproxy/edgeproxy"), Propagator: propagation.TraceContext{},
		Enabled: true, shutdown: tp.Shutdown}
}
