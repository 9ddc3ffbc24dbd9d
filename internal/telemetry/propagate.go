package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C Trace Context header names, also used as the RabbitMQ message
// headers that carry a notification's trace.
const (
	TraceParentHeader = "traceparent"
	TraceStateHeader  = "tracestate"
)

// w3c is the format of the trace context this module stores (the outbox's
// traceparent column): always W3C Trace Context, whatever the global
// propagator.
var w3c propagation.TraceContext

// TraceParent is the W3C traceparent of the span in ctx, to store with a
// notification's outbox row; "" when ctx carries no valid span (tracing is
// off, or the span is not sampled-in at all).
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	carrier := propagation.MapCarrier{}
	w3c.Inject(ctx, carrier)
	return carrier[TraceParentHeader]
}

// ContextWithTraceParent returns ctx with the remote span context that
// traceparent names (and tracestate, when not empty) as the parent of the
// next span started from it; an empty or unreadable traceparent leaves ctx
// as it is.
func ContextWithTraceParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	carrier := propagation.MapCarrier{TraceParentHeader: traceparent}
	if tracestate != "" {
		carrier[TraceStateHeader] = tracestate
	}
	return w3c.Extract(ctx, carrier)
}

// EndSpan ends span, first marking it failed with err and the word of what
// failed, when err is not nil.
func EndSpan(span trace.Span, err error, failed string) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, failed)
	}
	span.End()
}
