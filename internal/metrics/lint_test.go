package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
)

// TestWorkerMetricsPassTheLinter records into every worker metric and the
// Temporal SDK bridge, then runs promtool's linter over the registry.
func TestWorkerMetricsPassTheLinter(t *testing.T) {
	m := NewWorker()
	h, err := TemporalHandler(m.Registry, func(err error) { t.Errorf("temporal metrics: %v", err) })
	require.NoError(t, err)
	tagged := h.WithTags(map[string]string{"task_queue": "deliver-sms", "namespace": "default"})
	tagged.Counter("temporal_request").Inc(1)
	tagged.Timer("temporal_workflow_task_schedule_to_start_latency").Record(15 * time.Millisecond)
	tagged.Gauge("temporal_worker_task_slots_available").Update(4)

	m.Terminal.WithLabelValues("delivered", "sms", "HIGH", "").Inc()
	m.Attempts.WithLabelValues("sms", "delivered", "default").Inc()
	m.ProviderLatency.WithLabelValues("sms", "default").Observe(0.01)
	m.BreakerState.WithLabelValues("sms-primary").Set(2)
	m.BreakerChanges.WithLabelValues("sms-primary", "open").Inc()
	m.EndToEnd.WithLabelValues("sms", "HIGH").Observe(0.05)
	m.RateLimitWait.WithLabelValues("sms").Observe(0.001)
	m.RateLimitWaits.WithLabelValues("sms").Inc()
	m.Relayed.Inc()
	m.WorkflowStarts.WithLabelValues("sms", "started").Inc()
	m.InFlight.WithLabelValues("sms").Inc()
	m.Repaired.WithLabelValues("requeued").Inc()
	m.DeadLettersRetired.WithLabelValues("sms").Inc()
	m.RetentionDeleted.WithLabelValues("notifications").Inc()
	m.OperationNotifications.WithLabelValues("retry", "succeeded").Inc()

	families, err := m.Registry.Gather()
	require.NoError(t, err)
	names := make([]string, 0, len(families))
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.Contains(t, strings.Join(names, " "), "temporal_request", "the SDK's metrics reach the registry")
	require.Empty(t, lintExposition(t, m.Registry))
}

func TestAPIMetricsPassTheLinter(t *testing.T) {
	m := NewAPI()
	m.HTTPRequests.WithLabelValues("/v1/notifications", "POST", "202").Inc()
	m.HTTPDuration.WithLabelValues("/v1/notifications", "POST").Observe(0.002)
	m.Accepted.WithLabelValues("sms", "HIGH").Inc()
	m.TenantAccepted.WithLabelValues("acme").Inc()
	m.QuotaRefused.WithLabelValues("acme", "sec").Inc()
	require.Empty(t, lintExposition(t, m.Registry))
	require.Empty(t, lintExposition(t, m.TenantRegistry))
}

// lintExposition lints reg as served over HTTP, the way promtool sees it.
func lintExposition(t *testing.T, reg *prometheus.Registry) []promlint.Problem {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	problems, err := promlint.New(rec.Body).Lint()
	require.NoError(t, err)
	return problems
}
