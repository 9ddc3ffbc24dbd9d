package queue

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
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

// Step is what one SweepStep did.
type Step struct {
	// Visited is how many messages it visited, from the head: at most n,
	// fewer when the queue held fewer or the call's time ran short.
	Visited int
	// Removed is how many of those it removed.
	Removed int
	// Emptied is true when it visited every message the queue held.
	Emptied bool
}

// sweepBatch is how many messages a step moves and acks at a time.
const sweepBatch = 200

// SweepStep visits at most n messages at the head of the channel's
// dead-letter queue, in one call of the publisher: it removes those remove
// says to and moves every other one, unchanged (properties, headers, body),
// to the back of the queue, in their order. It visits for a third of the
// call's time at most, and fewer messages when that runs out, so a step
// ends in time (its confirms and acks included) rather than being cut
// short.
//
// A pass over the queue is a sequence of steps whose visits add up to the
// number of messages it held when the pass began: every message published
// since, and every one a step moved, is behind those still to visit (a
// message put back by a reader goes back to its former place), so the steps
// visit each of them exactly once, and the messages kept come out of the
// pass in their order. A message published during the pass lands among
// them. The messages are moved and acked in batches; a step cut short (an
// error, ctx, a crash) returns an error and leaves what it had not acked at
// the head, in place. Only a batch cut between the broker's confirm of its
// copies and its ack leaves those copies in the queue twice (dead letters
// are at-least-once: deduplicate on the message id). Steps and reads of
// one queue must not overlap, for a message one holds is hidden from
// another (internal/deadletter serializes them).
func (p *Publisher) SweepStep(ctx context.Context, channel string, n int, remove func(DeadLetterInfo) bool) (Step, error) {
	queue := p.topology.DeadLetterQueue(channel)
	var step Step
	err := p.do(ctx, func(ctx context.Context, conn *amqp.Connection, _ *amqp.Channel) (err error) {
		start := time.Now()
		until := start.Add(p.timeout / 3)
		if d, ok := ctx.Deadline(); ok && start.Add(d.Sub(start)/3).Before(until) {
			until = start.Add(d.Sub(start) / 3)
		}
		// A channel of its own (closing it hands back whatever it still
		// holds, in place), in confirm mode for the messages it moves.
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening rabbitmq channel: %w", err)
		}
		defer func() {
			// Closing is a round trip: once the broker answered, it has
			// taken every ack sent before.
			if cerr := ch.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing the channel of %s: %w", queue, cerr)
			}
		}()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", queue, err)
		}
		want := min(n, q.Messages)
		if want <= 0 {
			step.Emptied = true
			return nil
		}
		held, err := take(ctx, ch, queue, want, until)
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("enabling publisher confirms: %w", err)
		}
		var s Step
		for len(held) > 0 && (s.Visited == 0 || time.Now().Before(until)) {
			removed, visited, err := moveOrRemove(ctx, ch, queue, held[:min(sweepBatch, len(held))], remove, until)
			if err != nil {
				return err
			}
			held = held[visited:]
			s.Visited += visited
			s.Removed += removed
		}
		s.Emptied = s.Visited == q.Messages
		step = s
		return nil
	})
	if err != nil {
		return Step{}, err
	}
	return step, nil
}

// moveOrRemove visits the messages of batch, in order, until it has
// visited them all or until passed (one at least): it removes those remove
// says to and moves the others to the back of queue, in order, publishing
// their copies, waiting for the broker's confirms, then acking every
// message it visited. It returns how many it removed and visited.
func moveOrRemove(ctx context.Context, ch *amqp.Channel, queue string, batch []amqp.Delivery, remove func(DeadLetterInfo) bool, until time.Time) (removed, visited int, err error) {
	confirms := make([]*amqp.DeferredConfirmation, 0, len(batch))
	for _, d := range batch {
		if visited > 0 && time.Now().After(until) {
			break
		}
		visited++
		if remove(readDeadLetter(d)) {
			removed++
			continue
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, republished(d))
		if err != nil {
			return 0, 0, fmt.Errorf("moving a message to the back of %s: %w", queue, err)
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("waiting for publisher confirm: %w", err)
		}
		if !acked {
			return 0, 0, fmt.Errorf("moving a message to the back of %s: %w", queue, errNacked)
		}
	}
	// Every kept message visited has its copy at the back: one ack takes
	// out every message visited (and none after them).
	if err := ch.Ack(batch[visited-1].DeliveryTag, true); err != nil {
		return 0, 0, fmt.Errorf("removing messages from %s: %w", queue, err)
	}
	return removed, visited, nil
}

// stepIdle is how long a step waits for a delivery it was promised before
// it takes the messages it has: another reader took the rest.
const stepIdle = time.Second

// take consumes the first n messages of queue, unacked, and cancels its
// consumer: a prefetch of n, streamed, rather than a round trip a message.
// It stops taking at until, with what it has (one message at least).
func take(ctx context.Context, ch *amqp.Channel, queue string, n int, until time.Time) ([]amqp.Delivery, error) {
	if err := ch.Qos(n, 0, false); err != nil {
		return nil, fmt.Errorf("setting the prefetch of %s: %w", queue, err)
	}
	const tag = "dead-letter-sweep"
	deliveries, err := ch.ConsumeWithContext(ctx, queue, tag, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", queue, err)
	}
	held := make([]amqp.Delivery, 0, n)
	idle := time.NewTimer(stepIdle)
	defer idle.Stop()
	late := time.NewTimer(time.Until(until))
	defer late.Stop()
taking:
	for len(held) < n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return nil, fmt.Errorf("consuming %s: the channel closed", queue)
			}
			held = append(held, d)
			idle.Reset(stepIdle)
		case <-late.C:
			if len(held) > 0 {
				break taking
			}
		case <-idle.C:
			break taking
		case <-ctx.Done():
			return nil, fmt.Errorf("visiting %s: %w", queue, ctx.Err())
		}
	}
	// With a prefetch of n, nothing more is delivered before an ack; the
	// consumer ends before the step acks anything. A message delivered
	// meanwhile is held, unacked, and goes back in place when the channel
	// closes.
	if err := ch.Cancel(tag, false); err != nil {
		return nil, fmt.Errorf("ending the consumer of %s: %w", queue, err)
	}
	return held, nil
}

// republished is d as it was published: a moved message is the same
// message, its properties, headers and body unchanged; only a user id is
// left out (the broker refuses one that is not the connection's user, and
// the service writes none).
func republished(d amqp.Delivery) amqp.Publishing {
	return amqp.Publishing{
		Headers: d.Headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageId: d.MessageId, Timestamp: d.Timestamp,
		Type: d.Type, AppId: d.AppId, Body: d.Body,
	}
}

// DeadLetterDepth returns the messages ready in the channel's dead-letter
// queue.
func (p *Publisher) DeadLetterDepth(ctx context.Context, channel string) (int, error) {
	queue := p.topology.DeadLetterQueue(channel)
	var n int
	err := p.do(ctx, func(_ context.Context, conn *amqp.Connection, _ *amqp.Channel) error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening rabbitmq channel: %w", err)
		}
		defer func() { _ = ch.Close() }()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", queue, err)
		}
		n = q.Messages
		return nil
	})
	if err != nil {
		return 0, err // n is read only once do returned nil
	}
	return n, nil
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
