package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/testenv"
)

// deadLetters is a dead-letter queue holding, in order: notification a of
// generation 0, a message of a written before x-generation existed, a of
// generation 1, b of generation 0, and a poison message.
type deadLetters struct {
	topo     queue.Topology
	pub      *queue.Publisher
	a, b     string
	failedAt time.Time
}

func newDeadLetters(t *testing.T) *deadLetters {
	t.Helper()
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	q := &deadLetters{topo: topo, pub: pub, a: uuid.NewString(), b: uuid.NewString(),
		failedAt: time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)}
	failed := func(id, body string, generation int) queue.Outgoing {
		return topo.DeadLetterMessage(string(notification.SMS), id, []byte(body), notification.DeadLetter{
			Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastStatus: 503,
			LastError: "provider answered 503", FailedAt: q.failedAt, Generation: generation,
		})
	}
	legacy := failed(q.a, "a-legacy", 0)
	delete(legacy.Headers, queue.HeaderGeneration)
	poison := topo.DeadLetterMessage(string(notification.SMS), "m-1", []byte("not json"), notification.DeadLetter{
		Reason: "unparseable", Source: notification.SourceConsumer, LastError: "not JSON", FailedAt: q.failedAt,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, pub.Publish(ctx, failed(q.a, "a0", 0), legacy, failed(q.a, "a1", 1), failed(q.b, "b0", 0), poison))
	return q
}

// bodies takes every message of the queue and returns their bodies in order.
func (q *deadLetters) bodies(t *testing.T) []string {
	t.Helper()
	ch := testenv.Channel(t)
	var out []string
	for {
		d, ok, err := ch.Get(q.topo.DeadLetterQueue(string(notification.SMS)), true)
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

func TestDeadLetterMessageCarriesTheGenerationOfANotificationOnly(t *testing.T) {
	topo := queue.Topology{Prefix: "t."}
	failed := topo.DeadLetterMessage(string(notification.SMS), "id", nil, notification.DeadLetter{Source: notification.SourceWorkflow, Generation: 2})
	require.Equal(t, int32(2), failed.Headers[queue.HeaderGeneration])
	first := topo.DeadLetterMessage(string(notification.SMS), "id", nil, notification.DeadLetter{Source: notification.SourceReconciler})
	require.Equal(t, int32(0), first.Headers[queue.HeaderGeneration], "generation 0 is written too")
	poison := topo.DeadLetterMessage(string(notification.SMS), "m-1", nil, notification.DeadLetter{Source: notification.SourceConsumer})
	require.NotContains(t, poison.Headers, queue.HeaderGeneration, "a poison message names no notification")
}

func TestSweepRemovesWhatItIsToldAndPutsTheRestBackInOrder(t *testing.T) {
	q := newDeadLetters(t)
	removed, err := q.pub.Sweep(context.Background(), string(notification.SMS), func(d queue.DeadLetterInfo) bool {
		return d.NotificationID == q.a && d.Generation < 1
	})
	require.NoError(t, err)
	require.Equal(t, 2, removed, "a's generation 0, and its message without x-generation")
	require.Equal(t, []string{"a1", "b0", "not json"}, q.bodies(t))
}

func TestSweepVisitsOnlyTheMessagesThereWhenItBegan(t *testing.T) {
	q := newDeadLetters(t)
	late := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, q.topo)
	t.Cleanup(func() { _ = late.Close() })
	visited := 0
	var lateErr error
	removed, err := q.pub.Sweep(context.Background(), string(notification.SMS), func(queue.DeadLetterInfo) bool {
		if visited++; visited == 1 {
			lateErr = late.Publish(context.Background(), q.topo.DeadLetterMessage(string(notification.SMS), q.b, []byte("late"),
				notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, FailedAt: q.failedAt}))
		}
		return true
	})
	require.NoError(t, err)
	require.NoError(t, lateErr)
	require.Equal(t, 5, visited)
	require.Equal(t, 5, removed)
	require.Equal(t, []string{"late"}, q.bodies(t), "published during the sweep: left for the next")
}

func TestSweepCutShortPutsBackEverythingItDidNotRemove(t *testing.T) {
	q := newDeadLetters(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	visited := 0
	_, err := q.pub.Sweep(ctx, string(notification.SMS), func(queue.DeadLetterInfo) bool {
		visited++
		if visited == 2 {
			cancel()
		}
		return visited == 1
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, visited)
	require.Equal(t, []string{"a-legacy", "a1", "b0", "not json"}, q.bodies(t), "only the removal before the cut is final")
}

func TestPeekReadsTheHeadersAndRemovesNothing(t *testing.T) {
	q := newDeadLetters(t)
	ctx := context.Background()

	some, total, err := q.pub.Peek(ctx, string(notification.SMS), 2)
	require.NoError(t, err)
	require.Equal(t, 5, total)
	require.Len(t, some, 2)
	require.Equal(t, queue.DeadLetterInfo{
		MessageID: q.a, NotificationID: q.a,
		DeadLetter: notification.DeadLetter{
			Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastStatus: 503,
			LastError: "provider answered 503", FailedAt: q.failedAt,
		},
	}, some[0])

	all, total, err := q.pub.Peek(ctx, string(notification.SMS), 50)
	require.NoError(t, err)
	require.Equal(t, 5, total)
	require.Len(t, all, 5)
	require.Equal(t, some, all[:2], "a peek puts back what it read, in place")
	require.Zero(t, all[1].Generation, "no x-generation reads as generation 0")
	require.Equal(t, 1, all[2].Generation)
	require.Equal(t, q.b, all[3].NotificationID)
	require.Equal(t, queue.DeadLetterInfo{
		MessageID: "m-1", Poison: true,
		DeadLetter: notification.DeadLetter{Reason: "unparseable", Source: notification.SourceConsumer, LastError: "not JSON", FailedAt: q.failedAt},
	}, all[4], "a poison message names no notification")

	none, total, err := q.pub.Peek(ctx, string(notification.SMS), 0)
	require.NoError(t, err)
	require.Empty(t, none)
	require.Equal(t, 5, total)
	require.Equal(t, []string{"a0", "a-legacy", "a1", "b0", "not json"}, q.bodies(t))
}

func TestPurgePoisonRemovesOnlyThePoisonMessages(t *testing.T) {
	q := newDeadLetters(t)
	purged, err := q.pub.PurgePoison(context.Background(), string(notification.SMS))
	require.NoError(t, err)
	require.Equal(t, 1, purged)
	require.Equal(t, []string{"a0", "a-legacy", "a1", "b0"}, q.bodies(t))

	purged, err = q.pub.PurgePoison(context.Background(), string(notification.Email))
	require.NoError(t, err)
	require.Zero(t, purged, "an empty queue")
}
