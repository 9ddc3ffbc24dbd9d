package activities_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/outbox"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		code int
		want workflows.Outcome
	}{
		{200, workflows.OutcomeDelivered},
		{201, workflows.OutcomeDelivered},
		{204, workflows.OutcomeDelivered},
		{408, workflows.OutcomeRetry},
		{425, workflows.OutcomeRetry},
		{429, workflows.OutcomeRetry},
		{500, workflows.OutcomeRetry},
		{503, workflows.OutcomeRetry},
		{400, workflows.OutcomePermanent},
		{401, workflows.OutcomePermanent},
		{404, workflows.OutcomePermanent},
		{410, workflows.OutcomePermanent},
		{422, workflows.OutcomePermanent},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			require.Equal(t, tt.want, provider.Classify(tt.code))
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{"seconds", "7", 7 * time.Second},
		{"seconds with spaces", " 120 ", 2 * time.Minute},
		{"zero seconds", "0", 0},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"http date in the past", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"negative", "-5", 0},
		{"garbage", "soon", 0},
		{"huge seconds capped at a day", "999999999", 24 * time.Hour},
		{"far http date capped at a day", now.Add(72 * time.Hour).Format(http.TimeFormat), 24 * time.Hour},
		{"empty", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, provider.ParseRetryAfter(tt.header, now))
		})
	}
}

// providerRequest is one request the fake provider received.
type providerRequest struct {
	header http.Header
	body   []byte
}

// fakeProvider is the webhook endpoint, answering with respond.
type fakeProvider struct {
	url      string
	requests chan providerRequest
	calls    atomic.Int32
}

func newProvider(t *testing.T, respond func(w http.ResponseWriter)) *fakeProvider {
	t.Helper()
	p := &fakeProvider{requests: make(chan providerRequest, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		p.requests <- providerRequest{header: r.Header.Clone(), body: body}
		respond(w)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL + "/webhook"
	return p
}

// newActivities returns Activities on a fresh database, a real Redis limiter
// and the given provider URL.
func newActivities(t *testing.T, webhookURL string) *activities.Activities {
	t.Helper()
	pool, _ := testenv.Pool(t)
	rdb, prefix := testenv.Redis(t)
	acts := &activities.Activities{
		Pool:          pool,
		Limiter:       ratelimit.New(rdb, prefix, map[string]int{string(notification.SMS): 1000, string(notification.Email): 1000, string(notification.Push): 1000}),
		Metrics:       metrics.NewWorker(),
		Log:           zap.NewNop(),
		FastPathCalls: make(chan struct{}, 4),
	}
	useProvider(t, acts, webhookURL)
	return acts
}

func createNotification(t *testing.T, pool *pgxpool.Pool) store.Notification {
	t.Helper()
	n, err := store.CreateNotification(context.Background(), pool, store.NewNotification{
		ID:        uuid.Must(uuid.NewV7()),
		Channel:   notification.SMS,
		Priority:  notification.High,
		Recipient: "+15550100",
		Content:   "your code is 123456",
		Metadata:  json.RawMessage(`{"campaign":"otp"}`),
	})
	require.NoError(t, err)
	return n
}

var deliverPolicy = workflows.RetryPolicy{
	MaxAttempts:        3,
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaxInterval:        2 * time.Second,
}

// execute runs the Deliver activity in a test activity environment.
func execute(acts *activities.Activities, in workflows.DeliverInput) (converter.EncodedValue, error) {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.Deliver, activity.RegisterOptions{Name: workflows.DeliverActivity})
	return env.ExecuteActivity(workflows.DeliverActivity, in)
}

// deliver runs the Deliver activity, which must succeed, and returns its result.
func deliver(t *testing.T, acts *activities.Activities, in workflows.DeliverInput) workflows.DeliverResult {
	t.Helper()
	val, err := execute(acts, in)
	require.NoError(t, err)
	var res workflows.DeliverResult
	require.NoError(t, val.Get(&res))
	return res
}

func attempts(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) []store.Attempt {
	t.Helper()
	list, err := store.ListAttempts(context.Background(), pool, id)
	require.NoError(t, err)
	return list
}

func load(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) store.Notification {
	t.Helper()
	n, err := store.GetNotification(context.Background(), pool, id)
	require.NoError(t, err)
	return n
}

func TestDeliverRecordsAttemptAndMarksDelivered(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy})

	require.Equal(t, workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200, Provider: "default"}, res)

	require.EqualValues(t, 1, p.calls.Load())
	req := <-p.requests
	require.Equal(t, n.ID.String(), req.header.Get("webhook-id"))
	require.Equal(t, "application/json", req.header.Get("Content-Type"))
	var body activities.Payload
	require.NoError(t, json.Unmarshal(req.body, &body))
	require.Equal(t, n.ID.String(), body.ID)
	require.Equal(t, notification.SMS, body.Channel)
	require.Equal(t, notification.High, body.Priority)
	require.Equal(t, "+15550100", body.Recipient)
	require.Equal(t, "your code is 123456", body.Content)
	require.JSONEq(t, `{"campaign":"otp"}`, string(body.Metadata))
	require.Equal(t, 1, body.Attempt)

	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusDelivered, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.NotNil(t, got.DeliveredAt)
	require.Nil(t, got.NextAttemptAt)

	rows := attempts(t, acts.Pool, n.ID)
	require.Len(t, rows, 1)
	require.Equal(t, 1, rows[0].Attempt)
	require.NotNil(t, rows[0].StatusCode)
	require.Equal(t, 200, *rows[0].StatusCode)
	require.Equal(t, string(workflows.OutcomeDelivered), rows[0].Outcome)
	require.NotNil(t, rows[0].ResponseExcerpt)
	require.Equal(t, `{"ok":true}`, *rows[0].ResponseExcerpt)
}

