package deadletter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/deadletter"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// env is a fresh database and queue topology with a publisher on it.
type env struct {
	pool *pgxpool.Pool
	topo queue.Topology
	pub  *queue.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	return &env{pool: pool, topo: topo, pub: pub}
}

// failed publishes the dead letter of notification id at generation, with
// body as its body.
func (e *env) failed(t *testing.T, channel, id string, generation int, body string) {
	t.Helper()
	require.NoError(t, e.pub.Publish(context.Background(), e.topo.DeadLetterMessage(channel, id, []byte(body), notification.DeadLetter{
		Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, FailedAt: time.Now(), Generation: generation,
	})))
}

// poison publishes a poison message whose message id is id.
func (e *env) poison(t *testing.T, channel, id string) {
	t.Helper()
	require.NoError(t, e.pub.Publish(context.Background(), e.topo.DeadLetterMessage(channel, id, []byte("poison"), notification.DeadLetter{
		Reason: "unparseable", Source: notification.SourceConsumer, FailedAt: time.Now(),
	})))
}

func (e *env) retire(t *testing.T, channel string, id string, below int) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(),
		`INSERT INTO dead_letter_retirements (notification_id, channel, below_generation) VALUES ($1, $2, $3)`, id, channel, below)
	require.NoError(t, err)
}

func (e *env) retirements(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letter_retirements`).Scan(&n))
	return n
}

// bodies takes every message of the channel's DLQ and returns their bodies in order.
func (e *env) bodies(t *testing.T, channel string) []string {
	t.Helper()
	ch := testenv.Channel(t)
	var out []string
	for {
		d, ok, err := ch.Get(e.topo.DeadLetterQueue(channel), true)
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

// holdLock holds the dead-letter lock, as another visit would, until the
// returned func is called.
func holdLock(t *testing.T, pool *pgxpool.Pool) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(deadletter.LockKey))
	require.NoError(t, err)
	release := func() { _ = tx.Rollback(ctx) }
	t.Cleanup(release)
	return release
}

// scrape returns the worker's metrics as Prometheus scrapes them.
func scrape(t *testing.T, m *metrics.Worker) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler(m.Registry).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

func TestPruneRemovesTheRetiredGenerationsThenTheirRows(t *testing.T) {
	e := newEnv(t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	e.failed(t, string(notification.SMS), a, 0, "a0")
	e.failed(t, string(notification.SMS), b, 0, "b0")
	e.failed(t, string(notification.SMS), a, 1, "a1")
	e.poison(t, string(notification.SMS), a) // names no notification, whatever its id
	e.failed(t, string(notification.Email), c, 0, "c0")
	e.failed(t, string(notification.Email), c, 1, "c1")
	e.failed(t, string(notification.Email), c, 2, "c2")
	e.retire(t, string(notification.SMS), a, 1)
	e.retire(t, string(notification.Email), c, 1)
	e.retire(t, string(notification.Email), c, 2) // retried twice before a round
	e.retire(t, "fax", b, 1)                      // no such DLQ: retires nothing

	core, logs := observer.New(zap.InfoLevel)
	m := metrics.NewWorker()
	p := deadletter.NewPruner(e.pool, e.pub, m.DeadLettersRetired, zap.New(core))
	removed, err := p.PruneOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 3, removed)

	require.Equal(t, []string{"b0", "a1", "poison"}, e.bodies(t, string(notification.SMS)))
	require.Equal(t, []string{"c2"}, e.bodies(t, string(notification.Email)))
	require.Zero(t, e.retirements(t), "every row loaded is done with")
	exposed := scrape(t, m)
	require.Contains(t, exposed, `dispatch_dead_letters_retired_total{channel="sms"} 1`+"\n")
	require.Contains(t, exposed, `dispatch_dead_letters_retired_total{channel="email"} 2`+"\n")
	swept := logs.FilterMessage("retired dead letters of retried or erased notifications")
	require.Equal(t, 2, swept.Len(), "one line per sweep that removed something")

	removed, err = p.PruneOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, removed, "nothing left to do")
}

func TestPruneLeavesEverythingWhileAnotherVisitHoldsTheLock(t *testing.T) {
	e := newEnv(t)
	a := uuid.NewString()
	e.failed(t, string(notification.SMS), a, 0, "a0")
	e.retire(t, string(notification.SMS), a, 1)
	release := holdLock(t, e.pool)

	p := deadletter.NewPruner(e.pool, e.pub, nil, zap.NewNop())
	removed, err := p.PruneOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, removed)
	require.Equal(t, 1, e.retirements(t), "the rows wait for the visit that can sweep")

	release()
	removed, err = p.PruneOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, removed)
	require.Zero(t, e.retirements(t))
	require.Empty(t, e.bodies(t, string(notification.SMS)))
}

func TestRunPrunesEveryInterval(t *testing.T) {
	e := newEnv(t)
	p := deadletter.NewPruner(e.pool, e.pub, nil, zap.NewNop())
	p.Interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	a := uuid.NewString()
	e.failed(t, string(notification.Push), a, 0, "a0")
	e.failed(t, string(notification.Push), a, 1, "a1")
	e.retire(t, string(notification.Push), a, 1)
	require.Eventually(t, func() bool { return e.retirements(t) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the running pruner takes the retirement")
	require.Equal(t, []string{"a1"}, e.bodies(t, string(notification.Push)))
}

func TestQueuesWaitForTheSweepInProgress(t *testing.T) {
	e := newEnv(t)
	a := uuid.NewString()
	e.failed(t, string(notification.SMS), a, 0, "a0")
	e.poison(t, string(notification.SMS), "m-1")
	q := deadletter.NewQueues(e.pool, e.pub)

	release := holdLock(t, e.pool)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := q.Peek(ctx, string(notification.SMS), 10)
	require.Error(t, err, "a peek does not overlap a sweep")
	release()

	msgs, total, err := q.Peek(context.Background(), string(notification.SMS), 10)
	require.NoError(t, err)
	require.Equal(t, 2, total)
	require.Len(t, msgs, 2)
	require.Equal(t, a, msgs[0].NotificationID)
	require.True(t, msgs[1].Poison)

	purged, remaining, err := q.PurgePoison(context.Background(), string(notification.SMS))
	require.NoError(t, err)
	require.Equal(t, 1, purged)
	require.Zero(t, remaining, "the purge is done")
	require.Equal(t, []string{"a0"}, e.bodies(t, string(notification.SMS)))
}
