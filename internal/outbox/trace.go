package outbox

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
)

// publishSpans are the spans of the traced rows of one relay round, one
// per row whose request was traced, ended once the broker confirmed (or
// refused) the round.
type publishSpans []trace.Span

// start starts the publish span of row c, a child of the trace stored with
// it, and returns the message headers that carry the span on; nil (no span,
// no headers) for a row stored without a trace.
func (p *publishSpans) start(ctx context.Context, c row) amqp.Table {
	if c.TraceParent == nil || *c.TraceParent == "" {
		return nil
	}
	ctx = telemetry.ContextWithTraceParent(ctx, *c.TraceParent, "")
	ctx, span := telemetry.Tracer().Start(ctx, "outbox publish", trace.WithSpanKind(trace.SpanKindProducer))
	if !span.IsRecording() {
		// Tracing is off in this process: pass the stored trace on as it is.
		span.End()
		return amqp.Table{telemetry.TraceParentHeader: *c.TraceParent}
	}
	span.SetAttributes(
		attribute.String("messaging.system", "rabbitmq"),
		attribute.String("messaging.destination.name", string(c.Channel)),
		attribute.String("notification.id", c.NotificationID.String()),
		attribute.String("notification.channel", string(c.Channel)),
	)
	*p = append(*p, span)
	headers := amqp.Table{}
	otel.GetTextMapPropagator().Inject(ctx, queue.HeaderCarrier(headers))
	return headers
}

// end ends the round's spans with its publish error, if any.
func (p publishSpans) end(err error) {
	for _, span := range p {
		telemetry.EndSpan(span, err, "publish failed")
	}
}
