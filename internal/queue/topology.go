// Package queue is the RabbitMQ side: the topology, a publisher with
// publisher confirms, and a consumer with manual acks that dead-letters
// poison messages; the one dead-letter message format (deadletter.go); and
// what the metrics, the API and the dead-letter pruner need of the queues:
// their depths, peeking at a dead-letter queue and sweeping messages out of
// it; and a notification's trace context in its message headers
// (trace.go). Every part redials when the broker drops the connection.
package queue

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Topology names the exchanges and queues. Prefix (RABBITMQ_QUEUE_PREFIX)
// lets several deployments share one broker.
type Topology struct {
	Prefix string
}

// Exchange is the durable direct exchange notifications are published to,
// routed by channel.
func (t Topology) Exchange() string { return t.Prefix + "notifications" }

// Queue is the durable, priority queue of one channel.
func (t Topology) Queue(channel string) string { return t.Prefix + "notifications." + channel }

// DeadLetterExchange is the durable direct exchange of the dead-letter queues.
func (t Topology) DeadLetterExchange() string { return t.Prefix + "notifications.dlx" }

// DeadLetterQueue is the channel's dead-letter queue (dlq.sms, dlq.email, dlq.push).
func (t Topology) DeadLetterQueue(channel string) string { return t.Prefix + "dlq." + channel }

// Declare creates the exchanges, queues and bindings; it is idempotent.
func (t Topology) Declare(ch *amqp.Channel) error {
	for _, ex := range []string{t.Exchange(), t.DeadLetterExchange()} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declaring exchange %s: %w", ex, err)
		}
	}
	for _, c := range notification.Channels {
		q := t.Queue(string(c))
		args := amqp.Table{"x-max-priority": int32(notification.MaxBrokerPriority)}
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return fmt.Errorf("declaring queue %s: %w", q, err)
		}
		if err := ch.QueueBind(q, string(c), t.Exchange(), false, nil); err != nil {
			return fmt.Errorf("binding queue %s: %w", q, err)
		}
		dlq := t.DeadLetterQueue(string(c))
		if _, err := ch.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declaring queue %s: %w", dlq, err)
		}
		if err := ch.QueueBind(dlq, string(c), t.DeadLetterExchange(), false, nil); err != nil {
			return fmt.Errorf("binding queue %s: %w", dlq, err)
		}
	}
	return nil
}
