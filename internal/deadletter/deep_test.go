package deadletter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/deadletter"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// deepDLQ fills the channel's DLQ with n messages, fast (batches under
// publisher confirms): every tenth is a poison message, every hundredth is
// of a notification retired below generation 1, the rest of notifications
// that stay failed. It returns how many it retired and how many are poison.
func (e *env) deepDLQ(t *testing.T, channel string, n int) (retired, poison int) {
	t.Helper()
	started := time.Now()
	defer func() { t.Logf("published %d dead letters in %s", n, time.Since(started)) }()
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, e.topo, queue.WithCallTimeout(time.Minute))
	defer func() { _ = pub.Close() }()
	const batch = 5000
	var retire []uuid.UUID
	now := time.Now()
	for start := 0; start < n; start += batch {
		msgs := make([]queue.Outgoing, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			id := uuid.New()
			switch {
			case i%10 == 5:
				poison++
				msgs = append(msgs, e.topo.DeadLetterMessage(channel, fmt.Sprintf("m-%d", i), []byte("poison"), notification.DeadLetter{
					Reason: "unparseable", Source: notification.SourceConsumer, FailedAt: now}))
				continue
			case i%100 == 0:
				retire = append(retire, id)
			}
			msgs = append(msgs, e.topo.DeadLetterMessage(channel, id.String(), []byte(fmt.Sprint(i)), notification.DeadLetter{
				Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, FailedAt: now}))
		}
		require.NoError(t, pub.Publish(ctx, msgs...))
	}
	below := make([]int32, len(retire))
	for i := range below {
		below[i] = 1
	}
	_, err := e.pool.Exec(ctx, `
		INSERT INTO dead_letter_retirements (notification_id, channel, below_generation)
		SELECT id, $2, b FROM unnest($1::uuid[], $3::integer[]) AS r(id, b)`, retire, channel, below)
	require.NoError(t, err)
	return len(retire), poison
}

// drain takes every message of the channel's DLQ (a consumer, fast) and
// counts them by kind: poison, retired (a body of a multiple of 100) and
// kept, by message id.
func (e *env) drain(t *testing.T, channel string) (poison, retired int, kept map[string]int) {
	t.Helper()
	ch := testenv.Channel(t)
	q, err := ch.QueueDeclarePassive(e.topo.DeadLetterQueue(channel), true, false, false, false, nil)
	require.NoError(t, err)
	deliveries, err := ch.Consume(e.topo.DeadLetterQueue(channel), "", true, false, false, false, nil)
	require.NoError(t, err)
	kept = map[string]int{}
	for range q.Messages {
		var d amqp.Delivery
		select {
		case d = <-deliveries:
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the queue's messages are not delivered")
		}
		var i int
		switch _, err := fmt.Sscan(string(d.Body), &i); {
		case err != nil:
			poison++
		case i%100 == 0:
			retired++
		default:
			kept[d.MessageId]++
		}
	}
	return poison, retired, kept
}

// requireKeptOnce checks what a pass left: every message it was to keep,
// at least once (a step cut between the confirm of its copies and its ack
// leaves them twice: logged), nothing it was to remove.
func requireKeptOnce(t *testing.T, e *env, channel string, wantKept int, wantPoison bool) {
	t.Helper()
	poison, retired, kept := e.drain(t, channel)
	require.Zero(t, retired, "every retired message is taken out")
	if wantPoison {
		require.Positive(t, poison)
	} else {
		require.Zero(t, poison, "every poison message is purged")
	}
	require.Len(t, kept, wantKept, "every message kept, none lost")
	twice := 0
	for _, n := range kept {
		twice += n - 1
	}
	t.Logf("%d messages kept twice", twice)
}

// A sweep used to be one call of the publisher, bounded by its call
// timeout (a minute in the worker, 10s in the API): a DLQ deeper than one
// call could visit was never pruned or purged. A call of 3s here stands for
// it: a pass is made of steps within it, however deep the queue.
func TestPruneFinishesADLQDeeperThanOneCallCanVisit(t *testing.T) {
	e := newEnv(t)
	const n = 20000
	retired, _ := e.deepDLQ(t, string(notification.SMS), n)
	sweeper := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, e.topo, queue.WithCallTimeout(3*time.Second))
	t.Cleanup(func() { _ = sweeper.Close() })
	p := deadletter.NewPruner(e.pool, sweeper, nil, zap.NewNop())

	started := time.Now()
	total := 0
	require.Eventually(t, func() bool {
		removed, err := p.PruneOnce(context.Background())
		total += removed
		if err != nil { // a step over its bound (a busy machine): the next round resumes
			t.Logf("prune: %v", err)
		}
		return err == nil && e.retirements(t) == 0
	}, 2*time.Minute, 10*time.Millisecond, "the retirements of a deep DLQ are swept")
	t.Logf("pruned %d of %d messages in %s", total, n, time.Since(started))
	require.LessOrEqual(t, total, retired, "a step that failed counts nothing")
	require.Zero(t, e.retirements(t))
	requireKeptOnce(t, e, string(notification.SMS), n-retired-n/10, true)
}

func TestPurgeFinishesADLQDeeperThanOneCallCanVisit(t *testing.T) {
	e := newEnv(t)
	const n = 20000
	retired, poison := e.deepDLQ(t, string(notification.Email), n)
	queues := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, e.topo, queue.WithCallTimeout(3*time.Second))
	t.Cleanup(func() { _ = queues.Close() })
	q := deadletter.NewQueues(e.pool, queues)

	// Each call steps the purge for a while and leaves the rest of the pass
	// for the next call (or a worker's pruner): calls resume it.
	started := time.Now()
	calls, purged, remaining := 0, 0, -1
	require.Eventually(t, func() bool {
		var err error
		calls++
		purged, remaining, err = q.PurgePoison(context.Background(), string(notification.Email))
		if err != nil { // a step over its bound (a busy machine): the API answers 503, the client calls again
			t.Logf("purge call %d: %v", calls, err)
			return false
		}
		return remaining == 0
	}, 3*time.Minute, time.Millisecond, "the purge of a deep DLQ ends")
	t.Logf("purged %d of %d messages in %s, %d calls", purged, n, time.Since(started), calls)
	require.LessOrEqual(t, purged, poison, "the pass's purge, all its calls together (a step that failed counts nothing)")
	require.Positive(t, purged)
	require.Zero(t, e.retirements(t), "a pass takes out the retired messages too")
	requireKeptOnce(t, e, string(notification.Email), n-poison-retired, false)
}
