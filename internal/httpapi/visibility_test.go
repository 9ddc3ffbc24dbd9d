package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMetricsNameTenantsOnlyToTheOperator: the API's /metrics is open to
// the probes and any scraper, but its tenant-labelled series (who the
// tenants are and how much each sends) are served only with a key of the
// default tenant, the operator's.
func TestMetricsNameTenantsOnlyToTheOperator(t *testing.T) {
	operator := setup(t)
	acme := operator.as(operator.tenantKey("acme-visible"))
	acme.create(`{"channel":"sms","recipient":"+14155550123","content":"hi"}`)

	const series = `dispatch_tenant_notifications_accepted_total{tenant="acme-visible"} 1`
	for name, headers := range map[string][]string{
		"no key":         {"Authorization", ""},
		"a tenant's key": {"Authorization", "Bearer " + acme.apiKey},
	} {
		resp, body := operator.get("/metrics", headers...)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", name, body)
		require.NotContains(t, string(body), "acme-visible", name)
		require.NotContains(t, string(body), "dispatch_tenant_", name)
		require.Contains(t, string(body), "dispatch_http_requests_total", "%s: the service's own series stay open", name)
	}

	resp, body := operator.get("/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), series)

	resp, body = operator.get("/metrics", "Authorization", "Bearer not-a-key")
	requireProblem(t, resp, body, http.StatusUnauthorized)
}

// TestProvidersShowATenantNoTrafficFigures: every tenant sees the
// providers, their routes and their breakers' state (which decides where
// and when its notifications go), named by scheme and host only; the
// traffic figures (every tenant's sends together) are the operator's.
func TestProvidersShowATenantNoTrafficFigures(t *testing.T) {
	operator := setup(t, withProviders(t))
	acme := operator.as(operator.tenantKey("acme-providers"))

	resp, raw := acme.get("/v1/providers")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.NotContains(t, string(raw), "/in", "no path of a provider's URL")
	var page struct {
		Data []map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(raw, &page))
	require.Equal(t, "hook", page.Data[0]["name"])
	require.Equal(t, "https://hooks.example.com", page.Data[0]["target"])
	breakerView, ok := page.Data[0]["breaker"].(map[string]any)
	require.True(t, ok, string(raw))
	require.Equal(t, "closed", breakerView["state"])
	for _, figure := range []string{"consecutiveFailures", "recentRequests", "successRatio", "averageLatencyMs"} {
		require.NotContains(t, breakerView, figure)
	}

	resp, raw = operator.get("/v1/providers")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.NoError(t, json.Unmarshal(raw, &page))
	require.Equal(t, "https://hooks.example.com", page.Data[0]["target"])
	breakerView = page.Data[0]["breaker"].(map[string]any)
	for _, figure := range []string{"consecutiveFailures", "recentRequests", "successRatio", "averageLatencyMs"} {
		require.Contains(t, breakerView, figure)
	}
	require.False(t, strings.Contains(string(raw), "token=x") || strings.Contains(string(raw), "pw@"))
}
