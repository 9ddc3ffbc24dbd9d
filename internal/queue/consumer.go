package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
)

// PoisonError marks a message that can never be handled (unparseable, unknown
// id): the consumer moves it to the channel's dead-letter queue with Reason.
type PoisonError struct {
	Reason string
	Err    error
}

func (e *PoisonError) Error() string { return fmt.Sprintf("poison message (%s): %v", e.Reason, e.Err) }
func (e *PoisonError) Unwrap() error { return e.Err }

// Handler handles one message. nil acks it; a *PoisonError dead-letters it;
// any other error requeues it after a pause.
type Handler func(ctx context.Context, d amqp.Delivery) error

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// URL is the broker URL.
	URL string
	// Topology names the queues.
	Topology Topology
	// Channels are the notification channels whose queues are consumed.
	Channels []notification.Channel
	// Concurrency is the number of messages handled at once per queue, and
	// the prefetch. Default 16.
	Concurrency int
	// RequeueDelay is the pause before a failed message is requeued, so a
	// down dependency is not hammered. Default 1s.
	RequeueDelay time.Duration
	// HandleTimeout bounds the handling of one message: a dependency that
	// hangs fails it (requeued) instead of holding it. Default 30s.
	HandleTimeout time.Duration
	// DrainTimeout bounds how long messages already taken may finish once
	// Run's context ends (SHUTDOWN_TIMEOUT); what is still running then is
	// cancelled and requeued. Default 30s.
	DrainTimeout time.Duration
	// InFlight, when set, counts the messages being handled, by channel.
	InFlight *prometheus.GaugeVec
}

// Consumer consumes each channel's queue with manual acks and a bounded
// prefetch, handing every message to a Handler.
type Consumer struct {
	cfg     ConsumerConfig
	handler Handler
	dlq     *Publisher
	log     *zap.Logger
}

// NewConsumer returns a Consumer; dlq publishes dead-lettered messages.
func NewConsumer(cfg ConsumerConfig, handler Handler, dlq *Publisher, log *zap.Logger) *Consumer {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.RequeueDelay <= 0 {
		cfg.RequeueDelay = time.Second
	}
	if cfg.HandleTimeout <= 0 {
		cfg.HandleTimeout = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	return &Consumer{cfg: cfg, handler: handler, dlq: dlq, log: log}
}

// Run consumes until ctx ends, redialing with backoff when the connection
// drops. On return, every message it took has been acked or requeued.
func (c *Consumer) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("rabbitmq consumer disconnected; reconnecting", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// session runs one connection's life: it returns when the connection or a
// channel closes, or ctx ends.
func (c *Consumer) session(ctx context.Context) error {
	conn, err := amqp.DialConfig(c.cfg.URL, amqp.Config{Heartbeat: 10 * time.Second, Properties: amqp.Table{"connection_name": "dispatch-engine consumer"}})
	if err != nil {
		return fmt.Errorf("connecting to rabbitmq: %w", err)
	}
	defer func() { _ = conn.Close() }()

	// sctx stops consuming; a message already taken is still handled to the
	// end on work, which shutdown cancels only DrainTimeout later, and then
	// acked (or requeued, when cut short).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	drained := make(chan struct{})
	defer close(drained)
	go func() {
		select {
		case <-drained:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(c.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-drained:
		case <-t.C:
			c.log.Warn("shutdown: messages still being handled after the drain timeout are requeued", zap.Duration("timeout", c.cfg.DrainTimeout))
			cancelWork()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.cfg.Channels)+1)
	go func() {
		if closed, ok := <-conn.NotifyClose(make(chan *amqp.Error, 1)); ok {
			errs <- fmt.Errorf("connection closed: %v", closed)
		}
	}()
	for _, name := range c.cfg.Channels {
		channel := string(name)
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening rabbitmq channel: %w", err)
		}
		if err := c.cfg.Topology.Declare(ch); err != nil {
			return err
		}
		if err := ch.Qos(c.cfg.Concurrency, 0, false); err != nil {
			return fmt.Errorf("setting prefetch: %w", err)
		}
		queue := c.cfg.Topology.Queue(channel)
		go func() {
			if closed, ok := <-ch.NotifyClose(make(chan *amqp.Error, 1)); ok {
				errs <- fmt.Errorf("channel of %s closed: %v", queue, closed)
			}
		}()
		deliveries, err := ch.ConsumeWithContext(sctx, queue, "", false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consuming %s: %w", queue, err)
		}
		for range c.cfg.Concurrency {
			wg.Go(func() {
				for d := range deliveries {
					c.handle(work, sctx, channel, d)
				}
			})
		}
	}
	c.log.Info("consuming", zap.Any("channels", c.cfg.Channels))
	var result error
	select {
	case <-ctx.Done():
	case result = <-errs:
	}
	// Cancelling the consumers closes every deliveries channel; the handlers
	// finish what they hold, then the connection closes.
	cancel()
	wg.Wait()
	return result
}

func (c *Consumer) handle(ctx, stop context.Context, channel string, d amqp.Delivery) {
	if c.cfg.InFlight != nil {
		g := c.cfg.InFlight.WithLabelValues(channel)
		g.Inc()
		defer g.Dec()
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandleTimeout)
	hctx, span := traceHandling(hctx, channel, d)
	err := c.handler(hctx, d)
	telemetry.EndSpan(span, err, "handling failed")
	cancel()
	var poison *PoisonError
	switch {
	case err == nil:
		_ = d.Ack(false)
	case errors.As(err, &poison):
		c.deadLetter(ctx, channel, d, poison)
	default:
		if stop.Err() == nil && ctx.Err() == nil {
			c.log.Warn("handling message failed; requeueing", zap.String("message_id", d.MessageId), zap.String("channel", channel), zap.Error(err))
			select {
			case <-stop.Done():
			case <-time.After(c.cfg.RequeueDelay):
			}
		}
		_ = d.Nack(false, true)
	}
}

// deadLetter publishes the message to the channel's DLQ (with confirms) and
// acks it only then: a message is never dropped silently.
func (c *Consumer) deadLetter(ctx context.Context, channel string, d amqp.Delivery, poison *PoisonError) {
	msg := c.cfg.Topology.DeadLetterMessage(channel, d.MessageId, d.Body, notification.DeadLetter{
		Reason: poison.Reason, Source: notification.SourceConsumer, LastError: poison.Error(), FailedAt: time.Now(),
	})
	if err := c.dlq.Publish(ctx, msg); err != nil {
		c.log.Error("dead-lettering poison message failed; requeueing", zap.String("message_id", d.MessageId), zap.String("channel", channel), zap.Error(err))
		_ = d.Nack(false, true)
		return
	}
	c.log.Warn("poison message dead-lettered", zap.String("message_id", d.MessageId), zap.String("channel", channel), zap.String("reason", poison.Reason), zap.Error(poison.Err))
	_ = d.Ack(false)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
