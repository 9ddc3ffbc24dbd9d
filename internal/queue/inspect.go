package queue

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Depths returns the ready messages of each channel's queue and dead-letter
// queue (passive declares: nothing is created).
func (p *Publisher) Depths(ctx context.Context, channels []notification.Channel) (map[string]int, map[string]int, error) {
	// Filled by the call and read only once do returned nil: a call that
	// timed out may still be running.
	main, dead := make(map[string]int, len(channels)), make(map[string]int, len(channels))
	err := p.do(ctx, func(_ context.Context, conn *amqp.Connection, _ *amqp.Channel) error {
		// A passive declare of a missing queue closes the channel it runs
		// on, so inspection gets a channel of its own.
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening rabbitmq channel: %w", err)
		}
		defer func() { _ = ch.Close() }()
		for _, channel := range channels {
			c := string(channel)
			q, err := ch.QueueDeclarePassive(p.topology.Queue(c), true, false, false, false, nil)
			if err != nil {
				return fmt.Errorf("inspecting %s: %w", p.topology.Queue(c), err)
			}
			main[c] = q.Messages
			d, err := ch.QueueDeclarePassive(p.topology.DeadLetterQueue(c), true, false, false, false, nil)
			if err != nil {
				return fmt.Errorf("inspecting %s: %w", p.topology.DeadLetterQueue(c), err)
			}
			dead[c] = d.Messages
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return main, dead, nil
}
