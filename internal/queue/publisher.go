package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Outgoing is one message to publish.
type Outgoing struct {
	Exchange   string
	RoutingKey string
	Body       []byte
	Priority   uint8
	MessageID  string
	Headers    amqp.Table
}

// DefaultCallTimeout bounds one Publish (every publish and every confirm),
// Ping or Depths of a Publisher.
const DefaultCallTimeout = 10 * time.Second

// dialTimeout bounds connecting to the broker, its AMQP handshake included.
const dialTimeout = 5 * time.Second

// Publisher publishes persistent messages and waits for the broker's
// confirms. It dials lazily and redials after a failure, so callers just
// retry a failed Publish later. Every call is bounded by its context and by
// the publisher's call timeout: a broker that stops answering (a partition,
// not a refusal) costs a call its timeout, not forever, and the connection
// is dropped so the next call dials afresh.
type Publisher struct {
	url      string
	topology Topology
	timeout  time.Duration

	// lock is a mutex a waiter can give up on: one call at a time.
	lock chan struct{}
	// mu guards conn and ch, which a timed-out call drops from aside.
	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

// PublisherOption changes a Publisher's defaults.
type PublisherOption func(*Publisher)

// WithCallTimeout sets the bound of each call (DefaultCallTimeout).
func WithCallTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) { p.timeout = d }
}

// NewPublisher returns a Publisher for the broker at url; it declares
// topology on every (re)connect.
func NewPublisher(url string, topology Topology, opts ...PublisherOption) *Publisher {
	p := &Publisher{url: url, topology: topology, timeout: DefaultCallTimeout, lock: make(chan struct{}, 1)}
	for _, opt := range opts {
		opt(p)
	}
	return p
}

// Publish sends msgs and returns nil only when the broker confirmed every one.
func (p *Publisher) Publish(ctx context.Context, msgs ...Outgoing) error {
	return p.do(ctx, func(ctx context.Context, _ *amqp.Connection, ch *amqp.Channel) error {
		confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
		for _, m := range msgs {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, false, false, amqp.Publishing{
				ContentType:  "application/json",
				DeliveryMode: amqp.Persistent,
				Priority:     m.Priority,
				MessageId:    m.MessageID,
				Timestamp:    time.Now(),
				Headers:      m.Headers,
				Body:         m.Body,
			})
			if err != nil {
				return fmt.Errorf("publishing to %s: %w", m.Exchange, err)
			}
			confirms = append(confirms, dc)
		}
		for _, dc := range confirms {
			acked, err := dc.WaitContext(ctx)
			if err != nil {
				return fmt.Errorf("waiting for publisher confirm: %w", err)
			}
			if !acked {
				return errNacked
			}
		}
		return nil
	})
}

var errNacked = errors.New("broker refused (nacked) a publish")

// Ping reports whether the publisher can reach the broker, within ctx.
func (p *Publisher) Ping(ctx context.Context) error {
	return p.do(ctx, func(context.Context, *amqp.Connection, *amqp.Channel) error { return nil })
}

// Close closes the connection.
func (p *Publisher) Close() error {
	p.lock <- struct{}{}
	defer func() { <-p.lock }()
	p.reset()
	return nil
}

// do runs op on the publisher's channel, holding the publisher, bounded by
// ctx and the call timeout. When time runs out first, do returns at once and
// the connection is dropped, which ends whatever op was blocked on; the
// publisher is held until op has returned.
func (p *Publisher) do(ctx context.Context, op func(context.Context, *amqp.Connection, *amqp.Channel) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	select {
	case p.lock <- struct{}{}:
	case <-ctx.Done():
		cancel()
		return fmt.Errorf("waiting for the publisher: %w", ctx.Err())
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-p.lock }()
		defer cancel()
		conn, ch, err := p.channel()
		if err == nil {
			err = op(ctx, conn, ch)
		}
		if err != nil && !errors.Is(err, errNacked) {
			p.reset()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done: // it finished just then
			return err
		default:
		}
		p.resetConn()
		return fmt.Errorf("rabbitmq did not answer in time: %w", ctx.Err())
	}
}

// channel returns the open connection and channel, dialing when there are
// none. The caller holds the publisher.
func (p *Publisher) channel() (*amqp.Connection, *amqp.Channel, error) {
	p.mu.Lock()
	conn, ch := p.conn, p.ch
	p.mu.Unlock()
	if ch != nil && !ch.IsClosed() && !conn.IsClosed() {
		return conn, ch, nil
	}
	p.reset()
	conn, err := amqp.DialConfig(p.url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Dial:       amqp.DefaultDial(dialTimeout),
		Properties: amqp.Table{"connection_name": "dispatch-engine publisher"},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to rabbitmq: %w", err)
	}
	// Installed before the setup below, so a call that times out meanwhile
	// can drop it.
	p.mu.Lock()
	p.conn = conn
	p.mu.Unlock()
	ch, err = conn.Channel()
	if err != nil {
		p.reset()
		return nil, nil, fmt.Errorf("opening rabbitmq channel: %w", err)
	}
	if err := p.topology.Declare(ch); err != nil {
		p.reset()
		return nil, nil, err
	}
	if err := ch.Confirm(false); err != nil {
		p.reset()
		return nil, nil, fmt.Errorf("enabling publisher confirms: %w", err)
	}
	p.mu.Lock()
	p.ch = ch
	p.mu.Unlock()
	return conn, ch, nil
}

// reset drops the connection.
func (p *Publisher) reset() {
	p.mu.Lock()
	conn := p.conn
	p.conn, p.ch = nil, nil
	p.mu.Unlock()
	closeSoon(conn)
}

// resetConn closes the connection, leaving it to the call that used it to
// find it closed and drop it.
func (p *Publisher) resetConn() {
	p.mu.Lock()
	conn := p.conn
	p.mu.Unlock()
	closeSoon(conn)
}

// closeSoon closes conn without waiting long for the broker: one that
// stopped answering gets a second to say goodbye.
func closeSoon(conn *amqp.Connection) {
	if conn != nil {
		_ = conn.CloseDeadline(time.Now().Add(time.Second))
	}
}
