package deadletter

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/periodic"
	"dispatch-engine/internal/queue"
)

// maxRetirements bounds the retirements one round loads; the rest wait for
// the next round, which comes at once.
const maxRetirements = 10000

// Pruner takes out of the dead-letter queues the messages that
// dead_letter_retirements retires: those of a notification whose generation
// is below the row's below_generation. Every worker runs one; a round that
// finds rows sweeps only when it gets the advisory lock at once (a
// transaction's lock, see withLock): one worker sweeps, the others find the
// lock taken and leave the rows to it.
//
// Removal is at-least-once: a round loads the rows, then sweeps each
// channel's DLQ as it is at that moment, then deletes the rows it loaded,
// by key; rows written meanwhile wait for the next round. A round cut short
// (an error, shutdown, a crash) deletes no row of a channel it did not
// finish, and the next round sweeps that channel again, which removes only
// what is still there.
type Pruner struct {
	// Interval is how often a worker looks for retirements (one cheap
	// query). Default 2s.
	Interval time.Duration

	pool    *pgxpool.Pool
	queues  *queue.Publisher
	retired *prometheus.CounterVec
	log     *zap.Logger
}

// NewPruner returns a Pruner sweeping through queues (a publisher of its
// own: a sweep holds it for as long as it takes); retired, when set, counts
// the messages removed, by channel.
func NewPruner(pool *pgxpool.Pool, queues *queue.Publisher, retired *prometheus.CounterVec, log *zap.Logger) *Pruner {
	return &Pruner{pool: pool, queues: queues, retired: retired, log: log}
}

// defaultInterval is the Interval of a Pruner that sets none.
const defaultInterval = 2 * time.Second

// Run prunes every Interval until ctx ends, and again at once after a round
// that loaded as many rows as it may.
func (p *Pruner) Run(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	periodic.Run(ctx, interval, p.log, "pruning dead letters", func(ctx context.Context) error {
		for {
			_, loaded, err := p.round(ctx)
			if err != nil || loaded < maxRetirements {
				return err
			}
		}
	})
	return nil
}

// PruneOnce runs one round and returns how many messages it removed.
func (p *Pruner) PruneOnce(ctx context.Context) (int, error) {
	removed, _, err := p.round(ctx)
	return removed, err
}

// retirement is one row of dead_letter_retirements.
type retirement struct {
	Channel         string    `db:"channel"`
	NotificationID  uuid.UUID `db:"notification_id"`
	BelowGeneration int       `db:"below_generation"`
}

// round loads the retirements and, when there are any and no other visit
// holds the lock, sweeps their channels and deletes the rows of each
// channel it finished. It returns the messages removed and the rows it
// loaded (0 when another worker is sweeping: those rows are its).
func (p *Pruner) round(ctx context.Context) (removed, loaded int, err error) {
	// The cheap look every worker takes every interval: mostly the table
	// is empty and nothing else happens.
	rows, err := p.pool.Query(ctx, `
		SELECT channel, notification_id, below_generation FROM dead_letter_retirements
		ORDER BY created_at LIMIT $1`, maxRetirements)
	if err != nil {
		return 0, 0, fmt.Errorf("loading dead-letter retirements: %w", err)
	}
	retirements, err := pgx.CollectRows(rows, pgx.RowToStructByName[retirement])
	if err != nil {
		return 0, 0, fmt.Errorf("loading dead-letter retirements: %w", err)
	}
	if len(retirements) == 0 {
		return 0, 0, nil
	}
	// The rows were committed before the sweep counts its queue, and the
	// retry or erasure that wrote one dropped the dead-letter record not
	// yet relayed (or waited for the relay holding it): every message a
	// row retires is in the queue by then.
	byChannel := map[string][]retirement{}
	for _, r := range retirements {
		byChannel[r.Channel] = append(byChannel[r.Channel], r)
	}
	var sweepErr error
	locked, err := withLock(ctx, p.pool, false, func(tx pgx.Tx) error {
		var done []retirement
		for _, channel := range slices.Sorted(maps.Keys(byChannel)) {
			if notification.ValidChannel(channel) {
				n, err := p.sweep(ctx, channel, byChannel[channel])
				removed += n
				if err != nil {
					sweepErr = err
					break
				}
			} // else no DLQ holds its messages: the row retires nothing
			done = append(done, byChannel[channel]...)
		}
		// The channels swept are done with, even when a later one failed.
		return deleteRetirements(ctx, tx, done)
	})
	switch {
	case err != nil:
		return removed, len(retirements), err
	case !locked:
		return 0, 0, nil
	}
	return removed, len(retirements), sweepErr
}

// sweep removes from the channel's DLQ the messages rs retire.
func (p *Pruner) sweep(ctx context.Context, channel string, rs []retirement) (int, error) {
	below := make(map[string]int, len(rs))
	for _, r := range rs {
		id := r.NotificationID.String()
		below[id] = max(below[id], r.BelowGeneration)
	}
	removed, err := p.queues.Sweep(ctx, channel, func(d queue.DeadLetterInfo) bool {
		b, ok := below[d.NotificationID]
		return ok && !d.Poison && d.Generation < b
	})
	if removed > 0 {
		if p.retired != nil {
			p.retired.WithLabelValues(channel).Add(float64(removed))
		}
		p.log.Info("retired dead letters of retried or erased notifications", zap.String("channel", channel),
			zap.Int("removed", removed), zap.Int("notifications", len(below)))
	}
	if err != nil {
		return removed, fmt.Errorf("sweeping the dead letters of %s: %w", channel, err)
	}
	return removed, nil
}

// deleteRetirements deletes rs, by key: a row written since they were
// loaded stays.
func deleteRetirements(ctx context.Context, tx pgx.Tx, rs []retirement) error {
	if len(rs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(rs))
	below := make([]int32, len(rs))
	for i, r := range rs {
		ids[i], below[i] = r.NotificationID, int32(r.BelowGeneration)
	}
	_, err := tx.Exec(ctx, `
		DELETE FROM dead_letter_retirements d
		USING unnest($1::uuid[], $2::integer[]) AS r(notification_id, below_generation)
		WHERE d.notification_id = r.notification_id AND d.below_generation = r.below_generation`, ids, below)
	if err != nil {
		return fmt.Errorf("deleting dead-letter retirements: %w", err)
	}
	return nil
}
