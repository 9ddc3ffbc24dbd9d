package httpapi_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// timed sends one request with key and a client deadline (a hung request
// fails the test instead of hanging it), and returns the answer and how
// long it took.
func (f *fixture) timed(method, path, body, key string, within time.Duration) (*http.Response, []byte, time.Duration) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.baseURL+path, bytes.NewReader([]byte(body)))
	require.NoError(f.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+key)
	start := time.Now()
	resp, err := (&http.Client{Timeout: within}).Do(req)
	require.NoError(f.t, err, "%s %s: no answer within %s", method, path, within)
	defer func() { _ = resp.Body.Close() }()
	var raw bytes.Buffer
	_, err = raw.ReadFrom(resp.Body)
	require.NoError(f.t, err)
	return resp, raw.Bytes(), time.Since(start)
}

// proxiedDatabase is a fresh database reached through a proxy that can go
// silent, and a pool straight to it for the test's own reads and writes.
func proxiedDatabase(t *testing.T) (dsn string, p *testenv.Proxy, direct *fixture) {
	raw := testenv.Database(t)
	u, err := url.Parse(raw)
	require.NoError(t, err)
	p = testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p, setup(t, withDSN(raw))
}

// TestSilentDatabaseAnswers503WithinTwoSecondsForStoredKeys: PostgreSQL
// stops answering (packets dropped, not refused) while requests with stored
// keys arrive: each is answered 503 with Retry-After within 2 s, a key
// used a moment ago and one never seen alike, instead of hanging until the
// partition heals.
func TestSilentDatabaseAnswers503WithinTwoSecondsForStoredKeys(t *testing.T) {
	dsn, proxy, direct := proxiedDatabase(t)
	f := setup(t, withDSN(dsn))
	t.Cleanup(proxy.Heal)
	used := direct.tenantKey("tenant-a")
	fresh := direct.tenantKey("tenant-b")
	resp, raw, _ := f.timed(http.MethodPost, "/v1/notifications", smsBody, used, 10*time.Second)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)

	proxy.Partition()
	for _, probe := range []struct{ name, method, path, body, key string }{
		{"create with a key used lately", http.MethodPost, "/v1/notifications", smsBody, used},
		{"list with a key used lately", http.MethodGet, "/v1/notifications?limit=1", "", used},
		{"create with a key never seen", http.MethodPost, "/v1/notifications", smsBody, fresh},
		{"batch with a key never seen", http.MethodPost, "/v1/notifications/batch", `{"notifications":[` + smsBody + `]}`, fresh},
	} {
		resp, raw, took := f.timed(probe.method, probe.path, probe.body, probe.key, 5*time.Second)
		p := requireProblem(t, resp, raw, http.StatusServiceUnavailable)
		require.Equal(t, "/problems/service-unavailable", p.Type, probe.name)
		require.Equal(t, "1", resp.Header.Get("Retry-After"), probe.name)
		require.Less(t, took, 2*time.Second, "%s: answered after %s", probe.name, took)
	}
	proxy.Heal()
	require.Eventually(t, func() bool {
		resp, _, _ := f.timed(http.MethodPost, "/v1/notifications", smsBody, used, 10*time.Second)
		return resp.StatusCode == http.StatusAccepted
	}, 20*time.Second, 100*time.Millisecond, "accepted again once the database answers")
}

// TestAnUnknownKeyCostsOneLookupAndIsThenRememberedBriefly: a key that is
// not stored is looked up once (not once to size the body and again to
// authenticate), and a repeat within a few seconds is refused without
// asking the database again.
func TestAnUnknownKeyCostsOneLookupAndIsThenRememberedBriefly(t *testing.T) {
	f := setup(t)
	lookups := func() int {
		f.queries.mu.Lock()
		defer f.queries.mu.Unlock()
		n := 0
		for _, sql := range f.queries.sql {
			if strings.Contains(sql, "api_keys") {
				n++
			}
		}
		return n
	}
	const unknown = "de_not-a-stored-key-0123456789abcdefghijklmnopq"
	for range 3 {
		resp, raw := f.post("/v1/notifications", smsBody, "Authorization", "Bearer "+unknown)
		requireProblem(t, resp, raw, http.StatusUnauthorized)
	}
	require.Equal(t, 1, lookups(), "one database lookup for three requests with the same unknown key")
}

// TestTheDefaultTenantIsNotCachedFromADatabaseError: the default tenant's
// row (its quotas) could not be read once; the next requests read it again
// instead of going on for seconds as if it had no quota.
func TestTheDefaultTenantIsNotCachedFromADatabaseError(t *testing.T) {
	f := setup(t, withQuotas(t))
	ctx := context.Background()
	day := 2
	_, err := store.SetTenant(ctx, f.pool, store.DefaultTenantName, store.TenantSettings{AcceptPerDay: &day})
	require.NoError(t, err)

	// A blip: the tenants table cannot be read for one request.
	_, err = f.pool.Exec(ctx, `ALTER TABLE tenants RENAME TO tenants_away`)
	require.NoError(t, err)
	_, _, _, err = f.send(http.MethodGet, "/v1/notifications?limit=1", nil)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `ALTER TABLE tenants_away RENAME TO tenants`)
	require.NoError(t, err)

	codes := []int{}
	for range 3 {
		resp, _ := f.post("/v1/notifications", smsBody)
		codes = append(codes, resp.StatusCode)
	}
	require.Equal(t, []int{http.StatusAccepted, http.StatusAccepted, http.StatusTooManyRequests}, codes,
		"the default tenant's quota of 2 a day holds right after the blip")
}

// TestSilentRedisCostsAQuotaTenantAtMostAQuarterSecond: Redis stops
// answering (packets dropped); a tenant with quotas is still accepted, its
// quota skipped as documented, each answer at most 250 ms slower than
// before; the quota is not asked again for a moment, and once Redis
// answers again it is counted again.
func TestSilentRedisCostsAQuotaTenantAtMostAQuarterSecond(t *testing.T) {
	_, prefix := testenv.Redis(t)
	u, err := url.Parse(testenv.Shared(t).RedisURL)
	require.NoError(t, err)
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	rdb, err := ratelimit.NewClient(u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	base := setup(t, withConfig(func(c *config) { c.Quotas = quota.New(rdb, prefix+"quota:") }))
	t.Cleanup(proxy.Heal)
	key := base.tenantKey("quoted")
	perSec := 1000
	_, err = store.SetTenant(context.Background(), base.pool, "quoted", store.TenantSettings{AcceptPerSec: &perSec})
	require.NoError(t, err)

	var before time.Duration
	for range 5 {
		resp, raw, took := base.timed(http.MethodPost, "/v1/notifications", smsBody, key, 10*time.Second)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
		require.NotEmpty(t, resp.Header.Get("RateLimit"))
		before = max(before, took)
	}

	proxy.Partition()
	for i := range 10 {
		resp, raw, took := base.timed(http.MethodPost, "/v1/notifications", smsBody, key, 10*time.Second)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
		require.LessOrEqual(t, took, before+250*time.Millisecond, "request %d took %s (%s before Redis went silent)", i, took, before)
	}
	proxy.Heal()
	require.Eventually(t, func() bool {
		resp, _, _ := base.timed(http.MethodPost, "/v1/notifications", smsBody, key, 10*time.Second)
		return resp.StatusCode == http.StatusAccepted && resp.Header.Get("RateLimit") != ""
	}, 20*time.Second, 100*time.Millisecond, "counted again once Redis answers")
}
