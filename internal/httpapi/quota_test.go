package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"dispatch-engine/internal/quota"
	"dispatch-engine/internal/store"
	"dispatch-engine/internal/testenv"
)

func withQuotas(t *testing.T) option {
	rdb, prefix := testenv.Redis(t)
	return withConfig(func(c *config) { c.Quotas = quota.New(rdb, prefix+"quota:") })
}

func (f *fixture) tenantNotifications(name string) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM notifications n JOIN tenants t ON t.id = n.tenant_id WHERE t.name = $1`, name).Scan(&n))
	return n
}

// TestOverQuotaIs429WithTheRateLimitHeadersAndStoresNothing: a tenant with
// a per-day quota of 3 gets the IETF RateLimit fields on every write
// answer; a batch that does not fit is refused whole with 429 and
// Retry-After, and nothing of it is stored; another tenant is not limited.
func TestOverQuotaIs429WithTheRateLimitHeadersAndStoresNothing(t *testing.T) {
	base := setup(t, withQuotas(t))
	f := base.as(base.tenantKey("limited"))
	day := 3
	_, err := store.SetTenant(context.Background(), base.pool, "limited", store.TenantSettings{AcceptPerDay: &day})
	require.NoError(t, err)

	resp, raw := f.post("/v1/notifications", smsBody)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	require.Equal(t, `"per-day";q=3;w=86400`, resp.Header.Get("RateLimit-Policy"))
	require.Regexp(t, `^"per-day";r=2;t=\d+$`, resp.Header.Get("RateLimit"))
	id := f.create(smsBody) // r=1

	three := `{"notifications":[` + smsBody + `,` + smsBody + `,` + smsBody + `]}`
	resp, raw = f.post("/v1/notifications/batch", three)
	p := requireProblem(t, resp, raw, http.StatusTooManyRequests)
	require.Equal(t, "/problems/quota-exceeded", p.Type)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Positive(t, retry)
	require.Regexp(t, `^"per-day";r=1;t=\d+$`, resp.Header.Get("RateLimit"))
	require.Equal(t, 2, f.tenantNotifications("limited"), "the refused batch stored nothing")

	// A write that counts nothing still tells where the tenant stands.
	resp, raw = f.post("/v1/notifications/"+id+"/cancel", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	require.Regexp(t, `^"per-day";r=1;t=\d+$`, resp.Header.Get("RateLimit"))

	resp, raw = f.post("/v1/notifications", smsBody, "Idempotency-Key", "k-1")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	require.Regexp(t, `^"per-day";r=0;`, resp.Header.Get("RateLimit"))
	resp, raw = f.post("/v1/notifications", smsBody)
	requireProblem(t, resp, raw, http.StatusTooManyRequests)
	require.Equal(t, 3, f.tenantNotifications("limited"))

	// The default tenant has no quota and gets no RateLimit fields.
	resp, raw = base.post("/v1/notifications/batch", three)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	require.Empty(t, resp.Header.Get("RateLimit-Policy"))
}

// TestAPerSecondQuotaRefusesABurst: of 30 notifications sent at once by a
// tenant allowed 10 a second, no second's window takes more than 10.
func TestAPerSecondQuotaRefusesABurst(t *testing.T) {
	base := setup(t, withQuotas(t))
	f := base.as(base.tenantKey("burst"))
	perSec := 10
	_, err := store.SetTenant(context.Background(), base.pool, "burst", store.TenantSettings{AcceptPerSec: &perSec})
	require.NoError(t, err)
	codes := map[int]int{}
	for range 30 {
		resp, raw := f.post("/v1/notifications", smsBody)
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			require.Equal(t, "1", resp.Header.Get("Retry-After"), "body: %s", raw)
			require.Regexp(t, `^"per-second";r=0;t=1$`, resp.Header.Get("RateLimit"))
		}
	}
	require.Equal(t, 30, codes[http.StatusAccepted]+codes[http.StatusTooManyRequests], "%v", codes)
	require.Positive(t, codes[http.StatusTooManyRequests], "a burst of 30 within a few seconds passes 10/s: %v", codes)
	require.Equal(t, codes[http.StatusAccepted], f.tenantNotifications("burst"))
}
