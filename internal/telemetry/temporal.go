package telemetry

import (
	"fmt"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
)

// TemporalInterceptors are the interceptors a Temporal client is given:
// Temporal's OpenTelemetry tracing interceptor when Setup installed a tracer
// provider, so a workflow start, the workflow run and each of its
// activities are spans of the trace that started it (and a worker built
// from that client traces the workflows and activities it runs); none when
// tracing is off, so an untraced process adds no header to any workflow or
// activity.
func TemporalInterceptors() ([]interceptor.ClientInterceptor, error) {
	if _, on := otel.GetTracerProvider().(*sdktrace.TracerProvider); !on {
		return nil, nil
	}
	tracing, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the temporal tracing interceptor: %w", err)
	}
	return []interceptor.ClientInterceptor{tracing}, nil
}
