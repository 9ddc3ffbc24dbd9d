package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/encoding/protojson"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// queryInt answers a single integer from the stack's database.
func (s *stack) queryInt(sql string, args ...any) int {
	s.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.envValue("DATABASE_DSN"))
	require.NoError(s.t, err)
	defer func() { _ = conn.Close(ctx) }()
	var n int
	require.NoError(s.t, conn.QueryRow(ctx, sql, args...).Scan(&n))
	return n
}

// dlqMessages counts the messages in the channel's dead-letter queue.
func (s *stack) dlqMessages(channel string) int {
	s.t.Helper()
	conn, err := amqp.Dial(testenv.Shared(s.t).RabbitMQURL)
	require.NoError(s.t, err)
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	require.NoError(s.t, err)
	q, err := ch.QueueDeclarePassive(s.envValue("RABBITMQ_QUEUE_PREFIX")+"dlq."+channel, true, false, false, false, nil)
	require.NoError(s.t, err)
	return q.Messages
}

// waitOperation polls the operation until it has status.
func (s *stack) waitOperation(id, status string, within time.Duration) map[string]any {
	s.t.Helper()
	var last map[string]any
	require.Eventually(s.t, func() bool {
		_, last = s.get("/v1/operations/" + id)
		return last["status"] == status
	}, within, 50*time.Millisecond, "operation %s never reached %s; last: %v", id, status, func() any { return last })
	return last
}

// runs lists the runs of a workflow id, newest first.
func (s *stack) runs(wfID string) []string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	page, err := s.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId = %q", wfID),
	})
	require.NoError(s.t, err)
	var out []string
	for _, e := range page.GetExecutions() {
		out = append(out, e.GetExecution().GetRunId())
	}
	return out
}

func TestRetryAfterAnOutageDeliversInANewRunWithTheAttemptLogContinued(t *testing.T) {
	s := setup(t)
	s.restartWorker("RETRY_MAX_ATTEMPTS=2")
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable})

	ctx := t.Context()
	created, err := s.client.Send(ctx, smsNotification("sent again after the outage"))
	require.NoError(t, err)
	id := created.ID.String()
	failed := s.waitTerminal(created.ID, 30*time.Second)
	require.Equal(t, dispatch.StatusFAILED, failed.Status)
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == 1 }, 30*time.Second, 50*time.Millisecond, "dead-lettered")

	s.sink.SetConfig(sink.Config{}) // the provider recovers
	key := dispatch.WithIdempotencyKey("retry-" + id)
	r, err := s.client.Raw().RetryNotificationWithResponse(ctx, created.ID, nil, key)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.StatusCode(), "%s", r.Body)
	retried := r.JSON202
	require.Equal(t, 1, retried.Retries)
	require.Nil(t, retried.FailureReason)
	again, err := s.client.Raw().RetryNotificationWithResponse(ctx, created.ID, nil, key)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, again.StatusCode(), "the same key answers again: %s", again.Body)
	require.Equal(t, "true", again.Headers200.IdempotentReplayed)
	replayed, err := s.client.Retry(ctx, created.ID, key)
	require.NoError(t, err, "a replay is no error")
	require.Equal(t, 1, replayed.Retries, "and retries nothing")

	got := s.waitTerminal(created.ID, 30*time.Second)
	require.Equal(t, dispatch.StatusDELIVERED, got.Status)
	require.Equal(t, 3, got.Attempts, "two before the retry, one after")
	require.Equal(t, 1, got.Retries)
	log := s.attempts(id)
	require.Len(t, log, 3)
	require.Equal(t, []int{1, 2, 3}, []int{log[0].Attempt, log[1].Attempt, log[2].Attempt}, "the log goes on")
	require.Equal(t, []string{"retry", "retry", "delivered"}, []string{log[0].Outcome, log[1].Outcome, log[2].Outcome})
	answered, err := s.client.Attempts(ctx, created.ID)
	require.NoError(t, err)
	require.Len(t, answered, 3, "the API answers the same log")
	require.Equal(t, []string{"retry", "retry", "delivered"}, []string{answered[0].Outcome, answered[1].Outcome, answered[2].Outcome})
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Delivered)

	require.Len(t, s.runs("notification-"+id), 2, "the retry is a second run of the same workflow id")
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == 0 }, 30*time.Second, 50*time.Millisecond,
		"the retried notification leaves the DLQ")

	_, err = s.client.Retry(ctx, created.ID)
	var p *dispatch.Problem
	require.ErrorAs(t, err, &p, "a delivered notification is not retried")
	require.Equal(t, http.StatusConflict, p.Status, "%v", p)
	require.Equal(t, "/problems/not-retryable", p.Type)
}

