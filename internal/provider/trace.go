package provider

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// startCall starts the client span of a call to a provider of kind at
// endpoint, a child of the attempt's span in ctx. The span names the
// provider by its URL's scheme and host only (Origin), never a path,
// credential or recipient. With tracing off it records nothing.
func startCall(ctx context.Context, kind, endpoint string) (context.Context, trace.Span) {
	ctx, span := telemetry.Tracer().Start(ctx, kind+" send", trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("provider.kind", kind),
			attribute.String("provider.origin", Origin(endpoint)),
		)
	}
	return ctx, span
}

// injectTrace writes the W3C traceparent (and tracestate) of the span in
// req's context on req, so a provider that traces joins the notification's
// trace; nothing when tracing is off.
func injectTrace(req *http.Request) {
	otel.GetTextMapPropagator().Inject(req.Context(), propagation.HeaderCarrier(req.Header))
}

// endCall ends a provider call's span with what the call came to (a
// result already scrubbed of the recipient).
func endCall(span trace.Span, res Result) {
	if span.IsRecording() {
		if res.StatusCode != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", res.StatusCode))
		}
		span.SetAttributes(attribute.String("delivery.outcome", string(res.Outcome)))
		if res.Outcome != workflows.OutcomeDelivered {
			span.SetStatus(codes.Error, res.Error)
		}
	}
	span.End()
}
