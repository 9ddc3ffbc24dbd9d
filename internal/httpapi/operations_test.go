package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// operationStarts plays the worker's starter of operation workflows: it
// records each start and answers err.
type operationStarts struct {
	mu    sync.Mutex
	calls []operationStart
	err   error
}

type operationStart struct {
	ID      uuid.UUID
	Summary string
}

func (r *operationStarts) start(_ context.Context, id uuid.UUID, summary string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, operationStart{ID: id, Summary: summary})
	return r.err
}

func (r *operationStarts) Calls() []operationStart {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]operationStart(nil), r.calls...)
}

// withOperationStarter makes r the server's Config.Operations.
func withOperationStarter(r *operationStarts) option {
	return withConfig(func(c *config) { c.Operations = r.start })
}

// operationAnswer is an Operation as the tests read it.
type operationAnswer struct {
	ID                string            `json:"id"`
	Action            string            `json:"action"`
	Filter            map[string]any    `json:"filter"`
	MaxPerSecond      int               `json:"maxPerSecond"`
	Status            string            `json:"status"`
	Matched           int64             `json:"matched"`
	Processed         int64             `json:"processed"`
	Succeeded         int64             `json:"succeeded"`
	Skipped           int64             `json:"skipped"`
	SkippedReasons    map[string]int64  `json:"skippedReasons"`
	CancelRequestedAt *time.Time        `json:"cancelRequestedAt"`
	FinishedAt        *time.Time        `json:"finishedAt"`
	WorkflowID        string            `json:"workflowId"`
	Links             map[string]string `json:"links"`
}

func decodeOperation(t *testing.T, body []byte) operationAnswer {
	t.Helper()
	var op operationAnswer
	require.NoError(t, json.Unmarshal(body, &op), "body: %s", body)
	return op
}

// startOperation posts an operation that must be accepted (202) and returns it.
func (f *fixture) startOperation(body string, headers ...string) operationAnswer {
	f.t.Helper()
	resp, raw := f.post("/v1/operations", body, headers...)
	require.Equal(f.t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	op := decodeOperation(f.t, raw)
	require.Equal(f.t, "/v1/operations/"+op.ID, resp.Header.Get("Location"))
	return op
}

// failed creates a notification and moves it to FAILED, as its workflow
// would (failure reason, dead-letter record), and returns its id.
func (f *fixture) failed() string {
	f.t.Helper()
	id := f.create(smsBody)
	_, err := f.pool.Exec(context.Background(), `DELETE FROM outbox WHERE notification_id = $1`, id) // relayed
	require.NoError(f.t, err)
	n, err := store.Fail(context.Background(), f.pool, uuid.MustParse(id),
		notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastError: "503"})
	require.NoError(f.t, err)
	require.Equal(f.t, notification.StatusFailed, n.Status)
	return id
}

// rows is a table's rows as text, to show that nothing changed.
func (f *fixture) rows(table string) string {
	f.t.Helper()
	var s string
	require.NoError(f.t, f.pool.QueryRow(context.Background(),
		`SELECT COALESCE(json_agg(to_jsonb(x) ORDER BY to_jsonb(x)::text)::text, '[]') FROM `+table+` x`).Scan(&s))
	return s
}

func (f *fixture) retry(id string, headers ...string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(http.MethodPost, "/v1/notifications/"+id+"/retry", nil, headers...)
}

