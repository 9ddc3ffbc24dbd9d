package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestBreakerTransitionSeriesExistBeforeTheFirstTransition(t *testing.T) {
	f := provider.File{
		Providers: []provider.Spec{
			{Name: "sms-a", Kind: provider.KindWebhook, URL: "http://127.0.0.1:1/a"},
			{Name: "sms-b", Kind: provider.KindWebhook, URL: "http://127.0.0.1:1/b"},
		},
		Routes: map[string][]string{string(notification.SMS): {"sms-a", "sms-b"}},
	}
	set, err := provider.NewSet(&f, provider.Defaults{WebhookURL: "http://127.0.0.1:1/hook", Timeout: time.Second, IdleConns: 1})
	require.NoError(t, err)
	rdb, prefix := testenv.Redis(t)
	m := metrics.NewWorker()
	require.NotNil(t, newBreakers(set, rdb, prefix, m, zap.NewNop()))

	require.Len(t, set.BreakerSettings(), 3, "sms-a, sms-b and the default provider of the other channels")
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	var series []string
	for _, f := range families {
		if f.GetName() != "dispatch_provider_breaker_transitions_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			require.Zero(t, s.GetCounter().GetValue())
			series = append(series, labels["provider"]+" "+labels["to"])
		}
	}
	var want []string
	for _, p := range []string{provider.DefaultName, "sms-a", "sms-b"} {
		for _, to := range []string{"closed", "half-open", "open"} {
			want = append(want, p+" "+to)
		}
	}
	require.ElementsMatch(t, want, series, "a series at zero for each provider and each state it may enter")
}
