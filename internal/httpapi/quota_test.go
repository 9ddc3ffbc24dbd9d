package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
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

// TestABatchLargerThanAQuotaIs422NamingTheQuota: a batch that can never fit
// a window (3 notifications against 2 a second) is not told to come back
// later: 422 naming the quota and the field, without Retry-After, and
// nothing is stored or charged.
func TestABatchLargerThanAQuotaIs422NamingTheQuota(t *testing.T) {
	base := setup(t, withQuotas(t))
	f := base.as(base.tenantKey("small"))
	perSec := 2
	_, err := store.SetTenant(context.Background(), base.pool, "small", store.TenantSettings{AcceptPerSec: &perSec})
	require.NoError(t, err)

	three := `{"notifications":[` + smsBody + `,` + smsBody + `,` + smsBody + `]}`
	resp, raw := f.post("/v1/notifications/batch", three)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, "/problems/batch-over-quota", p.Type)
	require.Contains(t, p.Detail, "per-second")
	require.Equal(t, []string{"notifications"}, fieldNames(p))
	require.Contains(t, p.Errors[0].Message, "per-second quota of 2")
	require.Empty(t, resp.Header.Get("Retry-After"), "waiting never lets it pass")
	require.Regexp(t, `^"per-second";r=2;t=1$`, resp.Header.Get("RateLimit"), "nothing was charged")
	require.Zero(t, f.tenantNotifications("small"))
}

// TestARetryIsChargedToTheQuota: a retry makes a notification accepted
// again, so it counts against the tenant's acceptance quota: with the day's
// quota spent it is 429 with Retry-After and the notification stays FAILED;
// a retry that is refused for another reason is not charged.
func TestARetryIsChargedToTheQuota(t *testing.T) {
	base := setup(t, withQuotas(t))
	f := base.as(base.tenantKey("retrier"))
	day := 3
	_, err := store.SetTenant(context.Background(), base.pool, "retrier", store.TenantSettings{AcceptPerDay: &day})
	require.NoError(t, err)

	failed := f.failed()    // 1 of 3
	delivered := f.failed() // 2 of 3
	f.setStatus(delivered, notification.StatusDelivered)
	resp, raw := f.retry(delivered)
	requireProblem(t, resp, raw, http.StatusConflict)
	require.Regexp(t, `^"per-day";r=1;`, resp.Header.Get("RateLimit"), "a refused retry is not charged")

	resp, raw = f.retry(failed) // 3 of 3
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	require.Regexp(t, `^"per-day";r=0;`, resp.Header.Get("RateLimit"))
	resp, raw = f.retry(failed, "Idempotency-Key", "again")
	requireProblem(t, resp, raw, http.StatusConflict) // in flight now: not retryable, not charged

	_, err = store.Fail(context.Background(), base.pool, uuid.MustParse(failed),
		notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastError: "503"})
	require.NoError(t, err)
	resp, raw = f.retry(failed)
	p := requireProblem(t, resp, raw, http.StatusTooManyRequests)
	require.Equal(t, "/problems/quota-exceeded", p.Type)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Positive(t, retry)
	require.Equal(t, notification.StatusFailed, f.stored(failed).Status, "the refused retry changed nothing")
}
