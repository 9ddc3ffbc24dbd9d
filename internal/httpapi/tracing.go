package httpapi

import (
	"context"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// requestCarrier lets a propagator read a request's trace headers, so a
// client that traces its call gets the API's span in its own trace.
type requestCarrier struct{ c *fiber.Ctx }

func (r requestCarrier) Get(key string) string { return r.c.Get(key) }
func (r requestCarrier) Set(string, string)    {} // a request's headers are only read
func (r requestCarrier) Keys() []string {
	keys := make([]string, 0, 8)
	for k := range r.c.GetReqHeaders() {
		keys = append(keys, k)
	}
	return keys
}

// startRequestSpan starts the server span of request c, named route, a
// child of the trace the client sent (traceparent), if any. With tracing
// off it records nothing.
func startRequestSpan(c *fiber.Ctx, route string) (context.Context, trace.Span) {
	ctx := otel.GetTextMapPropagator().Extract(c.UserContext(), requestCarrier{c})
	ctx, span := telemetry.Tracer().Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("http.request.method", c.Method()), attribute.String("http.route", c.Route().Path))
		// A receipt comes with no API key, hence no tenant.
		if t, ok := c.Locals(tenantLocal).(store.Tenant); ok {
			span.SetAttributes(attribute.String("tenant.id", store.TenantOrDefault(t.ID).String()))
		}
	}
	return ctx, span
}

// endRequestSpan ends a request's span with the handler's error, or the
// status it answered.
func endRequestSpan(c *fiber.Ctx, span trace.Span, err error) {
	switch {
	case !span.IsRecording():
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, "request failed")
	default:
		span.SetAttributes(attribute.Int("http.response.status_code", c.Response().StatusCode()))
	}
	span.End()
}

// traceNotification names the notification a request accepts on its span,
// and returns the traceparent to store with the notification's outbox
// row, by which its delivery joins the request's trace ("" when tracing is
// off).
func traceNotification(ctx context.Context, span trace.Span, nn store.NewNotification) string {
	if !span.IsRecording() {
		return ""
	}
	span.SetAttributes(
		attribute.String("notification.id", nn.ID.String()),
		attribute.String("notification.channel", string(nn.Channel)),
		attribute.String("notification.priority", string(nn.Priority)),
	)
	return telemetry.TraceParent(ctx)
}

// traceBatch names the batch a request accepts on its span, and returns
// the traceparent its notifications' outbox rows share.
func traceBatch(ctx context.Context, span trace.Span, nb store.NewBatch) string {
	if !span.IsRecording() {
		return ""
	}
	span.SetAttributes(attribute.String("batch.id", nb.ID.String()), attribute.Int("batch.count", len(nb.Notifications)))
	return telemetry.TraceParent(ctx)
}

// traceReceipt names, on a receipt's span, the notification and attempt it
// reports on and what it says. The receipt's signal to the workflow is a
// child span (Temporal's interceptor), and the span continues the
// provider's traceparent when it sent one.
func traceReceipt(span trace.Span, target store.ReceiptTarget, r workflows.Receipt) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.String("notification.id", target.NotificationID.String()),
		attribute.Int("notification.attempt", target.Attempt),
		attribute.String("provider.name", r.Provider),
		attribute.String("receipt.status", r.Status),
	)
}
