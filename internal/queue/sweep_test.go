package queue_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
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

// pass steps through the queue's first n messages, steps of at most size,
// and returns the bodies visited.
func (q *deadLetters) pass(t *testing.T, n, size int, remove func(queue.DeadLetterInfo) bool, between func()) []string {
	t.Helper()
	var seen []string
	for n > 0 {
		step, err := q.pub.SweepStep(context.Background(), string(notification.SMS), min(n, size), func(d queue.DeadLetterInfo) bool {
			seen = append(seen, d.MessageID+"/"+strconv.Itoa(d.Generation))
			return remove(d)
		})
		require.NoError(t, err)
		require.Positive(t, step.Visited)
		n -= step.Visited
		if between != nil {
			between()
		}
	}
	return seen
}

func TestSweepStepRemovesWhatItIsToldAndMovesTheRestToTheBackInOrder(t *testing.T) {
	q := newDeadLetters(t)
	step, err := q.pub.SweepStep(context.Background(), string(notification.SMS), 3, func(d queue.DeadLetterInfo) bool {
		return d.NotificationID == q.a && d.Generation < 1
	})
	require.NoError(t, err)
	require.Equal(t, queue.Step{Visited: 3, Removed: 2}, step, "a's generation 0, and its message without x-generation")

	step, err = q.pub.SweepStep(context.Background(), string(notification.SMS), 2, func(queue.DeadLetterInfo) bool { return false })
	require.NoError(t, err)
	require.Equal(t, queue.Step{Visited: 2}, step)
	require.Equal(t, []string{"a1", "b0", "not json"}, q.bodies(t), "a pass over the queue gives it back in its order")
}

func TestSweepStepVisitsNoMoreThanTheQueueHolds(t *testing.T) {
	q := newDeadLetters(t)
	step, err := q.pub.SweepStep(context.Background(), string(notification.SMS), 100, func(d queue.DeadLetterInfo) bool { return d.Poison })
	require.NoError(t, err)
	require.Equal(t, queue.Step{Visited: 5, Removed: 1, Emptied: true}, step)
	require.Equal(t, []string{"a0", "a-legacy", "a1", "b0"}, q.bodies(t))

	step, err = q.pub.SweepStep(context.Background(), string(notification.Email), 100, func(queue.DeadLetterInfo) bool { return true })
	require.NoError(t, err)
	require.Equal(t, queue.Step{Emptied: true}, step, "an empty queue")
}

func TestSweepStepMovesAMessageUnchanged(t *testing.T) {
	q := newDeadLetters(t)
	before, _, err := q.pub.Peek(context.Background(), string(notification.SMS), 5)
	require.NoError(t, err)
	q.pass(t, 5, 2, func(queue.DeadLetterInfo) bool { return false }, nil)
	after, total, err := q.pub.Peek(context.Background(), string(notification.SMS), 5)
	require.NoError(t, err)
	require.Equal(t, 5, total)
	require.Equal(t, before, after, "every header, in the same order")

	d := testenv.NextMessage(t, testenv.Channel(t), q.topo.DeadLetterQueue(string(notification.SMS)), 5*time.Second, "the first message")
	require.Equal(t, q.a, d.MessageId)
	require.Equal(t, "application/json", d.ContentType)
	require.Equal(t, uint8(2), d.DeliveryMode, "persistent")
	require.False(t, d.Timestamp.IsZero())
	require.Equal(t, "a0", string(d.Body))
}

func TestSweepStepsVisitOnlyTheMessagesThereWhenThePassBegan(t *testing.T) {
	q := newDeadLetters(t)
	late := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, q.topo)
	t.Cleanup(func() { _ = late.Close() })
	published := false
	seen := q.pass(t, 5, 2, func(queue.DeadLetterInfo) bool { return false }, func() {
		if !published {
			published = true
			require.NoError(t, late.Publish(context.Background(), q.topo.DeadLetterMessage(string(notification.SMS), q.b, []byte("late"),
				notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, FailedAt: q.failedAt, Generation: 7})))
		}
	})
	require.Equal(t, []string{q.a + "/0", q.a + "/0", q.a + "/1", q.b + "/0", "m-1/0"}, seen,
		"the five there when it began, each once; not the one published during the pass")
	require.ElementsMatch(t, []string{"a0", "a-legacy", "a1", "b0", "not json", "late"}, q.bodies(t))
}

func TestSweepStepCutShortPutsBackEverythingItDidNotRemove(t *testing.T) {
	q := newDeadLetters(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	visited := 0
	_, err := q.pub.SweepStep(ctx, string(notification.SMS), 5, func(queue.DeadLetterInfo) bool {
		visited++
		if visited == 2 {
			cancel()
		}
		return visited == 1
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []string{"a0", "a-legacy", "a1", "b0", "not json"}, q.bodies(t),
		"a step that fails acks nothing: what it held is back in place")
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

func TestSweepStepEndsWithinItsCallAndVisitsTheRestNextTime(t *testing.T) {
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo, queue.WithCallTimeout(time.Second))
	t.Cleanup(func() { _ = pub.Close() })
	const n = 600
	msgs := make([]queue.Outgoing, n)
	for i := range msgs {
		msgs[i] = topo.DeadLetterMessage(string(notification.SMS), strconv.Itoa(i), []byte(strconv.Itoa(i)),
			notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow})
	}
	ctx := context.Background()
	require.NoError(t, queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo, queue.WithCallTimeout(time.Minute)).Publish(ctx, msgs...))

	// Each visit is slow: the step runs out of its third of a second and
	// stops, in time, rather than being cut short.
	var seen []string
	started := time.Now()
	step, err := pub.SweepStep(ctx, string(notification.SMS), n, func(d queue.DeadLetterInfo) bool {
		seen = append(seen, d.MessageID)
		time.Sleep(3 * time.Millisecond) // the visit's cost, not a wait for a condition
		return false
	})
	require.NoError(t, err)
	require.Less(t, time.Since(started), time.Second)
	require.Less(t, step.Visited, n)
	require.Positive(t, step.Visited)
	require.False(t, step.Emptied)
	require.Len(t, seen, step.Visited)

	for visited := step.Visited; visited < n; {
		step, err := pub.SweepStep(ctx, string(notification.SMS), n-visited, func(d queue.DeadLetterInfo) bool {
			seen = append(seen, d.MessageID)
			return false
		})
		require.NoError(t, err)
		visited += step.Visited
	}
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	require.Equal(t, want, seen, "each once, in order")
	require.Equal(t, want, (&deadLetters{topo: topo}).bodies(t), "the queue in its order")
}
