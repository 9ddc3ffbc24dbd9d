package reconcile

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

var temporal *testenv.Temporal

func TestMain(m *testing.M) {
	var err error
	temporal, err = testenv.StartTemporal(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	temporal.Stop()
	os.Exit(code)
}

// fixture is a reconciler on a fresh database and queues of its own.
type fixture struct {
	t     *testing.T
	r     *Reconciler
	pool  *pgxpool.Pool
	topo  queue.Topology
	pub   *queue.Publisher
	tc    client.Client
	queue string // a task queue no worker polls: its workflows stay running
}

func setup(t *testing.T, limit int) *fixture {
	t.Helper()
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	tc, err := client.Dial(client.Options{HostPort: temporal.Address, Namespace: temporal.Namespace})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	depths := func(ctx context.Context) (map[string]int, error) {
		main, _, err := pub.Depths(ctx, notification.Channels)
		return main, err
	}
	repaired := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "repaired"}, []string{"action"})
	r := New(Config{Limit: limit, After: time.Second}, pool, tc, depths, repaired, nil, zap.NewNop())
	return &fixture{t: t, r: r, pool: pool, topo: topo, pub: pub, tc: tc, queue: testenv.Name("idle-")}
}

// stale inserts a notification with status that last changed age ago and
// has no outbox row.
func (f *fixture) stale(status string, age time.Duration) uuid.UUID {
	f.t.Helper()
	id := uuid.Must(uuid.NewV7())
	_, err := f.pool.Exec(context.Background(), `INSERT INTO notifications (id, channel, priority, recipient, content, status, created_at, updated_at)
		VALUES ($1, 'sms', 'NORMAL', '+14155550123', 'stale', $2, now() - $3::interval, now() - $3::interval)`, id, status, age)
	require.NoError(f.t, err)
	return id
}

// workflow starts the notification's workflow on a queue no worker polls.
func (f *fixture) workflow(id uuid.UUID) {
	f.t.Helper()
	_, err := f.tc.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: notification.WorkflowID(id.String()), TaskQueue: f.queue,
	}, "Notification")
	require.NoError(f.t, err)
	f.t.Cleanup(func() {
		_ = f.tc.TerminateWorkflow(context.Background(), notification.WorkflowID(id.String()), "", "test over")
	})
}

func (f *fixture) scan() int {
	f.t.Helper()
	n, err := f.r.Scan(context.Background())
	require.NoError(f.t, err)
	return n
}

func (f *fixture) outboxRows(id uuid.UUID) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE notification_id = $1`, id).Scan(&n))
	return n
}

func (f *fixture) status(id uuid.UUID) notification.Status {
	f.t.Helper()
	s, err := store.GetStatus(context.Background(), f.pool, id)
	require.NoError(f.t, err)
	return s
}

func TestMessageWaitingInABacklogIsNotRequeued(t *testing.T) {
	f := setup(t, 100)
	id := f.stale("QUEUED", time.Minute)
	// Its message still waits in the queue, behind a backlog: no workflow
	// yet, and none lost.
	require.NoError(t, f.pub.Publish(context.Background(), queue.Outgoing{
		Exchange: f.topo.Exchange(), RoutingKey: string(notification.SMS), Body: []byte(`{"id":"` + id.String() + `"}`), MessageID: id.String(),
	}))

	require.Zero(t, f.scan())
	require.Zero(t, f.outboxRows(id), "requeueing it would send it twice")

	// Once the queue is empty the message cannot be there: it was lost.
	ch := testenv.Channel(t)
	_, err := ch.QueuePurge(f.topo.Queue(string(notification.SMS)), false)
	require.NoError(t, err)
	require.Equal(t, 1, f.scan())
	require.Equal(t, 1, f.outboxRows(id), "requeued")
}

func TestAbandonedCheckOnAStaleSnapshotLeavesADeliveredNotificationAlone(t *testing.T) {
	f := setup(t, 100)
	id := f.stale("PROCESSING", time.Minute)
	f.workflow(id)
	require.NoError(t, f.tc.TerminateWorkflow(context.Background(), notification.WorkflowID(id.String()), "", "operator"))
	snapshot, err := store.ListStale(context.Background(), f.pool, time.Second, 100, store.StaleCursor{})
	require.NoError(t, err)
	require.Len(t, snapshot, 1)
	// Delivered between the snapshot and the repair.
	_, err = f.pool.Exec(context.Background(), `UPDATE notifications SET status = 'DELIVERED' WHERE id = $1`, id)
	require.NoError(t, err)

	action, err := f.r.check(context.Background(), snapshot[0], true)

	require.NoError(t, err)
	require.Empty(t, action)
	require.Equal(t, notification.StatusDelivered, f.status(id))
	require.Zero(t, f.outboxRows(id), "no dead-letter record for a delivered notification")
	_, dead, err := f.pub.Depths(context.Background(), notification.Channels)
	require.NoError(t, err)
	require.Zero(t, dead[string(notification.SMS)], "nothing in the dead-letter queue")
}

func TestAbandonedNotificationFailsAndIsDeadLetteredInOneStep(t *testing.T) {
	f := setup(t, 100)
	id := f.stale("PROCESSING", time.Minute)
	f.workflow(id)
	require.NoError(t, f.tc.TerminateWorkflow(context.Background(), notification.WorkflowID(id.String()), "", "operator"))

	require.Equal(t, 1, f.scan())

	require.Equal(t, notification.StatusFailed, f.status(id))
	var reason, source string
	require.NoError(t, f.pool.QueryRow(context.Background(),
		`SELECT dead_letter->>'reason', dead_letter->>'source' FROM outbox WHERE notification_id = $1`, id).Scan(&reason, &source))
	require.Equal(t, ReasonAbandoned, reason)
	require.Equal(t, notification.SourceReconciler, source)
}

func TestSweepReachesNotificationsBehindOnesThatStayStale(t *testing.T) {
	f := setup(t, 2)
	// The oldest stay stale for good: their workflows are running (waiting
	// on a long schedule, say).
	for range 3 {
		id := f.stale("SCHEDULED", 10*time.Minute)
		f.workflow(id)
	}
	lost := f.stale("QUEUED", time.Minute)

	repaired := 0
	for range 3 {
		repaired += f.scan()
	}

	require.Equal(t, 1, repaired)
	require.Equal(t, 1, f.outboxRows(lost), "the newer notification was reached and requeued")
}
