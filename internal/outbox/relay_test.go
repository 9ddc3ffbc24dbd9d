package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/outbox"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func create(t *testing.T, pool *pgxpool.Pool, channel, priority, recipient string) store.Notification {
	t.Helper()
	n := store.NewNotification{
		ID: uuid.Must(uuid.NewV7()), Channel: notification.Channel(channel), Priority: notification.Priority(priority), Recipient: recipient, Content: "hello",
	}
	if notification.Channel(channel) == notification.Email {
		subject := "Hi"
		n.Subject = &subject
	}
	created, err := store.CreateNotification(context.Background(), pool, n)
	require.NoError(t, err)
	return created
}

func outboxRows(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n))
	return n
}

func newPublisher(t *testing.T, url string, topo queue.Topology) *queue.Publisher {
	t.Helper()
	pub := queue.NewPublisher(url, topo)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

func TestRelayPublishesAndDeletesOutboxRows(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	url := testenv.Shared(t).RabbitMQURL

	created := []store.Notification{
		create(t, pool, string(notification.SMS), string(notification.High), "+14155550123"),
		create(t, pool, string(notification.Email), string(notification.Normal), "user@example.com"),
		create(t, pool, string(notification.Push), string(notification.Low), "device-token"),
	}
	require.Equal(t, 3, outboxRows(t, pool))

	relay := outbox.NewRelay(outbox.Config{Topology: topo}, pool, newPublisher(t, url, topo), zap.NewNop())
	n, err := relay.RelayOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	ch := testenv.Channel(t)
	for _, c := range created {
		d, ok, err := ch.Get(topo.Queue(string(c.Channel)), true)
		require.NoError(t, err)
		require.True(t, ok, "queue %s holds the message", topo.Queue(string(c.Channel)))
		var msg notification.Message
		require.NoError(t, json.Unmarshal(d.Body, &msg))
		require.Equal(t, notification.Message{ID: c.ID.String(), Channel: c.Channel, Priority: c.Priority}, msg)
		require.Equal(t, amqp.Persistent, d.DeliveryMode)
		require.Equal(t, notification.BrokerPriority(c.Priority), d.Priority)
		require.Equal(t, c.ID.String(), d.MessageId)

		_, more, err := ch.Get(topo.Queue(string(c.Channel)), true)
		require.NoError(t, err)
		require.False(t, more, "queue %s holds exactly one message", topo.Queue(string(c.Channel)))

		status, err := store.GetStatus(ctx, pool, c.ID)
		require.NoError(t, err)
		require.Equal(t, notification.StatusQueued, status)
	}
	require.Zero(t, outboxRows(t, pool))
}

func TestRelayLeavesRowsWhenBrokerUnreachable(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	topo := queue.Topology{Prefix: testenv.Name("t") + "."} // never declared: nothing to clean up
	n := create(t, pool, string(notification.SMS), string(notification.Normal), "+14155550123")

	relay := outbox.NewRelay(outbox.Config{Topology: topo}, pool, newPublisher(t, "amqp://guest:guest@127.0.0.1:1/", topo), zap.NewNop())
	relayed, err := relay.RelayOnce(ctx)
	require.Error(t, err)
	require.Zero(t, relayed)

	require.Equal(t, 1, outboxRows(t, pool))
	status, err := store.GetStatus(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusAccepted, status)
}

func TestRelayWakesWhenTheWakerPokes(t *testing.T) {
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	url := testenv.Shared(t).RabbitMQURL

	// With an hour between polls, only LISTEN/NOTIFY can wake the relay in time.
	relay := outbox.NewRelay(outbox.Config{Topology: topo, PollInterval: time.Hour}, pool, newPublisher(t, url, topo), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)

	// Insert only once the relay's connection is listening, or the NOTIFY is lost.
	require.Eventually(t, func() bool {
		var listening int
		err := pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN outbox' AND state = 'idle'`).Scan(&listening)
		return err == nil && listening == 1
	}, 10*time.Second, 20*time.Millisecond, "relay never ran LISTEN outbox")

	waker := outbox.NewWaker(pool, zap.NewNop())
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	go func() { _ = waker.Run(wctx) }()
	n := create(t, pool, string(notification.Push), string(notification.High), "device-token")
	waker.Poke()

	got := testenv.NextMessage(t, testenv.Channel(t), topo.Queue(string(notification.Push)), 5*time.Second, "the relay did not wake on NOTIFY")
	require.Equal(t, n.ID.String(), got.MessageId)

	stop()
}

func TestRelayPublishesADeadLetterOfTheGenerationThatFailed(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	n := create(t, pool, string(notification.SMS), string(notification.High), "+14155550123")
	relay := outbox.NewRelay(outbox.Config{Topology: topo}, pool, newPublisher(t, testenv.Shared(t).RabbitMQURL, topo), zap.NewNop())
	_, err := relay.RelayOnce(ctx) // its delivery message
	require.NoError(t, err)

	_, err = pool.Exec(ctx, `UPDATE notifications SET generation = 1 WHERE id = $1`, n.ID) // retried once
	require.NoError(t, err)
	_, err = store.Fail(ctx, pool, n.ID, notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 2, FailedAt: time.Now()})
	require.NoError(t, err)
	relayed, err := relay.RelayOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, relayed)

	msg := testenv.NextMessage(t, testenv.Channel(t), topo.DeadLetterQueue(string(notification.SMS)), 5*time.Second, "no dead letter")
	require.Equal(t, n.ID.String(), msg.MessageId)
	require.Equal(t, int32(1), msg.Headers[queue.HeaderGeneration])
	require.Equal(t, int32(2), msg.Headers[queue.HeaderAttempts])
}

