package queue

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
)

// HeaderCarrier lets an OpenTelemetry propagator read and write a
// message's headers: a notification's trace crosses RabbitMQ as its
// traceparent and tracestate headers.
type HeaderCarrier amqp.Table

// Get returns the string header key, "" when absent or not a string.
func (h HeaderCarrier) Get(key string) string {
	v, _ := h[key].(string)
	return v
}

// Set sets header key.
func (h HeaderCarrier) Set(key, value string) { h[key] = value }

// Keys lists the headers.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// traceHandling starts the span of handling message d from channel, a
// child of the trace its headers carry (a message without one starts a new
// trace, or nothing when tracing is off). The handler runs in the
// returned context, so the workflow start it makes joins the trace.
func traceHandling(ctx context.Context, channel string, d amqp.Delivery) (context.Context, trace.Span) {
	if len(d.Headers) > 0 {
		ctx = otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(d.Headers))
	}
	ctx, span := telemetry.Tracer().Start(ctx, "notification consume", trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() { // attributes cost nothing when tracing is off
		span.SetAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.destination.name", d.RoutingKey),
			attribute.String("messaging.message.id", d.MessageId),
			attribute.String("notification.id", d.MessageId),
			attribute.String("notification.channel", channel),
		)
	}
	return ctx, span
}
