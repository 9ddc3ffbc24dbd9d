package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// as is the fixture calling with key: another tenant's view of the API.
func (f *fixture) as(key string) *fixture {
	c := *f
	c.apiKey = key
	return &c
}

// tenantKey creates a tenant named name and a key of it, in the fixture's
// database, as `dispatchctl keys create` does.
func (f *fixture) tenantKey(name string) string {
	f.t.Helper()
	key, k, err := store.CreateAPIKey(context.Background(), f.pool, name, "test", nil)
	require.NoError(f.t, err)
	require.Equal(f.t, name, k.TenantName)
	return key
}

// TestAnotherTenantsResourcesAreNotFound: every /v1 resource of tenant A
// answers 404 to tenant B, exactly as an id that does not exist, and B's
// lists hold none of A's rows; A still sees all of them.
func TestAnotherTenantsResourcesAreNotFound(t *testing.T) {
	starts := &operationStarts{}
	a := setup(t, withOperationStarter(starts))
	b := a.as(a.tenantKey("tenant-b"))

	note := a.create(smsBody)
	failed := a.failed()
	_, batch := a.createBatch(`{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"in a batch"}]}`)
	op := a.startOperation(`{"action":"cancel","filter":{"channel":"push"}}`)
	cursor := a.list("limit=1").NextCursor
	require.NotNil(t, cursor, "A has several notifications")

	for _, probe := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/notifications/" + note, ""},
		{http.MethodGet, "/v1/notifications/" + note + "/attempts", ""},
		{http.MethodPost, "/v1/notifications/" + note + "/cancel", ""},
		{http.MethodPost, "/v1/notifications/" + failed + "/retry", ""},
		{http.MethodGet, "/v1/batches/" + batch.BatchID, ""},
		{http.MethodGet, "/v1/operations/" + op.ID, ""},
		{http.MethodPost, "/v1/operations/" + op.ID + "/cancel", ""},
		{http.MethodGet, "/v1/dead-letters/sms", ""},
		{http.MethodPost, "/v1/dead-letters/sms/purge", ""},
	} {
		t.Run(probe.method+" "+probe.path, func(t *testing.T) {
			var body []byte
			if probe.body != "" {
				body = []byte(probe.body)
			}
			resp, raw := b.in(t).do(probe.method, probe.path, body)
			p := requireProblem(t, resp, raw, http.StatusNotFound)
			require.Equal(t, "/problems/not-found", p.Type)
		})
	}

	require.Empty(t, b.list("").Data, "B lists none of A's notifications")
	require.Empty(t, b.list("batchId="+batch.BatchID).Data)
	resp, raw := b.get("/v1/operations")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ops OperationListAnswer
	require.NoError(t, json.Unmarshal(raw, &ops))
	require.Empty(t, ops.Data, "B lists none of A's operations")

	resp, raw = b.get("/v1/notifications?limit=1&cursor=" + *cursor)
	p := requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Contains(t, fieldNames(p), "cursor", "a cursor does not cross tenants")

	// B's cancel operation over every channel touched none of A's.
	bop := b.startOperation(`{"action":"cancel","filter":{"channel":"sms"}}`)
	require.Zero(t, bop.Matched, "B's operation matches none of A's notifications")

	// A still sees everything it made, and nothing of it changed.
	resp, _ = a.get("/v1/notifications/" + note)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ACCEPTED", string(a.stored(note).Status))
	require.Equal(t, "FAILED", string(a.stored(failed).Status))
	require.Len(t, a.list("").Data, 3)
	resp, _ = a.get("/v1/operations/" + op.ID)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, a.batchSummary(batch.BatchID).Total)
	_, raw = a.get("/v1/operations")
	require.NoError(t, json.Unmarshal(raw, &ops))
	require.Len(t, ops.Data, 1, "A lists its own operation, not B's")
}

// OperationListAnswer is GET /v1/operations as the tests read it.
type OperationListAnswer struct {
	Data []operationAnswer `json:"data"`
}

// TestTheSameIdempotencyKeyInTwoTenantsMakesTwoNotifications: keys are
// unique per tenant; two tenants sending the same key at the same moment
// both succeed, with a notification each, and neither learns of the other.
func TestTheSameIdempotencyKeyInTwoTenantsMakesTwoNotifications(t *testing.T) {
	a := setup(t)
	b := a.as(a.tenantKey("tenant-b"))
	key := "shared-" + uuid.NewString()
	for round := range 5 {
		k := key + "-" + string(rune('a'+round))
		var (
			wg     sync.WaitGroup
			status [2]int
			ids    [2]string
		)
		for i, f := range []*fixture{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, resp, raw, err := f.send(http.MethodPost, "/v1/notifications", []byte(smsBody), "Idempotency-Key", k)
				if err != nil {
					return
				}
				var n struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(raw, &n)
				status[i], ids[i] = resp.StatusCode, n.ID
			}()
		}
		wg.Wait()
		require.Equal(t, [2]int{http.StatusAccepted, http.StatusAccepted}, status, "round %d", round)
		require.NotEqual(t, ids[0], ids[1], "two notifications")
		// A repeat in each tenant replays that tenant's own.
		for i, f := range []*fixture{a, b} {
			resp, raw := f.post("/v1/notifications", smsBody, "Idempotency-Key", k)
			require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
			require.Contains(t, string(raw), ids[i])
		}
	}
	var n int
	require.NoError(t, a.pool.QueryRow(context.Background(),
		`SELECT count(DISTINCT tenant_id) FROM notifications WHERE idempotency_key LIKE $1`, key+"%").Scan(&n))
	require.Equal(t, 2, n)
}

// TestARevokedKeyIsRefusedAtOnceByEveryAPIProcess: two API servers on one
// database; a key revoked through the store (as dispatchctl does) is 401 on
// both at the next request, and a key of another tenant keeps working.
func TestARevokedKeyIsRefusedAtOnceByEveryAPIProcess(t *testing.T) {
	one := setup(t)
	two := setup(t, withDSN(one.pool.Config().ConnString()))
	key := one.tenantKey("tenant-b")
	other := one.tenantKey("tenant-c")
	for _, f := range []*fixture{one, two} {
		resp, raw := f.as(key).post("/v1/notifications", smsBody)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	}
	_, err := store.RevokeAPIKey(context.Background(), one.pool, key[:11])
	require.NoError(t, err)
	for _, f := range []*fixture{one, two} {
		resp, raw := f.as(key).post("/v1/notifications", smsBody)
		requireProblem(t, resp, raw, http.StatusUnauthorized)
		resp, raw = f.as(key).get("/v1/notifications")
		requireProblem(t, resp, raw, http.StatusUnauthorized)
		resp, _ = f.as(other).get("/v1/notifications")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	keys, err := store.ListAPIKeys(context.Background(), one.pool, "tenant-b")
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NotNil(t, keys[0].RevokedAt)
	require.NotNil(t, keys[0].LastUsedAt, "its use was recorded")
	var stored []byte
	require.NoError(t, one.pool.QueryRow(context.Background(), `SELECT hash FROM api_keys WHERE prefix = $1`, key[:11]).Scan(&stored))
	require.Equal(t, store.HashAPIKey(key), stored, "only the key's hash is stored")
	require.NotContains(t, one.rows("api_keys"), key[11:])
}
