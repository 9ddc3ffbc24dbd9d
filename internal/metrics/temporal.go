package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/client"
)

// TemporalHandler exports the Temporal SDK's own metrics (workflow task
// latency, schedule-to-start, poller and slot usage, ...) into reg, through
// the SDK's OpenTelemetry handler and the OpenTelemetry Prometheus exporter.
// onError receives recording errors instead of the handler panicking.
func TemporalHandler(reg prometheus.Registerer, onError func(error)) (client.MetricsHandler, error) {
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("creating the Temporal metrics exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{
		Meter:                provider.Meter("temporal-sdk-go"),
		OnError:              onError,
		UseMonotonicCounters: true,
	}), nil
}
