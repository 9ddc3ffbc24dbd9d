package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/deadletter"
	"github.com/dispatch-engine/dispatch-engine/internal/httpapi"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// fakeDeadLetters is dead-letter queues in memory.
type fakeDeadLetters struct {
	mu     sync.Mutex
	queues map[string][]queue.DeadLetterInfo
	limits []int // each Peek's limit
	err    error
}

func (f *fakeDeadLetters) Peek(_ context.Context, channel string, limit int) ([]queue.DeadLetterInfo, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, 0, f.err
	}
	f.limits = append(f.limits, limit)
	q := f.queues[channel]
	return slices.Clone(q[:min(limit, len(q))]), len(q), nil
}

func (f *fakeDeadLetters) PurgePoison(_ context.Context, channel string) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, 0, f.err
	}
	before := len(f.queues[channel])
	f.queues[channel] = slices.DeleteFunc(f.queues[channel], func(d queue.DeadLetterInfo) bool { return d.Poison })
	return before - len(f.queues[channel]), 0, nil
}

func withDeadLetters(d *fakeDeadLetters) option {
	return withConfig(func(c *config) { c.DeadLetters = d })
}

var (
	deadLetterID = "0195b5f2-7f00-7000-8000-000000000001"
	failedAt     = time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	failedSMS    = queue.DeadLetterInfo{MessageID: deadLetterID, NotificationID: deadLetterID, DeadLetter: notification.DeadLetter{
		Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 8, LastStatus: 503,
		LastError: "provider answered 503", FailedAt: failedAt, Generation: 1,
	}}
	poisonSMS = queue.DeadLetterInfo{MessageID: "m-1", Poison: true, DeadLetter: notification.DeadLetter{
		Reason: "unparseable", Source: notification.SourceConsumer, LastError: "not JSON", FailedAt: failedAt,
	}}
)

func smsDeadLetters() *fakeDeadLetters {
	return &fakeDeadLetters{queues: map[string][]queue.DeadLetterInfo{string(notification.SMS): {failedSMS, poisonSMS}}}
}

func TestDeadLettersListTheHeadOfAChannelsQueue(t *testing.T) {
	dlq := smsDeadLetters()
	f := setup(t, withDeadLetters(dlq))

	resp, body := f.get("/v1/dead-letters/sms")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"total":2,"data":[
		{"messageId":"`+deadLetterID+`","notificationId":"`+deadLetterID+`","reason":"exhausted","source":"workflow",
		 "attempts":8,"generation":1,"lastStatus":503,"lastError":"provider answered 503",
		 "failedAt":"2026-12-01T10:00:00.123456789Z","poison":false},
		{"messageId":"m-1","reason":"unparseable","source":"consumer","attempts":0,"generation":0,
		 "lastError":"not JSON","failedAt":"2026-12-01T10:00:00.123456789Z","poison":true}]}`, string(body))

	resp, body = f.get("/v1/dead-letters/sms?limit=1")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"total":2,"data":[{"messageId":"`+deadLetterID+`","notificationId":"`+deadLetterID+`",
		"reason":"exhausted","source":"workflow","attempts":8,"generation":1,"lastStatus":503,
		"lastError":"provider answered 503","failedAt":"2026-12-01T10:00:00.123456789Z","poison":false}]}`, string(body))

	resp, body = f.get("/v1/dead-letters/email?limit=500")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"total":0,"data":[]}`, string(body))
	require.Equal(t, []int{50, 1, 500}, dlq.limits, "50 by default")
}

func TestDeadLettersRefuseABadLimitNamingIt(t *testing.T) {
	f := setup(t, withDeadLetters(smsDeadLetters()))
	for query, field := range map[string]string{
		"limit=0": "limit", "limit=501": "limit", "limit=ten": "limit", "limit=": "limit",
		"limit=1&limit=2": "limit", "limt=5": "limt",
	} {
		resp, body := f.get("/v1/dead-letters/sms?" + query)
		p := requireProblem(t, resp, body, http.StatusBadRequest)
		require.Equal(t, "/problems/validation-error", p.Type, query)
		require.Len(t, p.Errors, 1, query)
		require.Equal(t, field, p.Errors[0].Field, query)
	}
}

func TestDeadLettersOfAnUnknownChannelAreNotFound(t *testing.T) {
	f := setup(t, withDeadLetters(smsDeadLetters()))
	for _, req := range []struct{ method, path string }{
		{http.MethodGet, "/v1/dead-letters/fax"},
		{http.MethodPost, "/v1/dead-letters/fax/purge"},
		{http.MethodGet, "/v1/dead-letters/SMS"},
	} {
		resp, body := f.do(req.method, req.path, nil)
		p := requireProblem(t, resp, body, http.StatusNotFound)
		require.Equal(t, "/problems/not-found", p.Type)
		require.Contains(t, p.Detail, "the channels are sms, email and push")
	}
	resp, body := f.get("/v1/dead-letters/sms/purge")
	requireProblem(t, resp, body, http.StatusMethodNotAllowed)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
}

func TestPurgeRemovesOnlyThePoisonMessages(t *testing.T) {
	dlq := smsDeadLetters()
	f := setup(t, withDeadLetters(dlq))

	resp, body := f.do(http.MethodPost, "/v1/dead-letters/sms/purge", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"purged":1}`, string(body))
	require.Equal(t, []queue.DeadLetterInfo{failedSMS}, dlq.queues[string(notification.SMS)], "a notification's dead letter stays")

	resp, body = f.do(http.MethodPost, "/v1/dead-letters/sms/purge", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"purged":0}`, string(body), "repeating it is safe")
}

func TestDeadLettersAnswer503WithoutTheQueues(t *testing.T) {
	down := smsDeadLetters()
	down.err = errors.New("connecting to rabbitmq: connection refused")
	for name, opts := range map[string][]option{"not configured": nil, "rabbitmq down": {withDeadLetters(down)}} {
		t.Run(name, func(t *testing.T) {
			f := setup(t, opts...)
			for _, req := range []struct{ method, path string }{
				{http.MethodGet, "/v1/dead-letters/sms"},
				{http.MethodPost, "/v1/dead-letters/sms/purge"},
			} {
				resp, body := f.do(req.method, req.path, nil)
				p := requireProblem(t, resp, body, http.StatusServiceUnavailable)
				require.Equal(t, "/problems/service-unavailable", p.Type)
				require.Equal(t, "1", resp.Header.Get("Retry-After"))
				require.NotContains(t, p.Detail, "connection refused", "the cause is logged, not shown")
			}
		})
	}
}

// TestDeadLettersOfTheRealQueues reads and purges RabbitMQ's queues through
// deadletter.Queues, holding real headers to the contract.
func TestDeadLettersOfTheRealQueues(t *testing.T) {
	dsn := testenv.Database(t)
	pool, err := store.Connect(context.Background(), dsn, 2)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	id := uuid.NewString()
	require.NoError(t, pub.Publish(context.Background(),
		topo.DeadLetterMessage(string(notification.Email), id, []byte(`{}`), notification.DeadLetter{
			Reason: "permanent", Source: notification.SourceWorkflow, Attempts: 1, LastStatus: 400, FailedAt: failedAt,
		}),
		topo.DeadLetterMessage(string(notification.Email), "", []byte("?"), notification.DeadLetter{
			Reason: "unparseable", Source: notification.SourceConsumer, LastError: "not JSON", FailedAt: failedAt,
		})))
	f := setup(t, withDSN(dsn), withConfig(func(c *config) { c.DeadLetters = deadletter.NewQueues(pool, pub) }))

	resp, body := f.get("/v1/dead-letters/email")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"total":2,"data":[
		{"messageId":"`+id+`","notificationId":"`+id+`","reason":"permanent","source":"workflow","attempts":1,
		 "generation":0,"lastStatus":400,"failedAt":"2026-12-01T10:00:00.123456789Z","poison":false},
		{"messageId":"","reason":"unparseable","source":"consumer","attempts":0,"generation":0,"lastError":"not JSON",
		 "failedAt":"2026-12-01T10:00:00.123456789Z","poison":true}]}`, string(body))

	resp, body = f.do(http.MethodPost, "/v1/dead-letters/email/purge", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.JSONEq(t, `{"purged":1}`, string(body))
	msg := testenv.NextMessage(t, testenv.Channel(t), topo.DeadLetterQueue(string(notification.Email)), 5*time.Second, "the notification's message stays")
	require.Equal(t, id, msg.MessageId)
}

