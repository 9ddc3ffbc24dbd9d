package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// clearOTelEnv unsets every variable that could turn tracing on, for the
// test's duration.
func clearOTelEnv(t testing.TB) {
	t.Helper()
	for _, name := range []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
	} {
		t.Setenv(name, "")
	}
}

func TestSetupWithoutEndpointInstallsNothing(t *testing.T) {
	clearOTelEnv(t)
	before := otel.GetTracerProvider()

	shutdown, err := Setup(context.Background(), "test", zap.NewNop())
	require.NoError(t, err)
	require.NotNil(t, shutdown)
	require.NoError(t, shutdown(context.Background()))

	require.Same(t, before, otel.GetTracerProvider(), "the global tracer provider must stay the no-op one")
	_, sdk := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	require.False(t, sdk)
	_, span := Tracer().Start(context.Background(), "untraced")
	require.False(t, span.IsRecording(), "spans record nothing when tracing is off")
	span.End()
	interceptors, err := TemporalInterceptors()
	require.NoError(t, err)
	require.Empty(t, interceptors, "no Temporal interceptor when tracing is off")
}

func TestEnabledNeedsAnEndpointAndNoOptOut(t *testing.T) {
	clearOTelEnv(t)
	require.False(t, Enabled())

	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
	require.True(t, Enabled())

	t.Setenv("OTEL_SDK_DISABLED", "true")
	require.False(t, Enabled())

	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	require.False(t, Enabled())
}

func TestSetupRefusesAnUnknownProtocol(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	before := otel.GetTracerProvider()

	_, err := Setup(context.Background(), "test", zap.NewNop())
	require.ErrorContains(t, err, "http/json")
	require.Same(t, before, otel.GetTracerProvider())
}

func TestTraceParentRoundTrips(t *testing.T) {
	require.Empty(t, TraceParent(context.Background()), "no span, no traceparent")

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := ContextWithTraceParent(context.Background(), parent, "vendor=x")
	sc := trace.SpanContextFromContext(ctx)
	require.True(t, sc.IsRemote())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	require.Equal(t, "vendor=x", sc.TraceState().String())
	require.Equal(t, parent, TraceParent(ctx))

	require.Equal(t, context.Background(), ContextWithTraceParent(context.Background(), "", ""))
	require.False(t, trace.SpanContextFromContext(ContextWithTraceParent(context.Background(), "garbage", "")).IsValid())
}

// BenchmarkUntracedSpan is what each traced step costs a notification when
// tracing is off: a span started and ended on the no-op provider, its
// attributes skipped.
func BenchmarkUntracedSpan(b *testing.B) {
	clearOTelEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := Tracer().Start(ctx, "step")
		if span.IsRecording() {
			b.Fatal("recording with tracing off")
		}
		span.End()
	}
}
