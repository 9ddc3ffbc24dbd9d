//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// deepDLQ is how many messages the scenario puts in dlq.sms before the
// retries: far past what one call of the sweep could visit (~200,000 in the
// worker's minute, ~36,000 in a request).
const deepDLQ = 300_000

// fillDLQ publishes n dead letters to the channel's DLQ, fast (batches of
// 5,000 under publisher confirms): every tenth a poison message, the others
// of notifications that are not the stream's. It returns the ids of those.
func fillDLQ(t *testing.T, s *stack, channel string, n int) map[string]bool {
	t.Helper()
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, s.topology, queue.WithCallTimeout(2*time.Minute))
	defer func() { _ = pub.Close() }()
	started := time.Now()
	kept := make(map[string]bool, n)
	const batch = 5000
	for first := 0; first < n; first += batch {
		msgs := make([]queue.Outgoing, 0, batch)
		for i := first; i < min(first+batch, n); i++ {
			if i%10 == 5 {
				msgs = append(msgs, s.topology.DeadLetterMessage(channel, "m-"+strconv.Itoa(i), []byte("not json"), notification.DeadLetter{
					Reason: "unparseable", Source: notification.SourceConsumer, LastError: "not JSON", FailedAt: started}))
				continue
			}
			id := uuid.NewString()
			kept[id] = true
			msgs = append(msgs, s.topology.DeadLetterMessage(channel, id, []byte(`{}`), notification.DeadLetter{
				Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 10, LastStatus: 503, FailedAt: started}))
		}
		require.NoError(t, pub.Publish(context.Background(), msgs...))
	}
	t.Logf("published %d dead letters to dlq.%s in %s", n, channel, time.Since(started))
	return kept
}

// answers counts the API's answers by status, for requests beside the stream.
type answers struct {
	mu    sync.Mutex
	codes map[string]map[int]int
}

