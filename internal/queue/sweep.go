package queue

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"dispatch-engine/internal/notification"
)

// DeadLetterInfo is what a dead-letter message says of itself: its message
// id and the headers DeadLetterMessage wrote, read back.
type DeadLetterInfo struct {
	// MessageID is the message's id: the notification's, or the one a
	// poison message came with.
	MessageID string
	// NotificationID is the notification the message is of: its message
	// id, unless it is a poison message, whose id names none ("").
	NotificationID string
	// Poison marks a message the consumer dead-lettered (x-source consumer).
	Poison bool
	// DeadLetter is the headers. A header that is missing or of the wrong
	// type reads as the zero value: a message written before x-generation
	// existed is of generation 0.
	notification.DeadLetter
}

// readDeadLetter reads the headers DeadLetterMessage writes.
func readDeadLetter(d amqp.Delivery) DeadLetterInfo {
	h := d.Headers
	info := DeadLetterInfo{MessageID: d.MessageId, DeadLetter: notification.DeadLetter{
		Reason:     headerString(h, HeaderReason),
		Source:     headerString(h, HeaderSource),
		Attempts:   headerInt(h, HeaderAttempts),
		LastStatus: headerInt(h, HeaderLastStatus),
		LastError:  headerString(h, HeaderLastError),
		Generation: headerInt(h, HeaderGeneration),
	}}
	if t, err := time.Parse(time.RFC3339Nano, headerString(h, HeaderFailedAt)); err == nil {
		info.FailedAt = t
	}
	info.Poison = info.Source == notification.SourceConsumer
	if !info.Poison {
		info.NotificationID = d.MessageId
	}
	return info
}

func headerString(h amqp.Table, name string) string {
	s, _ := h[name].(string)
	return s
}

// headerInt reads an integer header of any width: DeadLetterMessage writes
// int32, but a tool that republished the message may have widened it.
func headerInt(h amqp.Table, name string) int {
	switch v := h[name].(type) {
	case int8:
		return int(v)
	case int16:
		return int(v)
	case int32:
		return int(v)
	case int64:
		return int(v)
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	}
	return 0
}

// Sweep visits the messages that were in the channel's dead-letter queue
// when it began, removes those remove says to, and puts every other one
// back in its place, in order; it returns how many it removed. Messages
// published meanwhile are left for the next sweep.
//
// The visited messages are taken with manual acks and held until the end,
// so whatever stops a sweep midway (an error, ctx, a crash of the process)
// puts back all it held: only a removal is ever final. A sweep is one call
// of the publisher, bounded by its call timeout. Visits of one queue must
// not overlap, for a message one holds is hidden from another
// (internal/deadletter serializes them).
func (p *Publisher) Sweep(ctx context.Context, channel string, remove func(DeadLetterInfo) bool) (int, error) {
	_, removed, err := p.visit(ctx, channel, -1, remove)
	return removed, err
}

// PurgePoison removes the poison messages (x-source consumer) from the
// channel's dead-letter queue, as Sweep does, and returns how many.
func (p *Publisher) PurgePoison(ctx context.Context, channel string) (int, error) {
	return p.Sweep(ctx, channel, func(d DeadLetterInfo) bool { return d.Poison })
}

// Peek returns the first limit messages of the channel's dead-letter queue,
// oldest first, and the number of messages ready in it; it removes nothing.
// The messages it read are marked redelivered.
func (p *Publisher) Peek(ctx context.Context, channel string, limit int) ([]DeadLetterInfo, int, error) {
	limit = max(limit, 0) // a negative limit would visit them all
	seen := make([]DeadLetterInfo, 0, limit)
	total, _, err := p.visit(ctx, channel, limit, func(d DeadLetterInfo) bool {
		seen = append(seen, d)
		return false
	})
	if err != nil {
		return nil, 0, err
	}
	return seen, total, nil
}

// visit takes the first limit (all, when negative) of the messages ready in
// the channel's dead-letter queue when it begins, acks those remove says to
// remove and requeues the others; it returns the messages ready at the
// start and how many it removed.
func (p *Publisher) visit(ctx context.Context, channel string, limit int, remove func(DeadLetterInfo) bool) (int, int, error) {
	queue := p.topology.DeadLetterQueue(channel)
	// Read only once do returned nil: a call that timed out may still be
	// running.
	var total, removed int
	err := p.do(ctx, func(ctx context.Context, conn *amqp.Connection, _ *amqp.Channel) (err error) {
		// A channel of its own: the publisher's is in confirm mode, and
		// closing this one hands back whatever it still holds.
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening rabbitmq channel: %w", err)
		}
		var kept uint64 // the delivery tag of the last message kept
		defer func() {
			// One nack puts back every kept message, in their order
			// (RabbitMQ requeues a message to its former place).
			if kept > 0 {
				if nerr := ch.Nack(kept, true, true); nerr != nil && err == nil {
					err = fmt.Errorf("putting messages back in %s: %w", queue, nerr)
				}
			}
			// Closing is a round trip: once the broker answered, it has
			// taken every ack and nack sent before.
			if cerr := ch.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing the channel of %s: %w", queue, cerr)
			}
		}()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", queue, err)
		}
		n := q.Messages
		if limit >= 0 {
			n = min(n, limit)
		}
		count := 0
		for range n {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("visiting %s: %w", queue, err)
			}
			d, ok, err := ch.Get(queue, false)
			if err != nil {
				return fmt.Errorf("taking a message from %s: %w", queue, err)
			}
			if !ok {
				break // someone else took the rest
			}
			if !remove(readDeadLetter(d)) {
				kept = d.DeliveryTag
				continue
			}
			if err := ch.Ack(d.DeliveryTag, false); err != nil {
				return fmt.Errorf("removing a message from %s: %w", queue, err)
			}
			count++
		}
		total, removed = q.Messages, count
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return total, removed, nil
}