// smsBatch creates n sms notifications in batches of at most 1,000 and
// returns their ids.
func (s *stack) smsBatch(n int, content string, extra map[string]any) []string {
	s.t.Helper()
	var ids []string
	for len(ids) < n {
		items := make([]map[string]any, 0, min(1000, n-len(ids)))
		for range cap(items) {
			item := smsRequest(content)
			for k, v := range extra {
				item[k] = v
			}
			items = append(items, item)
		}
		code, _, answer := s.post("/v1/notifications/batch", map[string]any{"notifications": items})
		require.Equal(s.t, http.StatusAccepted, code, "%v", answer)
		for _, it := range answer["notifications"].([]any) {
			ids = append(ids, it.(map[string]any)["id"].(string))
		}
	}
	return ids
}

func TestRetryOperationSurvivesAWorkerKillAndRetriesEachNotificationOnce(t *testing.T) {
	s := setup(t)
	// A fresh budget long enough to outlast the operation while the
	// provider still fails.
	s.restartWorker("RETRY_MAX_ATTEMPTS=30")
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest}) // permanent: one attempt each
	from := time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
	const n = 500
	ids := s.smsBatch(n, "failed in the outage", nil)
	require.Eventually(t, func() bool {
		return s.queryInt(`SELECT count(*) FROM notifications WHERE status = 'FAILED'`) == n
	}, 90*time.Second, 100*time.Millisecond, "all failed")
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == n }, 30*time.Second, 50*time.Millisecond, "all dead-lettered")

	// While the operation runs the provider answers 503: nothing can be
	// delivered before the test says so, so a kill mid-way cannot race a
	// delivery, and every 2xx the sink gives counts a send.
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable})
	filter := map[string]any{"status": "FAILED", "channel": "sms", "createdFrom": from}
	code, _, dry := s.post("/v1/operations", map[string]any{"action": "retry", "filter": filter, "dryRun": true})
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, n, dry["matched"])
	require.Equal(t, n, s.queryInt(`SELECT count(*) FROM notifications WHERE status = 'FAILED'`), "a dry run changes nothing")

	code, hdr, op := s.post("/v1/operations", map[string]any{"action": "retry", "filter": filter, "maxPerSecond": 50})
	require.Equal(t, http.StatusAccepted, code, "%v", op)
	opID := op["id"].(string)
	require.Equal(t, "/v1/operations/"+opID, hdr.Get("Location"))
	require.EqualValues(t, n, op["matched"])

	// Progress while it runs, then kill -9 of the worker mid-way.
	var mid map[string]any
	require.Eventually(t, func() bool {
		_, mid = s.get("/v1/operations/" + opID)
		p := mid["processed"].(float64)
		return p >= 50 && p < n/2
	}, 30*time.Second, 20*time.Millisecond, "progress is readable while it runs")
	require.Equal(t, "RUNNING", mid["status"])
	s.worker.Kill()
	_, atKill := s.get("/v1/operations/" + opID)
	s.worker = s.start("worker")

	done := s.waitOperation(opID, "COMPLETED", 90*time.Second)
	require.Greater(t, done["processed"].(float64), atKill["processed"].(float64), "it went on after the kill")
	require.EqualValues(t, n, done["processed"], "each notification visited once")
	require.EqualValues(t, n, done["succeeded"], "each retried once")
	require.EqualValues(t, 0, done["skipped"])
	require.Equal(t, n, s.queryInt(`SELECT count(*) FROM notifications WHERE generation = 1`), "no notification retried twice")

	s.sink.SetConfig(sink.Config{}) // the provider recovers
	require.Eventually(t, func() bool {
		return s.queryInt(`SELECT count(*) FROM notifications WHERE status = 'DELIVERED'`) == n
	}, 120*time.Second, 200*time.Millisecond, "all delivered")
	for _, id := range ids {
		rec, _ := s.sink.Record(id)
		require.Equal(t, 1, rec.Delivered, "%s was sent once", id)
	}
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == 0 }, 60*time.Second, 100*time.Millisecond,
		"the retried notifications leave dlq.sms")
}