func (a *answers) do(s *stack, what, method, path string) int {
	req, err := http.NewRequest(method, s.apiURL+path, nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	code := 0 // no answer
	if resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req); err == nil {
		code = resp.StatusCode
		_ = resp.Body.Close()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.codes == nil {
		a.codes = map[string]map[int]int{}
	}
	if a.codes[what] == nil {
		a.codes[what] = map[int]int{}
	}
	a.codes[what][code]++
	return code
}

// failedOf returns the notifications of ids that are FAILED.
func (s *stack) failedOf(ids []string) []string {
	rows, err := s.pool.Query(context.Background(), `SELECT id::text FROM notifications WHERE id = ANY($1::uuid[]) AND status = 'FAILED'`, ids)
	require.NoError(s.t, err)
	var failed []string
	for rows.Next() {
		var id string
		require.NoError(s.t, rows.Scan(&id))
		failed = append(failed, id)
	}
	require.NoError(s.t, rows.Err())
	return failed
}

// TestDeepDLQPrunedWhileRetriesRun: dlq.sms holds 300,000 messages when the
// provider refuses everything (400) for a moment. The notifications that
// failed then are retried (POST .../retry), which retires their dead
// letters, while new notifications flow, the dead letters are listed and
// purged. The pruner's pass over the deep queue ends: every retired message
// is out, every poison message purged, every other one still there (at
// least once), and the API answered only 2xx and 503 meanwhile.
func TestDeepDLQPrunedWhileRetriesRun(t *testing.T) {
	var (
		filler  map[string]bool
		retried []string
		a       answers
	)
	started := time.Now()
	s, _, r := scenario(t, "deep dlq pruned while retries run", func(s *stack) {
		filler = fillDLQ(t, s, string(notification.SMS), deepDLQ)

		// The outage is the scenario: whatever is sent meanwhile fails at once.
		s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
		time.Sleep(2 * time.Second)
		s.sink.SetConfig(sink.Config{})

		// Readers of the queues while the retries run and the pruner sweeps.
		stop := make(chan struct{})
		var readers sync.WaitGroup
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				a.do(s, "list", http.MethodGet, "/v1/dead-letters/sms?limit=20")
			}
		})
		defer func() { close(stop); readers.Wait() }()

		require.Eventually(t, func() bool {
			for _, id := range s.failedOf(s.stream.ids()) {
				if !slices.Contains(retried, id) {
					a.do(s, "retry", http.MethodPost, "/v1/notifications/"+id+"/retry")
					retried = append(retried, id)
				}
			}
			return len(retried) > 0 && len(s.failedOf(retried)) == 0
		}, 2*time.Minute, 250*time.Millisecond, "every notification that failed is retried")
		t.Logf("retried %d notifications", len(retried))
	})

	// The purge and the pruner share the pass: repeated purges step it to
	// its end (200), whoever began it.
	require.Eventually(t, func() bool {
		return a.do(s, "purge", http.MethodPost, "/v1/dead-letters/sms/purge") == http.StatusOK
	}, 20*time.Minute, time.Second, "the purge of the deep DLQ ends")
	require.Eventually(t, func() bool {
		var rows int
		require.NoError(t, s.pool.QueryRow(context.Background(),
			`SELECT (SELECT count(*) FROM dead_letter_retirements) + (SELECT count(*) FROM dead_letter_sweeps)`).Scan(&rows))
		return rows == 0
	}, 20*time.Minute, time.Second, "the pruner's passes end and their retirements are deleted")
	t.Logf("the deep DLQ was pruned and purged %s after the scenario began", time.Since(started))

	a.mu.Lock()
	for what, codes := range a.codes {
		for code, n := range codes {
			require.True(t, code/100 == 2 || code == http.StatusServiceUnavailable,
				"%s: the API answered %d %d times: only 2xx and 503 are allowed", what, code, n)
		}
		t.Logf("%s: %v", what, codes)
	}
	a.mu.Unlock()
	require.NotEmpty(t, retried, "some notifications failed and were retried")
	require.Zero(t, r.Lost)

	// What the queues hold: no message of a retried notification's retired
	// generation, no poison message in dlq.sms, every filler message.
	generation := map[string]int{}
	rows, err := s.pool.Query(context.Background(), `SELECT id::text, generation FROM notifications WHERE id = ANY($1::uuid[])`, retried)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		var g int
		require.NoError(t, rows.Scan(&id, &g))
		generation[id] = g
	}
	require.NoError(t, rows.Err())
	seen := map[string]int{}
	for _, channel := range channels {
		drainDLQ(t, s, string(channel), func(d amqp.Delivery) {
			g, _ := d.Headers[queue.HeaderGeneration].(int32)
			if want, ok := generation[d.MessageId]; ok {
				require.GreaterOrEqual(t, int(g), want, "%s: a dead letter of a retired generation stayed in dlq.%s", d.MessageId, channel)
			}
			if channel == notification.SMS {
				require.NotEqual(t, notification.SourceConsumer, d.Headers[queue.HeaderSource], "a poison message stayed after the purge")
				if filler[d.MessageId] {
					seen[d.MessageId]++
				}
			}
		})
	}
	require.Len(t, seen, len(filler), "every dead letter not retired is still there")
	twice := 0
	for _, n := range seen {
		twice += n - 1
	}
	t.Logf("%d filler messages kept twice (at-least-once)", twice)
	require.Less(t, twice, len(filler)/100, "a step cut short leaves at most its batch twice")
}

// drainDLQ takes every message of the channel's DLQ with a consumer (fast)
// and hands each to fn.
func drainDLQ(t *testing.T, s *stack, channel string, fn func(amqp.Delivery)) {
	t.Helper()
	ch := testenv.Channel(t)
	q, err := ch.QueueDeclarePassive(s.topology.DeadLetterQueue(channel), true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.Qos(1000, 0, false))
	deliveries, err := ch.Consume(s.topology.DeadLetterQueue(channel), "", true, false, false, false, nil)
	require.NoError(t, err)
	for i := range q.Messages {
		select {
		case d := <-deliveries:
			fn(d)
		case <-time.After(time.Minute):
			require.FailNow(t, fmt.Sprintf("dlq.%s: message %d of %d not delivered", channel, i, q.Messages))
		}
	}
}
