// Package retention deletes what is kept no longer (RETENTION_PERIOD):
// terminal notifications (DELIVERED, FAILED, CANCELLED) created more than
// the period ago, with their delivery attempts and retry keys (both go by
// ON DELETE CASCADE) and any outbox row left of them (a dead-letter record
// not yet relayed), and the batches they leave empty once the batch too is
// older than the period. Non-terminal notifications stay, however old:
// their workflows still need them. A FAILED notification's dead-letter
// messages leave its channel's DLQ as an erased one's do: the statement
// that deletes it writes its dead_letter_retirements row (that table has
// no foreign key; the dead-letter pruner acts on its rows and removes
// them).
//
// A round deletes in small batches, one statement and one transaction each,
// so no transaction holds many row locks or runs long. Each status is paged
// on its own over notifications_status_created_idx (status, created_at
// DESC, id DESC), newest first from the cutoff down, each batch starting
// below the last one's (created_at, id): an index range scan that stops
// after the batch, never walking again over the index entries a batch
// before it deleted (dead until vacuum). The rows are taken FOR UPDATE
// SKIP LOCKED; a status is done when a batch deletes fewer than the batch
// size. Rows locked by someone else, or becoming terminal below the cursor
// meanwhile, wait for the next round.
//
// One worker deletes at a time: each batch's transaction first takes a
// transaction-level advisory lock (pg_try_advisory_xact_lock), and a round
// that finds it taken stops there (Result.Skipped): another worker is
// deleting. The lock is a transaction's, not a session's, so a commit, a
// rollback or a broken connection always releases it: it can never stay
// behind on a pooled connection (as a session lock can when its unlock is
// cut short, which would stop retention on every worker), and no
// connection is held between batches. Between two batches of one round
// another worker may take the lock; the two rounds then hand over, never
// overlap, and nothing is deleted twice: each batch is one atomic statement
// over rows it locked.
package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/periodic"
)

// lockKey is the advisory lock each batch's transaction takes.
const lockKey = 0x726574656e74696f // "retentio"

// The values of the deleted counter's table label.
const (
	TableNotifications    = "notifications"
	TableDeliveryAttempts = "delivery_attempts"
	TableOutbox           = "outbox"
	TableBatches          = "batches"
)

// terminal are the statuses a notification is deleted in, in the order a
// round goes through them.
var terminal = []notification.Status{notification.StatusDelivered, notification.StatusFailed, notification.StatusCancelled, notification.StatusSkipped}

// Defaults of a Config field left zero (Period has none: zero is off).
const (
	DefaultBatchSize = 500
	DefaultInterval  = time.Minute
)

// Config configures a Purger.
type Config struct {
	// Period is how long a terminal notification is kept after its
	// creation (RETENTION_PERIOD). Zero or negative: retention is off.
	Period time.Duration
	// BatchSize is the most notifications one statement deletes
	// (RETENTION_BATCH_SIZE). Default 500.
	BatchSize int
	// Interval between rounds. Default one minute.
	Interval time.Duration
}

// Result is what one round did.
type Result struct {
	// Notifications, DeliveryAttempts, Outbox and Batches count the rows
	// deleted from each table. Delivery attempts go by cascade and are
	// counted in the statement's snapshot, before it deletes them.
	Notifications, DeliveryAttempts, Outbox, Batches int64
	// Skipped is set when the round found the lock taken by another
	// worker and stopped there, having done what the counts say.
	Skipped bool
}

func (r *Result) add(o Result) {
	r.Notifications += o.Notifications
	r.DeliveryAttempts += o.DeliveryAttempts
	r.Outbox += o.Outbox
	r.Batches += o.Batches
}

// Purger deletes terminal notifications older than the period.
type Purger struct {
	cfg     Config
	pool    *pgxpool.Pool
	deleted *prometheus.CounterVec
	log     *zap.Logger
	// inBatch, when set (tests), is called with each batch's counts in its
	// transaction, after its statement and before its commit: with the lock
	// held.
	inBatch func(Result)
}

