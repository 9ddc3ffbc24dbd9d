package e2e

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// envValue is the value the processes get for name (the last one wins).
func (s *stack) envValue(name string) string {
	var v string
	for _, kv := range s.env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// restartWorker restarts the worker with extra settings.
func (s *stack) restartWorker(env ...string) {
	s.t.Helper()
	s.worker.Stop()
	s.env = append(s.env, env...)
	s.worker = s.start("worker")
	s.waitReady("http://127.0.0.1:" + s.envValue("WORKER_METRICS_PORT") + "/readyz")
}

// attemptRow is one row of the attempt log.
type attemptRow struct {
	Attempt    int
	StartedAt  time.Time
	StatusCode *int
	Outcome    string
}

func (s *stack) attempts(id string) []attemptRow {
	s.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.envValue("DATABASE_DSN"))
	require.NoError(s.t, err)
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, `SELECT attempt, started_at, status_code, outcome FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt`, id)
	require.NoError(s.t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attemptRow, error) {
		var a attemptRow
		err := r.Scan(&a.Attempt, &a.StartedAt, &a.StatusCode, &a.Outcome)
		return a, err
	})
	require.NoError(s.t, err)
	return out
}

// deadLetter waits for the message about id in the channel's DLQ.
func (s *stack) deadLetter(channel, id string) amqp.Delivery {
	s.t.Helper()
	conn, err := amqp.Dial(testenv.Shared(s.t).RabbitMQURL)
	require.NoError(s.t, err)
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	require.NoError(s.t, err)
	queue := s.envValue("RABBITMQ_QUEUE_PREFIX") + "dlq." + channel
	var found amqp.Delivery
	require.Eventually(s.t, func() bool {
		d, ok, err := ch.Get(queue, true)
		if err != nil || !ok {
			return false
		}
		if d.MessageId == id {
			found = d
			return true
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "no message for %s in %s", id, queue)
	return found
}

func TestTransientFailuresAreRetriedWithGrowingGaps(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailFirst: 2, FailStatus: http.StatusServiceUnavailable})

	_, _, created := s.post("/v1/notifications", smsRequest("third time lucky"))
	id := created["id"].(string)

	got := s.waitStatus(id, "DELIVERED", 30*time.Second)
	require.EqualValues(t, 3, got["attempts"])
	rec, _ := s.sink.Record(id)
	require.Equal(t, 3, rec.Requests)
	require.Equal(t, 1, rec.Delivered)

	log := s.attempts(id)
	require.Len(t, log, 3)
	require.Equal(t, []string{"retry", "retry", "delivered"}, []string{log[0].Outcome, log[1].Outcome, log[2].Outcome})
	require.Equal(t, 503, *log[0].StatusCode)
	gap1, gap2 := log[1].StartedAt.Sub(log[0].StartedAt), log[2].StartedAt.Sub(log[1].StartedAt)
	// RETRY_INITIAL_INTERVAL=200ms, coefficient 2, equal jitter: the first
	// wait is 100–200ms, the second 200–400ms.
	require.GreaterOrEqual(t, gap1, 100*time.Millisecond)
	require.GreaterOrEqual(t, gap2, 200*time.Millisecond)
}

func TestExhaustedAttemptsFailAndDeadLetter(t *testing.T) {
	s := setup(t)
	s.restartWorker("RETRY_MAX_ATTEMPTS=3")
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusInternalServerError})

	_, _, created := s.post("/v1/notifications", smsRequest("never arrives"))
	id := created["id"].(string)

	got := s.waitStatus(id, "FAILED", 30*time.Second)
	require.Equal(t, "exhausted", got["failureReason"])
	require.EqualValues(t, 3, got["attempts"])
	rec, _ := s.sink.Record(id)
	require.Equal(t, 3, rec.Requests, "exactly RETRY_MAX_ATTEMPTS attempts")
	require.Len(t, s.attempts(id), 3)

	msg := s.deadLetter("sms", id)
	require.Equal(t, "exhausted", msg.Headers["x-reason"])
	require.EqualValues(t, 3, msg.Headers["x-attempts"])
	require.EqualValues(t, 500, msg.Headers["x-last-status"])
	require.NotEmpty(t, msg.Headers["x-failed-at"])
	require.Contains(t, string(msg.Body), id)
}

func TestPermanentRejectionIsTriedOnceAndDeadLettered(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})

	_, _, created := s.post("/v1/notifications", smsRequest("the provider refuses this"))
	id := created["id"].(string)

	got := s.waitStatus(id, "FAILED", 30*time.Second)
	require.Equal(t, "permanent", got["failureReason"])
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests, "a 400 is not retried")
	msg := s.deadLetter("sms", id)
	require.Equal(t, "permanent", msg.Headers["x-reason"])
	require.EqualValues(t, 400, msg.Headers["x-last-status"])
}

