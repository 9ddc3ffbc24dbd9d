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

// Publisher publishes persistent messages and waits for the broker's
// confirms. It dials lazily and redials after a failure, so callers just
// retry a failed Publish later.
type Publisher struct {
	url      string
	topology Topology

	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

// NewPublisher returns a Publisher for the broker at url; it declares
// topology on every (re)connect.
func NewPublisher(url string, topology Topology) *Publisher {
	return &Publisher{url: url, topology: topology}
}

// Publish sends msgs and returns nil only when the broker confirmed every one.
func (p *Publisher) Publish(ctx context.Context, msgs ...Outgoing) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, err := p.channel()
	if err != nil {
		return err
	}
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
			p.reset()
			return fmt.Errorf("publishing to %s: %w", m.Exchange, err)
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			p.reset()
			return fmt.Errorf("waiting for publisher confirm: %w", err)
		}
		if !acked {
			return errors.New("broker refused (nacked) a publish")
		}
	}
	return nil
}

// Ping reports whether the publisher can reach the broker.
func (p *Publisher) Ping() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.channel()
	return err
}

// Close closes the connection.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
	return nil
}

func (p *Publisher) channel() (*amqp.Channel, error) {
	if p.ch != nil && !p.ch.IsClosed() && !p.conn.IsClosed() {
		return p.ch, nil
	}
	p.reset()
	conn, err := amqp.DialConfig(p.url, amqp.Config{Heartbeat: 10 * time.Second, Properties: amqp.Table{"connection_name": "dispatch-engine publisher"}})
	if err != nil {
		return nil, fmt.Errorf("connecting to rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("opening rabbitmq channel: %w", err)
	}
	if err := p.topology.Declare(ch); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("enabling publisher confirms: %w", err)
	}
	p.conn, p.ch = conn, ch
	return ch, nil
}

func (p *Publisher) reset() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.conn, p.ch = nil, nil
}