// TestPurgeOfADeepQueueGoesOnAcrossRequests purges a queue deeper than one
// request steps: 202 with what is left, the listing answers meanwhile, and
// repeated requests step the same pass to its end (200, every poison message
// of the pass).
func TestPurgeOfADeepQueueGoesOnAcrossRequests(t *testing.T) {
	dsn := testenv.Database(t)
	pool, err := store.Connect(context.Background(), dsn, 4)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	const n, poison = 3000, 300
	msgs := make([]queue.Outgoing, 0, n)
	for i := range n {
		d := notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 1, FailedAt: failedAt}
		if i%10 == 0 {
			d = notification.DeadLetter{Reason: "unparseable", Source: notification.SourceConsumer, FailedAt: failedAt}
		}
		msgs = append(msgs, topo.DeadLetterMessage(string(notification.Push), uuid.NewString(), []byte(`{}`), d))
	}
	require.NoError(t, pub.Publish(context.Background(), msgs...))
	queues := deadletter.NewQueues(pool, pub)
	queues.PurgeFor = time.Millisecond // one step a request
	f := setup(t, withDSN(dsn), withConfig(func(c *config) { c.DeadLetters = queues }))

	resp, body := f.do(http.MethodPost, "/v1/dead-letters/push/purge", nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	var first httpapi.DeadLetterPurge
	require.NoError(t, json.Unmarshal(body, &first))
	require.Positive(t, first.Remaining)
	require.Less(t, first.Remaining, n)

	resp, body = f.get("/v1/dead-letters/push?limit=5")
	require.Equal(t, http.StatusOK, resp.StatusCode, "a listing during the pass: body: %s", body)
	var page httpapi.DeadLetterPage
	require.NoError(t, json.Unmarshal(body, &page))
	require.Equal(t, n-first.Purged, page.Total)

	requests := 1
	for resp.StatusCode != http.StatusOK || requests == 1 {
		require.Less(t, requests, 100, "each request steps the pass further")
		resp, body = f.do(http.MethodPost, "/v1/dead-letters/push/purge", nil)
		requests++
		require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, resp.StatusCode, "body: %s", body)
	}
	require.JSONEq(t, `{"purged":300}`, string(body), "the pass's purge, over every request")
	resp, body = f.get("/v1/dead-letters/push?limit=1")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.NoError(t, json.Unmarshal(body, &page))
	require.Equal(t, n-poison, page.Total)
}
