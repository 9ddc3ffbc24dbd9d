package queue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// running is a consumer started by startConsumer.
type running struct {
	cancel context.CancelFunc
	done   chan error
	// stopped is set once stop has run.
	stopped bool
}

// stop cancels the consumer and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not stop within 15s of cancel")
	}
}

// startConsumer runs a consumer of the sms queue until the test stops it or ends.
func startConsumer(t *testing.T, topo queue.Topology, requeueDelay time.Duration, handler queue.Handler) *running {
	t.Helper()
	url := testenv.Shared(t).RabbitMQURL
	dlq := queue.NewPublisher(url, topo)
	t.Cleanup(func() { _ = dlq.Close() })
	c := queue.NewConsumer(queue.ConsumerConfig{
		URL:          url,
		Topology:     topo,
		Channels:     []notification.Channel{notification.SMS},
		Concurrency:  1,
		RequeueDelay: requeueDelay,
	}, handler, dlq, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// publish sends one message to the notifications exchange with routing key sms.
func publish(t *testing.T, topo queue.Topology, body string) {
	t.Helper()
	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	defer func() { _ = pub.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, pub.Publish(ctx, queue.Outgoing{
		Exchange: topo.Exchange(), RoutingKey: string(notification.SMS), Body: []byte(body), MessageID: "m-1",
	}))
}

// inspect reports a queue's ready messages and consumers.
func inspect(t *testing.T, ch *amqp.Channel, name string) amqp.Queue {
	t.Helper()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	require.NoError(t, err)
	return q
}

func TestPoisonMessageGoesToDeadLetterQueueWithReason(t *testing.T) {
	topo := testenv.Topology(t)
	var handled atomic.Int32
	consumer := startConsumer(t, topo, 10*time.Millisecond, func(context.Context, amqp.Delivery) error {
		handled.Add(1)
		return &queue.PoisonError{Reason: "unparseable", Err: errors.New("not JSON")}
	})
	publish(t, topo, "not json")

	ch := testenv.Channel(t)
	dead := testenv.NextMessage(t, ch, topo.DeadLetterQueue(string(notification.SMS)), 10*time.Second, "message never reached the dead-letter queue")
	require.Equal(t, "unparseable", dead.Headers["x-reason"])
	require.Equal(t, "not json", string(dead.Body))
	require.Equal(t, "m-1", dead.MessageId)

	// Once the consumer is gone, an unacked message would be back in the queue.
	consumer.stop(t)
	require.Zero(t, inspect(t, ch, topo.Queue(string(notification.SMS))).Messages)
	require.Zero(t, inspect(t, ch, topo.DeadLetterQueue(string(notification.SMS))).Messages)
	require.Equal(t, int32(1), handled.Load())
}

func TestFailedHandlerRequeuesMessage(t *testing.T) {
	topo := testenv.Topology(t)
	var handled atomic.Int32
	var redelivered atomic.Bool
	consumer := startConsumer(t, topo, 10*time.Millisecond, func(_ context.Context, d amqp.Delivery) error {
		if handled.Add(1) == 1 {
			return errors.New("dependency down")
		}
		redelivered.Store(d.Redelivered)
		return nil
	})
	publish(t, topo, `{"id":"x"}`)

	require.Eventually(t, func() bool { return handled.Load() >= 2 }, 10*time.Second, 10*time.Millisecond,
		"the failed message was not handled again")
	consumer.stop(t)

	require.Equal(t, int32(2), handled.Load(), "handled once failing, once succeeding, then acked")
	require.True(t, redelivered.Load(), "the second delivery is the requeued message")
	ch := testenv.Channel(t)
	require.Zero(t, inspect(t, ch, topo.Queue(string(notification.SMS))).Messages)
	require.Zero(t, inspect(t, ch, topo.DeadLetterQueue(string(notification.SMS))).Messages)
}

func TestConsumerStopsCleanlyOnContextCancel(t *testing.T) {
	topo := testenv.Topology(t)
	started := make(chan struct{})
	release := make(chan struct{})
	var handled atomic.Int32
	var ctxLiveAtEnd atomic.Bool
	consumer := startConsumer(t, topo, 10*time.Millisecond, func(ctx context.Context, _ amqp.Delivery) error {
		handled.Add(1)
		close(started)
		<-release
		ctxLiveAtEnd.Store(ctx.Err() == nil)
		return nil
	})
	publish(t, topo, `{"id":"x"}`)

	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never received the message")
	}

	// Cancel while the handler holds the message: Run waits for it.
	consumer.cancel()
	require.Never(t, func() bool { return len(consumer.done) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"Run returned while a handler still held a message")
	close(release)
	consumer.stop(t)

	require.Equal(t, int32(1), handled.Load())
	require.True(t, ctxLiveAtEnd.Load(), "the in-flight handler's context is not cancelled by shutdown")
	ch := testenv.Channel(t)
	q := inspect(t, ch, topo.Queue(string(notification.SMS)))
	require.Zero(t, q.Messages, "the in-flight message was acked, not requeued")
	require.Zero(t, q.Consumers, "the consumer is gone")
}

func TestShutdownDrainIsBoundedAndRequeuesWhatIsLeft(t *testing.T) {
	topo := testenv.Topology(t)
	url := testenv.Shared(t).RabbitMQURL
	dlq := queue.NewPublisher(url, topo)
	t.Cleanup(func() { _ = dlq.Close() })
	started := make(chan struct{}, 1)
	c := queue.NewConsumer(queue.ConsumerConfig{
		URL: url, Topology: topo, Channels: []notification.Channel{notification.SMS}, Concurrency: 1,
		RequeueDelay: 10 * time.Millisecond, DrainTimeout: 500 * time.Millisecond,
	}, func(ctx context.Context, _ amqp.Delivery) error {
		started <- struct{}{}
		<-ctx.Done() // a dependency that never answers
		return ctx.Err()
	}, dlq, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	publish(t, topo, `{"id":"x"}`)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never received the message")
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return: the drain is not bounded")
	}
	ch := testenv.Channel(t)
	require.Equal(t, 1, inspect(t, ch, topo.Queue(string(notification.SMS))).Messages, "the message cut short is back in the queue")
}

func TestHandlingOfOneMessageIsBounded(t *testing.T) {
	topo := testenv.Topology(t)
	url := testenv.Shared(t).RabbitMQURL
	dlq := queue.NewPublisher(url, topo)
	t.Cleanup(func() { _ = dlq.Close() })
	var calls atomic.Int32
	c := queue.NewConsumer(queue.ConsumerConfig{
		URL: url, Topology: topo, Channels: []notification.Channel{notification.SMS}, Concurrency: 1,
		RequeueDelay: 10 * time.Millisecond, HandleTimeout: 200 * time.Millisecond,
	}, func(ctx context.Context, _ amqp.Delivery) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // the first try hangs
			return ctx.Err()
		}
		return nil
	}, dlq, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	publish(t, topo, `{"id":"x"}`)

	require.Eventually(t, func() bool { return calls.Load() >= 2 }, 10*time.Second, 10*time.Millisecond,
		"a hung try is given up and the message handled again")
}