// New returns a Purger; deleted (optional) counts the rows deleted, by
// table (dispatch_retention_deleted_total).
func New(cfg Config, pool *pgxpool.Pool, deleted *prometheus.CounterVec, log *zap.Logger) *Purger {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	p := &Purger{cfg: cfg, pool: pool, deleted: deleted, log: log}
	if p.Enabled() && deleted != nil {
		// Every table's series exists from the start, at 0.
		for _, t := range []string{TableNotifications, TableDeliveryAttempts, TableOutbox, TableBatches} {
			deleted.WithLabelValues(t)
		}
	}
	return p
}

// Enabled reports whether a period is set.
func (p *Purger) Enabled() bool { return p.cfg.Period > 0 }

// Run runs a round every Interval until ctx ends; disabled, it returns at once.
func (p *Purger) Run(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	p.log.Info("retention on: deleting terminal notifications older than the period",
		zap.Duration("period", p.cfg.Period), zap.Int("batch_size", p.cfg.BatchSize), zap.Duration("interval", p.cfg.Interval))
	periodic.Run(ctx, p.cfg.Interval, p.log, "retention round", func(ctx context.Context) error {
		_, err := p.Round(ctx)
		return err
	})
	return nil
}

// Round deletes, batch by batch, every terminal notification created before
// now() - Period (the database's clock, read once at the start) that it can
// lock, and the batches emptied with them; it logs one line when it deleted
// anything. Disabled, it does nothing.
func (p *Purger) Round(ctx context.Context) (res Result, err error) {
	if !p.Enabled() {
		return res, nil
	}
	start := time.Now()
	defer func() {
		if res.Notifications == 0 && res.Batches == 0 {
			return
		}
		fields := []zap.Field{
			zap.Int64("notifications", res.Notifications), zap.Int64("delivery_attempts", res.DeliveryAttempts),
			zap.Int64("outbox", res.Outbox), zap.Int64("batches", res.Batches),
			zap.Duration("duration", time.Since(start)), zap.Duration("period", p.cfg.Period),
		}
		if res.Skipped {
			fields = append(fields, zap.Bool("handed_over", true))
		}
		p.log.Info("retention deleted old notifications", fields...)
	}()
	var cutoff time.Time
	if err := p.pool.QueryRow(ctx, `SELECT now() - $1::interval`, p.cfg.Period).Scan(&cutoff); err != nil {
		return res, fmt.Errorf("reading the retention cutoff: %w", err)
	}
	for _, status := range terminal {
		// The first batch starts at the cutoff.
		after := cursor{CreatedAt: cutoff, ID: uuid.Max}
		for {
			b, next, locked, err := p.batch(ctx, status, cutoff, after)
			if err != nil {
				return res, err
			}
			if !locked {
				res.Skipped = true
				return res, nil
			}
			res.add(b)
			if b.Notifications < int64(p.cfg.BatchSize) || next == nil {
				break
			}
			after = *next
		}
	}
	return res, nil
}