func TestCancelOperationStopsAScheduledBatchOfTenThousandInAMinute(t *testing.T) {
	s := setup(t)
	const n = 10_000
	at := time.Now().Add(75 * time.Second).UTC()
	from := time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
	ids := s.smsBatch(n, "a campaign sent by mistake", map[string]any{"scheduledAt": at.Format(time.RFC3339Nano), "priority": "LOW"})
	require.Len(t, ids, n)

	started := time.Now()
	code, _, op := s.post("/v1/operations", map[string]any{"action": "cancel", "filter": map[string]any{"createdFrom": from}})
	require.Equal(t, http.StatusAccepted, code, "%v", op)
	require.EqualValues(t, n, op["matched"])
	done := s.waitOperation(op["id"].(string), "COMPLETED", time.Minute)
	t.Logf("cancelled %d scheduled notifications in %s", n, time.Since(started).Round(time.Millisecond))
	require.EqualValues(t, n, done["succeeded"])
	require.Equal(t, n, s.queryInt(`SELECT count(*) FROM notifications WHERE status = 'CANCELLED'`))

	// None is delivered afterwards: wait past the schedule, then look.
	time.Sleep(time.Until(at.Add(3 * time.Second)))
	require.Zero(t, s.sink.Stats().Requests, "nothing reached the provider")
	require.Equal(t, n, s.queryInt(`SELECT count(*) FROM notifications WHERE status = 'CANCELLED'`))
}

