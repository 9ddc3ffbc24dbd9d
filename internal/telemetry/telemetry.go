// Package telemetry sets up OpenTelemetry tracing for a process, off unless
// an OTLP endpoint is configured, and the few helpers the traced steps share.
//
// One notification is one trace across the processes: the API's request
// span, the outbox relay's publish, the consumer's workflow start, the
// workflow and each attempt (Temporal's tracing interceptor) and the call
// to a webhook provider, which gets a W3C traceparent header. The context
// crosses PostgreSQL as a traceparent column on the outbox row, RabbitMQ as
// message headers, and Temporal as its own headers.
//
// Everything is configured by the standard OTEL_* variables, read by the
// OpenTelemetry SDK and exporters themselves. With none set, nothing is
// installed: the global tracer provider stays OpenTelemetry's no-op, so the
// spans the code starts cost a few nanoseconds and record nothing, and the
// Temporal interceptor is left out.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/version"
)

// instrumentationName names the tracer of the spans this module starts
// (Temporal's interceptor names its own).
const instrumentationName = "dispatch-engine"

// Tracer is the tracer the product's own spans come from: the global
// provider's, so it records only once Setup installed one.
func Tracer() trace.Tracer { return otel.Tracer(instrumentationName) }

// Enabled reports whether the environment asks for traces: an OTLP endpoint
// is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
// the SDK is not disabled (OTEL_SDK_DISABLED) and the traces exporter is not
// "none" (OTEL_TRACES_EXPORTER). An endpoint is required, rather than the
// exporters' localhost default, so tracing stays off unless asked for.
func Enabled() bool {
	if disabled, _ := strconv.ParseBool(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED"))); disabled {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the process's tracing when Enabled: a tracer provider
// exporting spans in batches over OTLP (protocol from
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
// http/protobuf, the default, or grpc), with serviceName as service.name
// unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise, and
// the W3C trace-context propagator. Otherwise it installs nothing.
//
// shutdown flushes the spans still buffered and stops the exporter; call
// it last, with a deadline. It is never nil.
func Setup(ctx context.Context, serviceName string, log *zap.Logger) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !Enabled() {
		return noop, nil
	}
	protocol := exportProtocol()
	exporter, err := newExporter(ctx, protocol)
	if err != nil {
		return noop, err
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", serviceName),
			attribute.String("service.version", version.String()),
		),
		// Last, so the operator's variables win over the defaults above.
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exporter.Shutdown(ctx)
		return noop, fmt.Errorf("describing the tracing resource: %w", err)
	}
	// The batch processor and the sampler read OTEL_BSP_* and
	// OTEL_TRACES_SAMPLER* themselves.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry: spans not exported", zap.Error(err))
	}))
	log.Info("tracing on: exporting spans over OTLP", zap.String("protocol", protocol))
	return tp.Shutdown, nil
}

// exportProtocol is the OTLP protocol the environment names, traces' own
// variable first; http/protobuf when neither is set.
func exportProtocol() string {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(os.Getenv(name)); v != "" {
			return v
		}
	}
	return "http/protobuf"
}

// newExporter builds the OTLP span exporter for protocol; the exporters
// read the endpoint, headers, TLS, compression and timeout variables
// themselves. Neither connects here: an unreachable collector costs failed
// exports (logged), never the process's start.
func newExporter(ctx context.Context, protocol string) (sdktrace.SpanExporter, error) {
	switch protocol {
	case "http/protobuf":
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating the OTLP/HTTP span exporter: %w", err)
		}
		return exp, nil
	case "grpc":
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating the OTLP/gRPC span exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: the supported protocols are http/protobuf and grpc", protocol)
	}
}

// Start is Setup for a process's main: it returns the function to defer,
// which flushes the spans still buffered (at most five seconds, so a
// collector that is gone cannot hold up the exit) and logs a failure.
func Start(ctx context.Context, serviceName string, log *zap.Logger) (flush func(), err error) {
	shutdown, err := Setup(ctx, serviceName, log)
	if err != nil {
		return func() {}, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("opentelemetry: spans still buffered at exit were not all exported", zap.Error(err))
		}
	}, nil
}
