package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

func TestRepeatWithSameKeyAndContentReplaysTheOriginalWith200(t *testing.T) {
	f := setup(t)
	const body = `{"channel":"sms","recipient":"+14155550123","content":"code 1","idempotencyKey":"order-1"}`
	first, created := f.post("/v1/notifications", body)
	require.Equal(t, http.StatusAccepted, first.StatusCode, "body: %s", created)
	require.Empty(t, first.Header.Get("Idempotent-Replayed"))

	again, replayed := f.post("/v1/notifications", body)
	require.Equal(t, http.StatusOK, again.StatusCode, "body: %s", replayed)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.Equal(t, first.Header.Get("Location"), again.Header.Get("Location"))
	require.JSONEq(t, string(created), string(replayed))

	require.Equal(t, 1, count(t, f.pool, "notifications"))
	require.Equal(t, 1, count(t, f.pool, "outbox"))
}

func TestReplayMatchesTheSameRequestHoweverItIsSpelled(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", `{"idempotencyKey":"k-spelling","channel":"email","recipient":"user@example.com",
		"subject":"s","content":"c","metadata":{"a":1,"b":{"y":2,"x":1.50}},"expiresAt":"2099-01-01T01:00:00+01:00"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)

	// Other key order, the default priority spelt out, the same instant in UTC.
	resp, body = f.post("/v1/notifications", `{"priority":"NORMAL","metadata":{"b":{"x":1.50,"y":2},"a":1},"content":"c",
		"subject":"s","recipient":"user@example.com","channel":"email","expiresAt":"2099-01-01T00:00:00Z","idempotencyKey":"k-spelling"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Equal(t, 1, count(t, f.pool, "notifications"))
}

func TestIdempotencyKeyInHeaderActsLikeTheBodyField(t *testing.T) {
	f := setup(t)
	resp, created := f.post("/v1/notifications", smsBody, "Idempotency-Key", "hdr-1")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", created)
	require.Contains(t, string(created), `"idempotencyKey":"hdr-1"`)

	// The same key in the body is the same request.
	resp, replayed := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi","idempotencyKey":"hdr-1"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", replayed)
	require.Equal(t, "true", resp.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(created), string(replayed))

	// Both, equal, too.
	resp, _ = f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi","idempotencyKey":"hdr-1"}`,
		"Idempotency-Key", "hdr-1")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, count(t, f.pool, "notifications"))
}

func TestSameKeyWithDifferentContentIs422Problem(t *testing.T) {
	f := setup(t)
	resp, _ := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"first","idempotencyKey":"k-409"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	for _, other := range []string{
		`{"channel":"sms","recipient":"+14155550123","content":"second","idempotencyKey":"k-409"}`,
		`{"channel":"sms","recipient":"+14155550123","content":"first","priority":"HIGH","idempotencyKey":"k-409"}`,
		`{"channel":"sms","recipient":"+14155550199","content":"first","idempotencyKey":"k-409"}`,
	} {
		resp, body := f.post("/v1/notifications", other)
		p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
		require.Equal(t, "/problems/idempotency-key-reused", p.Type)
		require.NotContains(t, p.Detail, "sha256", "the fingerprint is not shown")
	}
	require.Equal(t, 1, count(t, f.pool, "notifications"))
}

func TestBodyAndHeaderKeysThatDifferAre422(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi","idempotencyKey":"a"}`,
		"Idempotency-Key", "b")
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"idempotencyKey"}, fieldNames(p))
	require.Zero(t, count(t, f.pool, "notifications"))
}

func TestInvalidIdempotencyKeyHeaderIs422(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", smsBody, "Idempotency-Key", strings.Repeat("k", 256))
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"Idempotency-Key"}, fieldNames(p))
	require.Zero(t, count(t, f.pool, "notifications"))
}

func TestEightSimultaneousIdenticalRequestsCreateOneNotification(t *testing.T) {
	f := setup(t)
	const (
		clients = 8
		body    = `{"channel":"push","recipient":"device-abc","content":"once","idempotencyKey":"race-1"}`
	)
	type exchange struct {
		req  *http.Request
		resp *http.Response
		raw  []byte
		err  error
	}
	results := make([]exchange, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			<-start
			var e exchange
			e.req, e.resp, e.raw, e.err = f.send(http.MethodPost, "/v1/notifications", []byte(body))
			results[i] = e
		})
	}
	close(start)
	wg.Wait()

	codes := map[int]int{}
	var id string
	for _, e := range results {
		require.NoError(t, e.err)
		require.NoError(t, f.contract.verify(e.req, []byte(body), e.resp, e.raw))
		codes[e.resp.StatusCode]++
		if e.resp.StatusCode == http.StatusConflict {
			// Still being processed by the first: the draft's 409.
			p := requireProblem(t, e.resp, e.raw, http.StatusConflict)
			require.Equal(t, "/problems/idempotency-key-in-use", p.Type)
			require.Equal(t, "1", e.resp.Header.Get("Retry-After"))
			continue
		}
		got := extractID(t, e.raw)
		if id == "" {
			id = got
		}
		require.Equal(t, id, got, "every client gets the same notification")
	}
	require.Equal(t, 1, codes[http.StatusAccepted], "one request creates it: %v", codes)
	require.Equal(t, clients-1, codes[http.StatusOK]+codes[http.StatusConflict], "the others replay it or find it in progress: %v", codes)
	require.Equal(t, 1, count(t, f.pool, "notifications"))
	require.Equal(t, 1, count(t, f.pool, "outbox"))
}

// TestARepeatWhileTheFirstIsStillBeingProcessedIs409: another request holds
// the key (here, a transaction holding its lock, as the first request's
// does until it commits); the repeat does nothing and says to come back.
func TestARepeatWhileTheFirstIsStillBeingProcessedIs409(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, c := range []struct{ scope, path, body string }{
		{"notification", "/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"once","idempotencyKey":"busy-1"}`},
		{"batch", "/v1/notifications/batch", `{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"once"}]}`},
	} {
		tx, err := f.pool.Begin(ctx)
		require.NoError(t, err)
		held, err := store.TryLockKey(ctx, tx, store.TenantKeyScope(c.scope, store.DefaultTenantID), "busy-1")
		require.NoError(t, err)
		require.True(t, held)

		resp, body := f.post(c.path, c.body, "Idempotency-Key", "busy-1")
		p := requireProblem(t, resp, body, http.StatusConflict)
		require.Equal(t, "/problems/idempotency-key-in-use", p.Type)
		require.Equal(t, "1", resp.Header.Get("Retry-After"))
		require.Zero(t, count(t, f.pool, "notifications"), "nothing was done")

		require.NoError(t, tx.Rollback(ctx)) // the first request ends
		resp, body = f.post(c.path, c.body, "Idempotency-Key", "busy-1")
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
		resp, body = f.post(c.path, c.body, "Idempotency-Key", "busy-1")
		require.Equal(t, http.StatusOK, resp.StatusCode, "then replayed: %s", body)
		_, err = f.pool.Exec(ctx, `TRUNCATE notifications, outbox, batches CASCADE`)
		require.NoError(t, err)
	}
}