func TestRetryOfAFailedNotificationIs202WithItsNextGeneration(t *testing.T) {
	var pokes atomic.Int32
	f := setup(t, withConfig(func(c *config) { c.Accepted = func() { pokes.Add(1) } }))
	id := f.failed()
	require.EqualValues(t, 1, pokes.Load())

	resp, body := f.retry(id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	require.Empty(t, resp.Header.Get("Idempotent-Replayed"))
	var got struct {
		ID            string  `json:"id"`
		Status        string  `json:"status"`
		Retries       int     `json:"retries"`
		Attempts      int     `json:"attempts"`
		FailureReason *string `json:"failureReason"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, id, got.ID)
	require.Equal(t, "ACCEPTED", got.Status)
	require.Equal(t, 1, got.Retries)
	require.Equal(t, 3, got.Attempts, "the attempts made still show")
	require.Nil(t, got.FailureReason)
	require.EqualValues(t, 2, pokes.Load(), "the retry's outbox row wakes the relay")

	n := f.stored(id)
	require.Equal(t, 1, n.Generation)
	require.Equal(t, 3, n.AttemptBase)
	require.Equal(t, 1, count(t, f.pool, "outbox"), "one outbox row, the dead-letter record dropped")
	require.Equal(t, 1, count(t, f.pool, "dead_letter_retirements"))
	require.Equal(t, 1, f.logs.FilterMessage("notification retried").Len())

	// Accepted again, it is in flight.
	resp, body = f.retry(id)
	p := requireProblem(t, resp, body, http.StatusConflict)
	require.Equal(t, "/problems/not-retryable", p.Type)
}

func TestRetryOfWhatCannotBeRetriedIsRefused(t *testing.T) {
	f := setup(t)

	unknown := uuid.NewString()
	resp, body := f.retry(unknown)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Equal(t, "/problems/not-found", p.Type)
	require.Contains(t, p.Detail, unknown)

	resp, body = f.retry("not-a-uuid")
	p = requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))

	for _, status := range []notification.Status{notification.StatusDelivered, notification.StatusProcessing, notification.StatusAccepted, notification.StatusRetrying} {
		t.Run(string(status), func(t *testing.T) {
			f := f.in(t)
			id := f.create(smsBody)
			f.setStatus(id, status)
			before := f.rows("notifications")
			resp, body := f.retry(id)
			p := requireProblem(t, resp, body, http.StatusConflict)
			require.Equal(t, "/problems/not-retryable", p.Type)
			require.Contains(t, p.Detail, string(status))
			require.Equal(t, before, f.rows("notifications"))
		})
	}

	t.Run("erased", func(t *testing.T) {
		f := f.in(t)
		id := f.failed()
		_, err := f.pool.Exec(context.Background(), `UPDATE notifications SET erased_at = now() WHERE id = $1`, id)
		require.NoError(t, err)
		resp, body := f.retry(id)
		p := requireProblem(t, resp, body, http.StatusConflict)
		require.Equal(t, "/problems/not-retryable", p.Type)
		require.Contains(t, p.Detail, "erased")
		require.Equal(t, notification.StatusFailed, f.stored(id).Status)
	})
	require.Zero(t, count(t, f.pool, "notification_retries"))
}

func TestRetryWithAnIdempotencyKeyIsSafeToRepeat(t *testing.T) {
	f := setup(t)
	id, other := f.failed(), f.failed()

	resp, first := f.retry(id, "Idempotency-Key", "retry-once")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", first)
	outbox := f.rows("outbox")

	resp, again := f.retry(id, "Idempotency-Key", "retry-once")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", again)
	require.Equal(t, "true", resp.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first), string(again), "the notification as it is, unchanged")
	require.Equal(t, 1, f.stored(id).Generation)
	require.Equal(t, outbox, f.rows("outbox"), "a replay writes nothing")

	resp, body := f.retry(other, "Idempotency-Key", "retry-once")
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, "/problems/idempotency-key-reused", p.Type)
	require.Equal(t, notification.StatusFailed, f.stored(other).Status)
	require.Zero(t, f.stored(other).Generation)

	resp, body = f.retry(other, "Idempotency-Key", strings.Repeat("k", 256))
	p = requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"Idempotency-Key"}, fieldNames(p))
	require.Equal(t, notification.StatusFailed, f.stored(other).Status)
	require.Equal(t, 1, count(t, f.pool, "notification_retries"))
}

func TestCreateOperationRefusesABadRequestNamingEachField(t *testing.T) {
	starts := &operationStarts{}
	f := setup(t, withOperationStarter(starts))
	f.failed()
	before := f.rows("notifications")

	cases := []struct {
		name, body string
		status     int
		fields     []string // errors[] names each (and, with a 422, only these)
		typ        string
		headers    []string
	}{
		{name: "unknown action", body: `{"action":"delete","filter":{"status":"FAILED"}}`, status: 422, fields: []string{"action"}},
		{name: "no action", body: `{"filter":{"status":"FAILED"}}`, status: 422, fields: []string{"action"}},
		{name: "action of the wrong type", body: `{"action":7,"filter":{"status":"FAILED"}}`, status: 422, fields: []string{"action"}},
		{name: "no filter", body: `{"action":"retry"}`, status: 422, fields: []string{"filter"}},
		{name: "null filter", body: `{"action":"retry","filter":null}`, status: 422, fields: []string{"filter"}},
		{name: "empty filter", body: `{"action":"erase","filter":{}}`, status: 422, fields: []string{"filter"}},
		{name: "unknown status", body: `{"action":"retry","filter":{"status":"BROKEN"}}`, status: 422, fields: []string{"filter.status"}},
		{name: "unknown channel", body: `{"action":"retry","filter":{"channel":"fax"}}`, status: 422, fields: []string{"filter.channel"}},
		{name: "unknown priority", body: `{"action":"retry","filter":{"priority":"URGENT"}}`, status: 422, fields: []string{"filter.priority"}},
		{name: "batchId not a UUID", body: `{"action":"cancel","filter":{"batchId":"batch-7"}}`, status: 422, fields: []string{"filter.batchId"}},
		{name: "createdFrom not a date-time", body: `{"action":"retry","filter":{"createdFrom":"yesterday"}}`, status: 422, fields: []string{"filter.createdFrom"}},
		{name: "createdTo not after createdFrom", body: `{"action":"retry","filter":{"createdFrom":"2026-01-02T00:00:00Z","createdTo":"2026-01-01T00:00:00Z"}}`, status: 422, fields: []string{"filter.createdTo"}},
		{name: "unknown failureReason", body: `{"action":"retry","filter":{"failureReason":"bored"}}`, status: 422, fields: []string{"filter.failureReason"}},
		{name: "empty recipient", body: `{"action":"erase","filter":{"recipient":""}}`, status: 422, fields: []string{"filter.recipient"}},
		{name: "maxPerSecond zero", body: `{"action":"retry","filter":{"status":"FAILED"},"maxPerSecond":0}`, status: 422, fields: []string{"maxPerSecond"}},
		{name: "maxPerSecond over 5000", body: `{"action":"retry","filter":{"status":"FAILED"},"maxPerSecond":5001}`, status: 422, fields: []string{"maxPerSecond"}},
		{name: "maxPerSecond not an integer", body: `{"action":"retry","filter":{"status":"FAILED"},"maxPerSecond":2.5}`, status: 422, fields: []string{"maxPerSecond"}},
		{name: "unknown field", body: `{"action":"retry","filter":{"status":"FAILED"},"force":true}`, status: 422, fields: []string{"force"}},
		{name: "every bad field at once",
			body:   `{"action":"purge","filter":{"status":"X","batchId":"y","createdFrom":"z","failureReason":"w"},"maxPerSecond":0}`,
			status: 422, fields: []string{"action", "filter.status", "filter.batchId", "filter.createdFrom", "filter.failureReason", "maxPerSecond"}},
		{name: "invalid Idempotency-Key", body: `{"action":"retry","filter":{"status":"FAILED"}}`, status: 422, fields: []string{"Idempotency-Key"},
			headers: []string{"Idempotency-Key", strings.Repeat("k", 256)}},
		{name: "malformed JSON", body: `{"action":"retry",`, status: 400, typ: "/problems/malformed-request"},
		{name: "not JSON", body: `{"action":"retry","filter":{"status":"FAILED"}}`, status: 415, typ: "/problems/unsupported-media-type",
			headers: []string{"Content-Type", "text/plain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.in(t).post("/v1/operations", tc.body, tc.headers...)
			p := requireProblem(t, resp, body, tc.status)
			if tc.typ != "" {
				require.Equal(t, tc.typ, p.Type)
			}
			if tc.status == http.StatusUnprocessableEntity {
				require.Equal(t, "/problems/validation-error", p.Type)
				require.ElementsMatch(t, tc.fields, fieldNames(p), "body: %s", body)
				for _, e := range p.Errors {
					require.NotEmpty(t, e.Message, "field %s has a message", e.Field)
				}
			}
		})
	}

	t.Run("unknown filter field", func(t *testing.T) {
		resp, body := f.in(t).post("/v1/operations", `{"action":"retry","filter":{"status":"FAILED","colour":"red"}}`)
		p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
		require.Len(t, p.Errors, 1)
		require.Contains(t, p.Errors[0].Field, "colour")
	})

	require.Zero(t, count(t, f.pool, "operations"), "no refused request is stored")
	require.Empty(t, starts.Calls(), "nor started")
	require.Equal(t, before, f.rows("notifications"))
}

func TestDryRunCountsTheMatchesAndChangesNothing(t *testing.T) {
	starts := &operationStarts{}
	f := setup(t, withOperationStarter(starts))
	for range 3 {
		f.failed()
	}
	delivered := f.create(smsBody)
	f.setStatus(delivered, notification.StatusDelivered)
	f.create(`{"channel":"email","recipient":"ann@example.com","subject":"s","content":"hi"}`)
	before := f.rows("notifications")

	resp, body := f.post("/v1/operations", `{"action":"retry","filter":{"status":"FAILED"},"dryRun":true}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Empty(t, resp.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, `{"dryRun":true,"action":"retry","filter":{"status":"FAILED"},"matched":3}`, string(body))

	resp, body = f.post("/v1/operations", `{"action":"erase","filter":{"recipient":"+14155550123"},"dryRun":true}`,
		"Idempotency-Key", "dry-1")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	var dry struct {
		DryRun  bool              `json:"dryRun"`
		Filter  map[string]string `json:"filter"`
		Matched int               `json:"matched"`
	}
	require.NoError(t, json.Unmarshal(body, &dry))
	require.True(t, dry.DryRun)
	require.Equal(t, 4, dry.Matched, "the three failed and the delivered sms")
	require.NotEqual(t, "+14155550123", dry.Filter["recipient"], "the recipient is masked")
	require.NotContains(t, string(body), "+14155550123")

	resp, body = f.post("/v1/operations", `{"action":"cancel","filter":{"channel":"push"},"dryRun":true}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"dryRun":true,"action":"cancel","filter":{"channel":"push"},"matched":0}`, string(body))

	require.Zero(t, count(t, f.pool, "operations"), "a dry run stores no operation")
	require.Equal(t, before, f.rows("notifications"), "nor changes a notification")
	require.Empty(t, starts.Calls(), "nor starts a workflow")
}

func TestCreateOperationIs202AndStartsItsWorkflowOnce(t *testing.T) {
	starts := &operationStarts{}
	f := setup(t, withOperationStarter(starts))
	for range 3 {
		f.failed()
	}
	f.create(smsBody)

	resp, body := f.post("/v1/operations", `{"action":"retry","filter":{"status":"FAILED","channel":"sms"},"maxPerSecond":200}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	op := decodeOperation(t, body)
	id, err := uuid.Parse(op.ID)
	require.NoError(t, err)
	require.Equal(t, "/v1/operations/"+op.ID, resp.Header.Get("Location"))
	require.Equal(t, "retry", op.Action)
	require.Equal(t, map[string]any{"status": "FAILED", "channel": "sms"}, op.Filter)
	require.Equal(t, 200, op.MaxPerSecond)
	require.Equal(t, "RUNNING", op.Status)
	require.EqualValues(t, 3, op.Matched)
	require.Zero(t, op.Processed)
	require.Zero(t, op.Skipped)
	require.Empty(t, op.SkippedReasons)
	require.Nil(t, op.FinishedAt)
	require.Equal(t, "operation-"+op.ID, op.WorkflowID)
	require.Equal(t, map[string]string{"self": "/v1/operations/" + op.ID,
		"temporal": temporalUI + "/namespaces/" + temporalNamespace + "/workflows/operation-" + op.ID}, op.Links)
	require.Equal(t, []operationStart{{ID: id, Summary: "retry of 3 notifications"}}, starts.Calls())
	require.Equal(t, 1, f.logs.FilterMessage("operation started").Len())

	stored, err := store.GetOperation(context.Background(), f.pool, id)
	require.NoError(t, err)
	require.Equal(t, store.OperationRunning, stored.Status)
	require.Equal(t, 200, stored.MaxPerSecond)

	resp, got := f.get("/v1/operations/" + op.ID)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", got)
	require.JSONEq(t, string(body), string(got))

	// The default pace.
	paced := f.startOperation(`{"action":"cancel","filter":{"status":"ACCEPTED"}}`)
	require.Equal(t, 500, paced.MaxPerSecond)
	require.EqualValues(t, 1, paced.Matched)
	require.Len(t, starts.Calls(), 2)

	unknown := uuid.NewString()
	resp, body = f.get("/v1/operations/" + unknown)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Contains(t, p.Detail, unknown)
	resp, body = f.get("/v1/operations/12345")
	p = requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))
}

func TestCreateOperationWhoseWorkflowDoesNotStartIsStillAccepted(t *testing.T) {
	starts := &operationStarts{err: errors.New("temporal unavailable")}
	f := setup(t, withOperationStarter(starts))
	f.failed()

	op := f.startOperation(`{"action":"retry","filter":{"status":"FAILED"}}`)
	require.Equal(t, "RUNNING", op.Status)
	require.Len(t, starts.Calls(), 1)
	stored, err := store.GetOperation(context.Background(), f.pool, uuid.MustParse(op.ID))
	require.NoError(t, err)
	require.Equal(t, store.OperationRunning, stored.Status, "stored, for the worker to start")
	warned := f.logs.FilterMessageSnippet("not started").All()
	require.Len(t, warned, 1)
	require.Equal(t, op.ID, warned[0].ContextMap()["operation_id"])
}

func TestCreateOperationWithAnIdempotencyKeyReplays(t *testing.T) {
	starts := &operationStarts{}
	f := setup(t, withOperationStarter(starts))
	f.failed()

	first := f.startOperation(`{"action":"retry","filter":{"status":"FAILED","channel":"sms"}}`, "Idempotency-Key", "op-1")
	for _, same := range []string{
		`{"action":"retry","filter":{"status":"FAILED","channel":"sms"}}`,
		`{"filter":{"channel":"sms","status":"FAILED"},"action":"retry","maxPerSecond":500}`, // the default spelt out
	} {
		resp, body := f.post("/v1/operations", same, "Idempotency-Key", "op-1")
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		require.Equal(t, "true", resp.Header.Get("Idempotent-Replayed"))
		require.Equal(t, "/v1/operations/"+first.ID, resp.Header.Get("Location"))
		require.Equal(t, first.ID, decodeOperation(t, body).ID)
	}

	for _, other := range []string{
		`{"action":"cancel","filter":{"status":"FAILED","channel":"sms"}}`,
		`{"action":"retry","filter":{"status":"FAILED"}}`,
		`{"action":"retry","filter":{"status":"FAILED","channel":"sms"},"maxPerSecond":10}`,
	} {
		resp, body := f.post("/v1/operations", other, "Idempotency-Key", "op-1")
		p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
		require.Equal(t, "/problems/idempotency-key-reused", p.Type)
	}
	require.Equal(t, 1, count(t, f.pool, "operations"))
	require.Len(t, starts.Calls(), 1, "a replay starts nothing")
}

func TestListOperationsPagesNewestFirstThroughEveryOperationOnce(t *testing.T) {
	f := setup(t, withOperationStarter(&operationStarts{}))
	var created []string
	for i := range 5 {
		created = append(created, f.startOperation(fmt.Sprintf(`{"action":"retry","filter":{"status":"FAILED"},"maxPerSecond":%d}`, i+1)).ID)
	}

	var seen []string
	pages := 0
	q := "/v1/operations?limit=2"
	for range 10 {
		resp, body := f.get(q)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		var page struct {
			Data       []operationAnswer `json:"data"`
			NextCursor *string           `json:"nextCursor"`
		}
		require.NoError(t, json.Unmarshal(body, &page))
		require.LessOrEqual(t, len(page.Data), 2)
		pages++
		for _, op := range page.Data {
			require.NotContains(t, seen, op.ID, "no operation twice")
			seen = append(seen, op.ID)
		}
		if page.NextCursor == nil {
			break
		}
		q = "/v1/operations?limit=2&cursor=" + url.QueryEscape(*page.NextCursor)
	}
	require.Equal(t, 3, pages)
	require.Equal(t, []string{created[4], created[3], created[2], created[1], created[0]}, seen)

	resp, body := f.get("/v1/operations")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), `"nextCursor":null`)

	// A cursor of the notifications listing is not one of this listing.
	f.create(smsBody)
	f.create(smsBody)
	_, body = f.get("/v1/notifications?limit=1")
	var notes struct {
		NextCursor *string `json:"nextCursor"`
	}
	require.NoError(t, json.Unmarshal(body, &notes))
	require.NotNil(t, notes.NextCursor)

	for query, field := range map[string]string{
		"cursor=not-a-cursor":                          "cursor",
		"cursor=" + url.QueryEscape(*notes.NextCursor): "cursor",
		"status=FAILED":                                "status",
		"limit=0":                                      "limit",
		"limit=101":                                    "limit",
	} {
		resp, body := f.get("/v1/operations?" + query)
		p := requireProblem(t, resp, body, http.StatusBadRequest)
		require.Equal(t, []string{field}, fieldNames(p), "query %s", query)
	}
}

func TestCancelOperation(t *testing.T) {
	ctx := context.Background()
	f := setup(t, withOperationStarter(&operationStarts{}))
	for range 3 {
		f.failed()
	}

	running := f.startOperation(`{"action":"retry","filter":{"status":"FAILED"}}`)
	resp, body := f.do(http.MethodPost, "/v1/operations/"+running.ID+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	requested := decodeOperation(t, body)
	require.NotNil(t, requested.CancelRequestedAt)
	require.Equal(t, "RUNNING", requested.Status, "it stops after the page it is on")

	resp, body = f.do(http.MethodPost, "/v1/operations/"+running.ID+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	require.True(t, requested.CancelRequestedAt.Equal(*decodeOperation(t, body).CancelRequestedAt), "the first request's time stays")

	res, err := store.RunPage(ctx, f.pool, uuid.MustParse(running.ID), 100)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCancelled}, res)
	resp, body = f.do(http.MethodPost, "/v1/operations/"+running.ID+"/cancel", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	cancelled := decodeOperation(t, body)
	require.Equal(t, "CANCELLED", cancelled.Status)
	require.NotNil(t, cancelled.FinishedAt)
	require.Zero(t, cancelled.Processed)
	require.Equal(t, 3, count(t, f.pool, "notifications WHERE status = 'FAILED'"), "cancelled before its first page, it did nothing")

	completed := f.startOperation(`{"action":"cancel","filter":{"status":"SENT"}}`)
	res, err = store.RunPage(ctx, f.pool, uuid.MustParse(completed.ID), 100)
	require.NoError(t, err)
	require.Equal(t, store.OperationCompleted, res.Status)
	failed := f.startOperation(`{"action":"cancel","filter":{"status":"SENT"}}`)
	require.NoError(t, store.FailOperation(ctx, f.pool, uuid.MustParse(failed.ID), "could not start"))
	for status, id := range map[string]string{"COMPLETED": completed.ID, "FAILED": failed.ID} {
		resp, body = f.do(http.MethodPost, "/v1/operations/"+id+"/cancel", nil)
		p := requireProblem(t, resp, body, http.StatusConflict)
		require.Equal(t, "/problems/not-cancellable", p.Type)
		require.Contains(t, p.Detail, status)
		_, body = f.get("/v1/operations/" + id)
		require.Equal(t, status, decodeOperation(t, body).Status)
		require.Nil(t, decodeOperation(t, body).CancelRequestedAt)
	}

	unknown := uuid.NewString()
	resp, body = f.do(http.MethodPost, "/v1/operations/"+unknown+"/cancel", nil)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Contains(t, p.Detail, unknown)
	resp, body = f.do(http.MethodPost, "/v1/operations/nope/cancel", nil)
	p = requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))
}

func TestAnOperationsRecipientIsMaskedInAnswersAndErasedWhenItFinishes(t *testing.T) {
	const person = "+14155550123" // smsBody's recipient
	f := setup(t, withOperationStarter(&operationStarts{}))
	f.failed()
	f.create(smsBody)
	f.create(`{"channel":"sms","recipient":"+14155550199","content":"someone else"}`)

	op := f.startOperation(`{"action":"erase","filter":{"recipient":"` + person + `"}}`)
	require.EqualValues(t, 2, op.Matched)
	require.NotEqual(t, person, op.Filter["recipient"])
	require.Equal(t, notification.MaskRecipient("", person), op.Filter["recipient"])

	resp, body := f.get("/v1/operations/" + op.ID)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, string(body), person)
	_, body = f.get("/v1/operations")
	require.NotContains(t, string(body), person)
	for _, e := range f.logs.All() {
		for k, v := range e.ContextMap() {
			require.NotContains(t, fmt.Sprint(v), person, "field %s of %q", k, e.Message)
		}
	}

	for range 10 {
		res, err := store.RunPage(context.Background(), f.pool, uuid.MustParse(op.ID), 100)
		require.NoError(t, err)
		if res.Done {
			break
		}
	}
	_, body = f.get("/v1/operations/" + op.ID)
	done := decodeOperation(t, body)
	require.Equal(t, "COMPLETED", done.Status)
	require.EqualValues(t, 2, done.Succeeded)
	require.Equal(t, store.Erased, done.Filter["recipient"])
	require.Equal(t, 1, count(t, f.pool, "notifications WHERE recipient = '+14155550199'"), "another person's stays")
	require.Equal(t, 2, count(t, f.pool, "notifications WHERE erased_at IS NOT NULL"))

	// An erased notification shows it, and cannot be retried.
	var erased string
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT id::text FROM notifications WHERE status = 'FAILED'`).Scan(&erased))
	_, body = f.get("/v1/notifications/" + erased)
	var n struct {
		Recipient string     `json:"recipient"`
		Content   string     `json:"content"`
		ErasedAt  *time.Time `json:"erasedAt"`
	}
	require.NoError(t, json.Unmarshal(body, &n))
	require.Equal(t, store.Erased, n.Recipient)
	require.Equal(t, store.Erased, n.Content)
	require.NotNil(t, n.ErasedAt)
	resp, body = f.retry(erased)
	p := requireProblem(t, resp, body, http.StatusConflict)
	require.Equal(t, "/problems/not-retryable", p.Type)
}

func TestCreateOperationWithoutAStarterIs503(t *testing.T) {
	f := setup(t) // Config.Operations nil
	f.failed()

	resp, body := f.post("/v1/operations", `{"action":"retry","filter":{"status":"FAILED"}}`)
	p := requireProblem(t, resp, body, http.StatusServiceUnavailable)
	require.Equal(t, "/problems/service-unavailable", p.Type)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Zero(t, count(t, f.pool, "operations"))

	// A dry run needs no workflow.
	resp, body = f.post("/v1/operations", `{"action":"retry","filter":{"status":"FAILED"},"dryRun":true}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"dryRun":true,"action":"retry","filter":{"status":"FAILED"},"matched":1}`, string(body))
}

func TestEightSimultaneousOperationsWithOneKeyCreateOne(t *testing.T) {
	starts := &operationStarts{}
	f := setup(t, withOperationStarter(starts))
	f.failed()
	const (
		clients = 8
		body    = `{"action":"retry","filter":{"status":"FAILED"}}`
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
			e.req, e.resp, e.raw, e.err = f.send(http.MethodPost, "/v1/operations", []byte(body), "Idempotency-Key", "op-race")
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
		require.Equal(t, id, got, "every client gets the same operation")
	}
	require.Equal(t, 1, codes[http.StatusAccepted], "one request creates it: %v", codes)
	require.Equal(t, clients-1, codes[http.StatusOK]+codes[http.StatusConflict], "the others replay it or find it in progress: %v", codes)
	require.Equal(t, 1, count(t, f.pool, "operations"))
	require.Equal(t, []operationStart{{ID: uuid.MustParse(id), Summary: "retry of 1 notifications"}}, starts.Calls())
}

func TestOperationRoutesRefuseOtherMethods(t *testing.T) {
	f := setup(t, withOperationStarter(&operationStarts{}))
	id := f.create(smsBody)
	op := f.startOperation(`{"action":"cancel","filter":{"status":"ACCEPTED"}}`)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/notifications/" + id + "/retry", "POST"},
		{http.MethodDelete, "/v1/operations", "GET, HEAD, POST"},
		{http.MethodPut, "/v1/operations/" + op.ID, "GET, HEAD"},
		{http.MethodGet, "/v1/operations/" + op.ID + "/cancel", "POST"},
	} {
		resp, body := f.do(tc.method, tc.path, nil)
		p := requireProblem(t, resp, body, http.StatusMethodNotAllowed)
		require.Equal(t, "/problems/method-not-allowed", p.Type)
		require.Equal(t, tc.allow, resp.Header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
}

func TestOperationReplayMatchesTheSameInstantHoweverItIsSpelled(t *testing.T) {
	f := setup(t, withOperationStarter(&operationStarts{}))
	first := f.startOperation(`{"action":"retry","filter":{"createdFrom":"2026-01-02T01:00:00+01:00"}}`, "Idempotency-Key", "op-instant")
	// The same request: the same instant, in UTC (a notification's key
	// matches it so: TestReplayMatchesTheSameRequestHoweverItIsSpelled).
	resp, body := f.post("/v1/operations", `{"action":"retry","filter":{"createdFrom":"2026-01-02T00:00:00Z"}}`, "Idempotency-Key", "op-instant")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Equal(t, first.ID, decodeOperation(t, body).ID)
}