// cursor is where a status's paging stands: the (created_at, id) of the
// last notification a batch took.
type cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// purge is one batch: it locks up to $5 notifications in status $1 created
// before the cutoff $2 and below the cursor ($3, $4), newest first (the
// order of notifications_status_created_idx, so the scan stops after
// them), and deletes them with their outbox rows (outbox has no foreign
// key), and the batches older than the cutoff they leave empty: those with
// no notification left beside the ones this statement deletes. Delivery
// attempts and retry keys go by cascade; the attempts are counted first,
// in the statement's snapshot. A FAILED one's dead-letter messages are
// retired as an erasure retires them (a dead_letter_retirements row the
// pruner acts on; its record not yet relayed is among the outbox rows
// deleted, or the delete waits for the relay publishing it), so the DLQ
// keeps no payload of a notification that is gone. Its throttle slots go
// too, and the digest a digest's message carried. It returns the counts
// and the last row's cursor (NULL when it locked none).
const purge = `
WITH doomed AS (
	SELECT id, created_at FROM notifications
	WHERE status = $1 AND created_at < $2 AND (created_at, id) < ($3, $4)
	ORDER BY created_at DESC, id DESC
	LIMIT $5
	FOR UPDATE SKIP LOCKED
), gone AS (
	DELETE FROM notifications n USING doomed d WHERE n.id = d.id
	RETURNING n.id, n.batch_id, n.channel, n.status, n.generation
), retired AS (
	INSERT INTO dead_letter_retirements (notification_id, channel, below_generation)
	SELECT id, channel, generation + 1 FROM gone WHERE status = 'FAILED'
	ON CONFLICT DO NOTHING
), outbox_gone AS (
	DELETE FROM outbox WHERE notification_id = ANY (ARRAY(SELECT id FROM gone))
	RETURNING 1
), slots_gone AS (
	-- A throttle's slots and a digest (whose message is the notification
	-- with its id) go with their notification.
	DELETE FROM throttle_slots WHERE notification_id = ANY (ARRAY(SELECT id FROM gone))
), digests_gone AS (
	DELETE FROM digests WHERE id = ANY (ARRAY(SELECT id FROM gone))
), batches_gone AS (
	DELETE FROM batches b
	WHERE b.id IN (SELECT batch_id FROM gone) AND b.created_at < $2
		AND NOT EXISTS (SELECT 1 FROM notifications n
			WHERE n.batch_id = b.id AND n.id NOT IN (SELECT id FROM gone))
	RETURNING 1
), last AS (
	SELECT created_at, id FROM doomed ORDER BY created_at, id LIMIT 1
)
SELECT (SELECT count(*) FROM gone),
	(SELECT count(*) FROM delivery_attempts WHERE notification_id IN (SELECT id FROM doomed)),
	(SELECT count(*) FROM outbox_gone),
	(SELECT count(*) FROM batches_gone),
	(SELECT created_at FROM last),
	(SELECT id FROM last)`

// batch runs one batch in its own transaction, holding the lock; locked is
// false when another worker holds it (nothing was done). next is where the
// status's next batch starts.
func (p *Purger) batch(ctx context.Context, status notification.Status, cutoff time.Time, after cursor) (res Result, next *cursor, locked bool, err error) {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return res, nil, false, fmt.Errorf("beginning a retention batch: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(lockKey)).Scan(&locked); err != nil {
		return res, nil, false, fmt.Errorf("taking the retention lock: %w", err)
	}
	if !locked {
		return res, nil, false, nil
	}
	var (
		lastAt *time.Time
		lastID *uuid.UUID
	)
	if err := tx.QueryRow(ctx, purge, string(status), cutoff, after.CreatedAt, after.ID, p.cfg.BatchSize).Scan(
		&res.Notifications, &res.DeliveryAttempts, &res.Outbox, &res.Batches, &lastAt, &lastID); err != nil {
		return Result{}, nil, true, fmt.Errorf("deleting %s notifications older than %s: %w", status, cutoff.Format(time.RFC3339), err)
	}
	if p.inBatch != nil {
		p.inBatch(res)
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, nil, true, fmt.Errorf("committing a retention batch: %w", err)
	}
	if p.deleted != nil {
		p.deleted.WithLabelValues(TableNotifications).Add(float64(res.Notifications))
		p.deleted.WithLabelValues(TableDeliveryAttempts).Add(float64(res.DeliveryAttempts))
		p.deleted.WithLabelValues(TableOutbox).Add(float64(res.Outbox))
		p.deleted.WithLabelValues(TableBatches).Add(float64(res.Batches))
	}
	if lastAt != nil && lastID != nil {
		next = &cursor{CreatedAt: *lastAt, ID: *lastID}
	}
	return res, next, true, nil
}
