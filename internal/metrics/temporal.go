package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
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
		Meter:                describedMeter{provider.Meter("temporal-sdk-go")},
		OnError:              onError,
		UseMonotonicCounters: true,
	}), nil
}

// describedMeter gives every SDK instrument a description: the SDK creates
// them without one, and a Prometheus family without HELP fails promtool.
type describedMeter struct {
	metric.Meter
}

func describe(name string) string {
	return "Temporal SDK metric " + name + " (see Temporal's SDK metrics reference)."
}

func (m describedMeter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return m.Meter.Int64Counter(name, append([]metric.Int64CounterOption{metric.WithDescription(describe(name))}, opts...)...)
}

func (m describedMeter) Int64UpDownCounter(name string, opts ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	return m.Meter.Int64UpDownCounter(name, append([]metric.Int64UpDownCounterOption{metric.WithDescription(describe(name))}, opts...)...)
}

func (m describedMeter) Float64Gauge(name string, opts ...metric.Float64GaugeOption) (metric.Float64Gauge, error) {
	return m.Meter.Float64Gauge(name, append([]metric.Float64GaugeOption{metric.WithDescription(describe(name))}, opts...)...)
}

func (m describedMeter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return m.Meter.Float64Histogram(name, append([]metric.Float64HistogramOption{metric.WithDescription(describe(name))}, opts...)...)
}