func TestExpiredNotificationFailsAsExpiredAndIsNotSentLate(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable})
	body := smsRequest("an OTP that must not arrive late")
	body["expiresAt"] = time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)

	_, _, created := s.post("/v1/notifications", body)
	id := created["id"].(string)

	got := s.waitStatus(id, "FAILED", 30*time.Second)
	require.Equal(t, "expired", got["failureReason"])
	expires, err := time.Parse(time.RFC3339Nano, body["expiresAt"].(string))
	require.NoError(t, err)
	for _, a := range s.attempts(id) {
		require.True(t, a.StartedAt.Before(expires), "attempt %d started after expiresAt", a.Attempt)
	}
	require.Equal(t, "expired", s.deadLetter("sms", id).Headers["x-reason"])
}

func TestScheduledNotificationWaitsThenDelivers(t *testing.T) {
	s := setup(t)
	at := time.Now().Add(2 * time.Second).UTC()
	body := smsRequest("later")
	body["scheduledAt"] = at.Format(time.RFC3339Nano)

	_, _, created := s.post("/v1/notifications", body)
	id := created["id"].(string)

	s.waitStatus(id, "SCHEDULED", 10*time.Second)
	s.waitStatus(id, "DELIVERED", 30*time.Second)
	rec, _ := s.sink.Record(id)
	require.False(t, rec.FirstAt.Before(at), "delivered at %s, scheduled for %s", rec.FirstAt, at)
}

func TestDeliveriesCarryStandardWebhooksSignatures(t *testing.T) {
	s := setup(t)
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	s.restartWorker("WEBHOOK_SIGNING_SECRET=" + secret)

	_, _, created := s.post("/v1/notifications", smsRequest("signed"))
	id := created["id"].(string)
	s.waitStatus(id, "DELIVERED", 30*time.Second)

	rec, _ := s.sink.Record(id)
	require.Equal(t, id, rec.Headers.Get("webhook-id"))
	require.True(t, strings.HasPrefix(rec.Headers.Get("webhook-signature"), "v1,"))
	// Verified by the Standard Webhooks reference library, not our own code.
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	require.NoError(t, wh.Verify(rec.Body, rec.Headers))
	tampered := append([]byte(nil), rec.Body...)
	tampered[len(tampered)-2] ^= 1
	require.Error(t, wh.Verify(tampered, rec.Headers), "a tampered body must not verify")
}

func TestRateLimitHoldsAndHighPriorityOvertakesLowBacklog(t *testing.T) {
	s := setup(t)
	const limit = 20
	s.restartWorker("RATE_LIMIT_PUSH=20")
	arrivals := s.sink.Arrivals(1024)

	push := func(priority string, i int) string {
		code, _, created := s.post("/v1/notifications", map[string]any{
			"channel": "push", "recipient": "device-token-0123456789", "content": "n", "priority": priority,
		})
		require.Equal(t, http.StatusAccepted, code)
		return created["id"].(string)
	}
	// The LOW backlog is queued at once (8 clients), then the HIGH ones.
	submit := func(priority string, n int) []string {
		ids := make([]string, n)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					ids[i] = push(priority, i)
				}
			})
		}
		wg.Wait()
		return ids
	}
	low := submit("LOW", 60)
	high := submit("HIGH", 10)

	order := make([]string, 0, 70)
	times := make([]time.Time, 0, 70)
	deadline := time.After(60 * time.Second)
	for len(order) < 70 {
		select {
		case id := <-arrivals:
			// When the provider saw it, as the sink recorded it (not when
			// this goroutine got round to reading the channel).
			rec, ok := s.sink.Record(id)
			require.True(t, ok)
			order = append(order, id)
			times = append(times, rec.FirstAt)
		case <-deadline:
			t.Fatalf("only %d of 70 arrived", len(order))
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })

	// The limit holds: no one-second window above twice the limit, and the
	// average rate from first to last arrival within 5% of it.
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Second {
			j++
		}
		require.LessOrEqual(t, j-i, 2*limit, "%d arrivals in the second after arrival %d", j-i, i)
	}
	rate := float64(len(times)-1) / times[len(times)-1].Sub(times[0]).Seconds()
	t.Logf("average rate at the provider: %.2f/s (limit %d/s)", rate, limit)
	require.LessOrEqual(t, rate, limit*1.05, "average rate %.2f/s", rate)

	// Priority wins: the last HIGH lands before the median LOW.
	pos := make(map[string]int, len(order))
	for i, id := range order {
		pos[id] = i
	}
	lastHigh := 0
	for _, id := range high {
		lastHigh = max(lastHigh, pos[id])
	}
	lowPos := make([]int, 0, len(low))
	for _, id := range low {
		lowPos = append(lowPos, pos[id])
	}
	slices.Sort(lowPos)
	t.Logf("last HIGH at position %d; median LOW at %d", lastHigh, lowPos[len(lowPos)/2])
	require.Less(t, lastHigh, lowPos[len(lowPos)/2], "HIGH submitted after a LOW backlog must overtake most of it")
}