// gatedPublisher holds the relay's publish, with its outbox rows locked,
// until the test releases it.
type gatedPublisher struct {
	outbox.Publisher
	reached, release chan struct{}
}

func (g *gatedPublisher) Publish(ctx context.Context, msgs ...queue.Outgoing) error {
	close(g.reached)
	<-g.release
	return g.Publisher.Publish(ctx, msgs...)
}

// TestTheRelayAndAnOperationPageOnTheSameNotificationsDoNotDeadlock runs
// the relay and a retry or erase page over the same notifications, each
// taking its first locks before the other takes its second: the relay
// holds the outbox rows (a delivery row, a dead-letter record) and would
// mark the delivered one QUEUED; the page holds the notifications and
// drops the dead-letter record.
func TestTheRelayAndAnOperationPageOnTheSameNotificationsDoNotDeadlock(t *testing.T) {
	for _, action := range []string{store.ActionRetry, store.ActionErase} {
		t.Run(action, func(t *testing.T) {
			ctx := context.Background()
			pool, _ := testenv.Pool(t)
			topo := testenv.Topology(t)
			const recipient = "+14155550177"
			failed := create(t, pool, string(notification.SMS), string(notification.Normal), recipient)
			_, err := pool.Exec(ctx, `
				WITH f AS (UPDATE notifications SET status = 'FAILED', failure_reason = 'exhausted' WHERE id = $1)
				UPDATE outbox SET dead_letter = jsonb_build_object('reason', 'exhausted', 'generation', 0) WHERE notification_id = $1`, failed.ID)
			require.NoError(t, err)
			accepted := create(t, pool, string(notification.SMS), string(notification.Normal), recipient)
			r := recipient
			op, _, err := store.CreateOperation(ctx, pool, store.NewOperation{
				ID: uuid.Must(uuid.NewV7()), Action: action, MaxPerSecond: 100, Filter: store.OperationFilter{Recipient: &r}})
			require.NoError(t, err)
			require.EqualValues(t, 2, op.Matched)

			gate := &gatedPublisher{Publisher: newPublisher(t, testenv.Shared(t).RabbitMQURL, topo),
				reached: make(chan struct{}), release: make(chan struct{})}
			relay := outbox.NewRelay(outbox.Config{Topology: topo}, pool, gate, zap.NewNop())
			relayed := make(chan error, 1)
			go func() { _, err := relay.RelayOnce(ctx); relayed <- err }()
			<-gate.reached // the relay holds both outbox rows

			paged := make(chan error, 1)
			go func() { _, err := store.RunPage(ctx, pool, op.ID, 10); paged <- err }()
			require.Eventually(t, func() bool {
				var waiting int
				err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
				return err == nil && waiting == 1
			}, 10*time.Second, 10*time.Millisecond, "the page waits for the dead-letter record the relay holds")
			close(gate.release)

			require.NoError(t, <-relayed, "the relay")
			require.NoError(t, <-paged, "the page")
			after, err := store.GetNotifications(ctx, pool, []uuid.UUID{failed.ID, accepted.ID})
			require.NoError(t, err)
			if action == store.ActionRetry {
				require.Equal(t, 1, after[failed.ID].Generation)
				require.Equal(t, 1, outboxRows(t, pool), "the retried one's new delivery row only")
				require.Equal(t, notification.StatusQueued, after[accepted.ID].Status, "marked QUEUED once the page let it go")
			} else {
				require.NotNil(t, after[failed.ID].ErasedAt)
				require.Zero(t, outboxRows(t, pool))
				require.Equal(t, notification.StatusCancelled, after[accepted.ID].Status)
			}
		})
	}
}
