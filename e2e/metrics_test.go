package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// lintMetrics scrapes url, runs promtool's linter over it and returns the
// family names.
func lintMetrics(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	l := promlint.New(resp.Body)
	problems, err := l.Lint()
	require.NoError(t, err)
	require.Empty(t, problems, "%s", url)

	resp2, err := http.Get(url)
	require.NoError(t, err)
	defer func() { _ = resp2.Body.Close() }()
	names := map[string]bool{}
	for _, f := range parseFamilies(t, resp2) {
		names[f] = true
	}
	return names
}

func TestMetricsEndpointsPassTheLinterAfterADelivery(t *testing.T) {
	s := setup(t)
	_, _, created := s.post("/v1/notifications", smsRequest("measured"))
	s.waitStatus(created["id"].(string), "DELIVERED", 30*time.Second)

	api := lintMetrics(t, s.apiURL+"/metrics")
	for _, f := range []string{"dispatch_http_requests_total", "dispatch_http_request_duration_seconds", "dispatch_notifications_accepted_total"} {
		require.True(t, api[f], "API /metrics lacks %s", f)
	}
	// The SDK's metrics are written as the worker runs; the delivery above
	// has already made every family below non-empty.
	var worker map[string]bool
	require.Eventually(t, func() bool {
		worker = lintMetrics(t, "http://127.0.0.1:"+s.envValue("WORKER_METRICS_PORT")+"/metrics")
		return worker["dispatch_delivery_latency_seconds"]
	}, 10*time.Second, 100*time.Millisecond)
	for _, f := range []string{
		"dispatch_notifications_terminal_total", "dispatch_delivery_attempts_total",
		"dispatch_provider_request_duration_seconds", "dispatch_delivery_latency_seconds",
		"dispatch_outbox_backlog_rows", "dispatch_outbox_oldest_age_seconds",
		"dispatch_queue_messages", "dispatch_dead_letter_messages", "dispatch_workflow_starts_total",
		"dispatch_outbox_relayed_total",
	} {
		require.True(t, worker[f], "worker /metrics lacks %s", f)
	}
	sdk := 0
	for name := range worker {
		if len(name) > 9 && name[:9] == "temporal_" {
			sdk++
		}
	}
	require.Positive(t, sdk, "the Temporal SDK's metrics are exported on the worker's /metrics")
}

func parseFamilies(t *testing.T, resp *http.Response) []string {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	return names
}