func TestDeliverRecordsRetryWithNextAttemptAt(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "busy")
	})
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	// The policy's backoff after attempt 1 is at most 1s, so Retry-After wins.
	require.Less(t, workflows.Backoff(notification.WorkflowID(n.ID.String()), 1, deliverPolicy, 0), 7*time.Second)

	before := time.Now()
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy})
	after := time.Now()

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, 503, res.StatusCode)
	require.Equal(t, 7*time.Second, res.RetryAfter)
	require.Equal(t, "provider answered 503", res.Error)

	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusRetrying, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.NotNil(t, got.NextAttemptAt)
	require.WithinRange(t, *got.NextAttemptAt,
		before.Add(7*time.Second).Add(-time.Millisecond), after.Add(7*time.Second).Add(time.Millisecond))
	require.NotNil(t, got.LastError)
	require.Equal(t, "provider answered 503", *got.LastError)

	rows := attempts(t, acts.Pool, n.ID)
	require.Len(t, rows, 1)
	require.NotNil(t, rows[0].StatusCode)
	require.Equal(t, 503, *rows[0].StatusCode)
	require.Equal(t, string(workflows.OutcomeRetry), rows[0].Outcome)
	require.NotNil(t, rows[0].ResponseExcerpt)
	require.Equal(t, "busy", *rows[0].ResponseExcerpt)
}

// deliverError runs the Deliver activity, which must fail, and returns its error.
func deliverError(t *testing.T, acts *activities.Activities, in workflows.DeliverInput) error {
	t.Helper()
	_, err := execute(acts, in)
	require.Error(t, err)
	return err
}

func requireNotAttempted(t *testing.T, err error) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, workflows.ErrNotAttempted, appErr.Type(), "error: %v", err)
}

func TestDeliverWhileRedisIsDownSendsNothingAndSpendsNoAttempt(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	// A Redis that is not there: the limiter fails closed and keeps waiting.
	acts.Limiter = ratelimit.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), "down:",
		map[string]int{string(notification.SMS): 1000})
	acts.SlotWait = time.Second
	n := createNotification(t, acts.Pool)

	err := deliverError(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	requireNotAttempted(t, err)
	require.Zero(t, p.calls.Load(), "nothing reached the provider")
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, 0, got.Attempts, "no attempt spent")
	require.Equal(t, n.Status, got.Status, "the status is untouched")
	require.Empty(t, attempts(t, acts.Pool, n.ID))
}

func TestDeliverWhilePostgresIsDownSendsNothing(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	down, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(down.Close)
	acts.Pool = down

	err = deliverError(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	requireNotAttempted(t, err)
	require.Zero(t, p.calls.Load(), "nothing reached the provider")
}

func TestDeliverSkipsTerminalNotification(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	_, err := acts.Pool.Exec(context.Background(), `UPDATE notifications SET status = 'CANCELLED' WHERE id = $1`, n.ID)
	require.NoError(t, err)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy})

	require.Equal(t, workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: "CANCELLED"}, res)
	require.Zero(t, p.calls.Load(), "the provider must not be called")
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusCancelled, got.Status)
	require.Equal(t, 0, got.Attempts)
	require.Empty(t, attempts(t, acts.Pool, n.ID))
}

