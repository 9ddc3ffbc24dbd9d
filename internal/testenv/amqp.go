package testenv

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// Channel opens a channel on the test broker, closed at cleanup.
func Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(Shared(t).RabbitMQURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// NextMessage takes (and acks) the next message of queue, waiting up to
// within for one to arrive; it fails the test, saying why, when none does.
func NextMessage(t testing.TB, ch *amqp.Channel, queue string, within time.Duration, why string) amqp.Delivery {
	t.Helper()
	var got amqp.Delivery
	require.Eventually(t, func() bool {
		d, ok, err := ch.Get(queue, true)
		if err != nil || !ok {
			return false
		}
		got = d
		return true
	}, within, 20*time.Millisecond, why)
	return got
}
