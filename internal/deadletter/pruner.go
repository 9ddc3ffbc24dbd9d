package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/periodic"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
)

// Pruner takes out of the dead-letter queues the messages that
// dead_letter_retirements retires: those of a notification whose generation
// is below the row's below_generation. Every worker runs one; it steps the
// passes over the channels' DLQs (see sweeper), each step under the
// advisory lock when it gets it at once (a transaction's lock, see
// withLock): one worker steps, the others find the lock taken and leave the
// pass to it, or step it further when it stopped. It also finishes a purge
// the API began and left running.
//
// Removal is at-least-once: a pass visits the messages the DLQ held when it
// began, after its retirements were loaded, then deletes those rows, by
// key; rows written meanwhile wait for the next pass. A pass cut short (an
// error, shutdown, a crash) is resumed from its last step by the next round
// of any worker; a step cut short is visited again, which removes only what
// is still there.
type Pruner struct {
	// Interval is how often a worker looks for retirements and passes (one
	// cheap query). Default 2s.
	Interval time.Duration

	pool  *pgxpool.Pool
	sweep *sweeper
	log   *zap.Logger
}

// NewPruner returns a Pruner sweeping through queues (a publisher of its
// own: a step holds it while it visits); retired, when set, counts the
// messages removed, by channel.
func NewPruner(pool *pgxpool.Pool, queues *queue.Publisher, retired *prometheus.CounterVec, log *zap.Logger) *Pruner {
	return &Pruner{pool: pool, log: log,
		sweep: &sweeper{pool: pool, queues: queues, retired: retired, log: log}}
}

// defaultInterval is the Interval of a Pruner that sets none.
const defaultInterval = 2 * time.Second

// Run prunes every Interval until ctx ends.
func (p *Pruner) Run(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	periodic.Run(ctx, interval, p.log, "pruning dead letters", func(ctx context.Context) error {
		_, err := p.round(ctx)
		return err
	})
	return nil
}

// PruneOnce runs one round and returns how many messages it removed.
func (p *Pruner) PruneOnce(ctx context.Context) (int, error) {
	return p.round(ctx)
}

// round steps the pass of every channel that has one or has retirements
// until none is left, or another visit holds the lock; it returns the
// messages removed.
func (p *Pruner) round(ctx context.Context) (removed int, err error) {
	// The cheap look every worker takes every interval: mostly both tables
	// are empty and nothing else happens.
	rows, err := p.pool.Query(ctx, `
		SELECT channel FROM dead_letter_sweeps
		UNION SELECT channel FROM (SELECT channel FROM dead_letter_retirements ORDER BY created_at LIMIT $1) r
		ORDER BY channel`, maxRetirements)
	if err != nil {
		return 0, fmt.Errorf("looking for dead-letter retirements: %w", err)
	}
	channels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("looking for dead-letter retirements: %w", err)
	}
	var errs []error
	for _, channel := range channels {
		if !notification.ValidChannel(channel) {
			// No DLQ holds its messages: the rows retire nothing.
			if _, err := p.pool.Exec(ctx, `DELETE FROM dead_letter_retirements WHERE channel = $1`, channel); err != nil {
				errs = append(errs, fmt.Errorf("deleting dead-letter retirements of %q: %w", channel, err))
			}
			continue
		}
		n, err := p.drive(ctx, channel)
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// drive steps the channel's passes, one after another, until there is
// nothing left to do or another visit holds the lock.
func (p *Pruner) drive(ctx context.Context, channel string) (removed int, err error) {
	for {
		res, locked, err := p.sweep.step(ctx, channel, false, false)
		removed += res.Removed
		if err != nil || !locked || res.Idle {
			return removed, err
		}
	}
}