func TestDeliverPermanentOn4xx(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "30") // ignored: retrying cannot help
		w.WriteHeader(http.StatusBadRequest)
	})
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy})

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 400, res.StatusCode)
	require.Equal(t, "provider answered 400", res.Error)
	require.EqualValues(t, 1, p.calls.Load())

	// Not terminal yet: the workflow's Fail activity marks it FAILED.
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusProcessing, got.Status)
	require.Nil(t, got.NextAttemptAt)
	rows := attempts(t, acts.Pool, n.ID)
	require.Len(t, rows, 1)
	require.Equal(t, 400, *rows[0].StatusCode)
	require.Equal(t, string(workflows.OutcomePermanent), rows[0].Outcome)
}

// executeFail runs the Fail activity and returns the status it reports.
func executeFail(t *testing.T, acts *activities.Activities, in workflows.FailInput) string {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.Fail, activity.RegisterOptions{Name: workflows.FailActivity})
	val, err := env.ExecuteActivity(workflows.FailActivity, in)
	require.NoError(t, err)
	var status string
	require.NoError(t, val.Get(&status))
	return status
}

// relayAll publishes the outbox as the worker's relay does.
func relayAll(t *testing.T, acts *activities.Activities, topo queue.Topology) {
	t.Helper()
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	relay := outbox.NewRelay(outbox.Config{Topology: topo}, acts.Pool, pub, zap.NewNop())
	_, err := relay.RelayOnce(context.Background())
	require.NoError(t, err)
}

func TestFailMarksFailedAndDeadLettersThroughTheOutbox(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	woken := 0
	acts.OutboxWritten = func() { woken++ }
	topo := testenv.Topology(t)
	n := createNotification(t, acts.Pool)

	status := executeFail(t, acts, workflows.FailInput{
		NotificationID: n.ID.String(),
		Channel:        string(notification.SMS),
		Reason:         workflows.ReasonExhausted,
		Attempts:       3,
		LastStatusCode: 503,
		LastError:      "provider answered 503",
	})
	require.Equal(t, "FAILED", status)
	require.Equal(t, 1, woken, "the relay is woken")
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusFailed, got.Status)
	require.NotNil(t, got.FailureReason)
	require.Equal(t, "exhausted", *got.FailureReason)
	require.NotNil(t, got.LastError)
	require.Equal(t, "provider answered 503", *got.LastError)

	relayAll(t, acts, topo)
	ch := testenv.Channel(t)
	dlq := topo.DeadLetterQueue(string(notification.SMS))
	msg := testenv.NextMessage(t, ch, dlq, 5*time.Second, "no message in "+dlq)

	require.Equal(t, n.ID.String(), msg.MessageId)
	require.Equal(t, "exhausted", msg.Headers[queue.HeaderReason])
	require.Equal(t, "workflow", msg.Headers[queue.HeaderSource])
	require.Equal(t, int32(3), msg.Headers[queue.HeaderAttempts])
	require.Equal(t, int32(503), msg.Headers[queue.HeaderLastStatus])
	require.Equal(t, "provider answered 503", msg.Headers[queue.HeaderLastError])
	require.NotEmpty(t, msg.Headers[queue.HeaderFailedAt])
	var body activities.Payload
	require.NoError(t, json.Unmarshal(msg.Body, &body), "body %s", msg.Body)
	require.Equal(t, n.ID.String(), body.ID)
	require.Equal(t, "your code is 123456", body.Content)
	require.Equal(t, 3, body.Attempt)

	// Only one message: the queue is empty now.
	_, ok, err := ch.Get(dlq, true)
	require.NoError(t, err)
	require.False(t, ok, "unexpected second message in %s", dlq)
}

func TestFailOfANotificationCancelledMeanwhileDeadLettersNothing(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	topo := testenv.Topology(t)
	n := createNotification(t, acts.Pool)
	_, _, err := store.RequestCancel(context.Background(), acts.Pool, n.ID)
	require.NoError(t, err)

	status := executeFail(t, acts, workflows.FailInput{NotificationID: n.ID.String(), Channel: string(notification.SMS), Reason: workflows.ReasonExhausted, Attempts: 3})

	require.Equal(t, "CANCELLED", status, "the status that stands is reported")
	relayAll(t, acts, topo)
	ch := testenv.Channel(t)
	_, ok, err := ch.Get(topo.DeadLetterQueue(string(notification.SMS)), true)
	require.NoError(t, err)
	require.False(t, ok, "a cancelled notification has no dead-letter message")
}

// useProvider makes acts deliver every channel to the webhook at url.
func useProvider(t *testing.T, acts *activities.Activities, url string) {
	t.Helper()
	providers, err := provider.NewSet(nil, provider.Defaults{WebhookURL: url, Timeout: 10 * time.Second, IdleConns: 4})
	require.NoError(t, err)
	acts.Providers = providers
}