func TestEraseLeavesNothingOfThePersonInAnswersRowsOrHistories(t *testing.T) {
	s := setup(t)
	const person = "+14155559876"
	secret := "your code is 482915 for the account of Ada"
	req := func(content string) map[string]any {
		return map[string]any{"channel": "sms", "recipient": person, "content": content, "priority": "HIGH",
			"metadata": map[string]any{"name": "Ada"}}
	}
	// One delivered (the provider echoes it in its reply), one failed and
	// dead-lettered, one scheduled (in flight: cancelled first), and one of
	// someone else, which stays.
	s.sink.SetConfig(sink.Config{Reply: []byte(`{"echo":"` + secret + ` to ` + person + `"}`), ReplyContentType: "application/json"})
	_, _, a := s.post("/v1/notifications", req(secret))
	s.waitStatus(a["id"].(string), "DELIVERED", 30*time.Second)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
	_, _, b := s.post("/v1/notifications", req(secret+" (again)"))
	s.waitStatus(b["id"].(string), "FAILED", 30*time.Second)
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == 1 }, 30*time.Second, 50*time.Millisecond)
	later := req(secret + " (later)")
	later["scheduledAt"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	_, _, c := s.post("/v1/notifications", later)
	s.waitStatus(c["id"].(string), "SCHEDULED", 30*time.Second)
	s.sink.SetConfig(sink.Config{})
	_, _, other := s.post("/v1/notifications", smsRequest("someone else's"))
	s.waitStatus(other["id"].(string), "DELIVERED", 30*time.Second)
	ids := []string{a["id"].(string), b["id"].(string), c["id"].(string)}

	code, _, op := s.post("/v1/operations", map[string]any{"action": "erase", "filter": map[string]any{"recipient": person}})
	require.Equal(t, http.StatusAccepted, code, "%v", op)
	require.NotContains(t, fmt.Sprint(op), person, "the answer masks the recipient")
	done := s.waitOperation(op["id"].(string), "COMPLETED", 30*time.Second)
	require.EqualValues(t, 3, done["succeeded"])
	s.waitStatus(c["id"].(string), "CANCELLED", 30*time.Second)

	leaks := func(text string) bool {
		return strings.Contains(text, person) || strings.Contains(text, "482915") || strings.Contains(text, "Ada")
	}
	for _, id := range ids {
		_, n := s.get("/v1/notifications/" + id)
		require.False(t, leaks(fmt.Sprint(n)), "answer: %v", n)
		require.Equal(t, "[erased]", n["recipient"])
		require.NotNil(t, n["erasedAt"])
		_, attempts := s.get("/v1/notifications/" + id + "/attempts")
		require.False(t, leaks(fmt.Sprint(attempts)), "attempts: %v", attempts)
	}
	_, ops := s.get("/v1/operations")
	require.False(t, leaks(fmt.Sprint(ops)), "operations: %v", ops)
	_, kept := s.get("/v1/notifications/" + other["id"].(string))
	require.Equal(t, "someone else's", kept["content"])

	// The rows: every text column that could hold it.
	for _, q := range []string{
		`SELECT count(*) FROM notifications WHERE concat_ws(' ', recipient, subject, content, metadata::text, last_error) ~ $1`,
		`SELECT count(*) FROM delivery_attempts WHERE concat_ws(' ', error, response_excerpt, receipt_reason) ~ $1`,
		`SELECT count(*) FROM operations WHERE filter::text ~ $1`,
		`SELECT count(*) FROM outbox WHERE dead_letter::text ~ $1`,
	} {
		require.Zero(t, s.queryInt(q, `\+14155559876|482915|Ada`), q)
	}
	require.Zero(t, s.queryInt(`SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[]) AND request_fingerprint IS NOT NULL`, ids),
		"the fingerprint hashed the content")
	// The histories in Temporal.
	for _, id := range ids {
		iter := s.temporal.GetWorkflowHistory(context.Background(), "notification-"+id, "", false, 0)
		for iter.HasNext() {
			ev, err := iter.Next()
			require.NoError(t, err)
			text := historyText(t, ev)
			require.False(t, leaks(text), "history of %s: %s", id, text)
		}
	}
	// The dead-letter queue: the failed one's message (its body was the
	// payload) is gone.
	require.Eventually(t, func() bool { return s.dlqMessages("sms") == 0 }, 30*time.Second, 50*time.Millisecond)
}

// historyText is a history event as text, with every payload's data
// decoded (protojson shows it base64), so a search sees what it carries.
func historyText(t *testing.T, ev *historypb.HistoryEvent) string {
	t.Helper()
	raw, err := protojson.Marshal(ev)
	require.NoError(t, err)
	var tree any
	require.NoError(t, json.Unmarshal(raw, &tree))
	var b strings.Builder
	b.Write(raw)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if s, ok := child.(string); ok && k == "data" {
					if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
						b.WriteString(" ")
						b.Write(dec)
					}
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(tree)
	return b.String()
}

// TestOperationStoredWithoutItsWorkflowIsStartedByTheWorker: the API
// stored an operation and died before starting its workflow. The worker
// finds it idle and starts it; it runs to the end.
func TestOperationStoredWithoutItsWorkflowIsStartedByTheWorker(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
	_, _, created := s.post("/v1/notifications", smsRequest("failed, then retried by a resumed operation"))
	id := created["id"].(string)
	s.waitStatus(id, "FAILED", 30*time.Second)
	s.sink.SetConfig(sink.Config{})

	opID := uuid.Must(uuid.NewV7()).String()
	s.exec(`INSERT INTO operations (id, action, filter, max_per_second, matched, created_at, updated_at)
		VALUES ($1, 'retry', '{"status":"FAILED"}', 100, 1, now(), now() - interval '2 minutes')`, opID)

	done := s.waitOperation(opID, "COMPLETED", 90*time.Second)
	require.EqualValues(t, 1, done["succeeded"])
	s.waitStatus(id, "DELIVERED", 30*time.Second)
}
