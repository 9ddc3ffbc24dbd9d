// Package deadletter keeps the dead-letter queues in step with the
// notifications: a notification that is retried or erased must leave its
// channel's DLQ, and its retry or erasure records that in
// dead_letter_retirements, in the same transaction. The worker's Pruner
// takes those messages out and then the rows. Queues is the API's view of
// the DLQs: it lists them and purges their poison messages.
//
// Every visit of a DLQ (the pruner's sweeps, the API's peeks and purges)
// holds one PostgreSQL advisory lock, so no two overlap: a message that one
// visit holds unacked is hidden from another, and a sweep that missed one
// would drop its retirement with the message still in the queue.
package deadletter

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"dispatch-engine/internal/queue"
)

// lockKey is the advisory lock every visit of a dead-letter queue holds.
const lockKey = 0x646561646c657472 // "deadletr"

// withLock runs fn in a transaction holding the lock, and commits when fn
// succeeds; with wait false it returns false at once when another holds it.
//
// The lock is a transaction's (pg_advisory_xact_lock): a commit, a rollback
// or a connection that breaks releases it, so it can never stay behind on a
// pooled connection, as a session lock can when its unlock is cut short,
// which would stop every sweep for good. The transaction stays open across
// the broker's calls; it writes nothing until fn's end and at READ
// COMMITTED holds no snapshot between statements, so it costs a connection
// and holds back nothing.
func withLock(ctx context.Context, pool *pgxpool.Pool, wait bool, fn func(pgx.Tx) error) (bool, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("beginning the dead-letter lock's transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	locked := true
	if wait {
		_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockKey))
	} else {
		err = tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(lockKey)).Scan(&locked)
	}
	if err != nil {
		return false, fmt.Errorf("taking the dead-letter lock: %w", err)
	}
	if !locked {
		return false, nil
	}
	if err := fn(tx); err != nil {
		return true, err
	}
	if err := tx.Commit(ctx); err != nil {
		return true, fmt.Errorf("committing the dead-letter lock's transaction: %w", err)
	}
	return true, nil
}

// Queues lists the dead-letter queues and purges their poison messages for
// the API (httpapi.DeadLetterQueues), each call under the lock the pruner
// sweeps under; a call waits for a sweep in progress, within its context.
type Queues struct {
	pool   *pgxpool.Pool
	queues *queue.Publisher
}

// NewQueues returns Queues reading the DLQs through queues.
func NewQueues(pool *pgxpool.Pool, queues *queue.Publisher) *Queues {
	return &Queues{pool: pool, queues: queues}
}

// Peek returns the first limit messages of the channel's DLQ and how many
// it holds (queue.Publisher.Peek).
func (q *Queues) Peek(ctx context.Context, channel string, limit int) ([]queue.DeadLetterInfo, int, error) {
	var (
		msgs  []queue.DeadLetterInfo
		total int
	)
	_, err := withLock(ctx, q.pool, true, func(pgx.Tx) error {
		var err error
		msgs, total, err = q.queues.Peek(ctx, channel, limit)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return msgs, total, nil
}

// PurgePoison removes the channel's poison messages and returns how many
// (queue.Publisher.PurgePoison).
func (q *Queues) PurgePoison(ctx context.Context, channel string) (int, error) {
	var purged int
	_, err := withLock(ctx, q.pool, true, func(pgx.Tx) error {
		var err error
		purged, err = q.queues.PurgePoison(ctx, channel)
		return err
	})
	if err != nil {
		return 0, err
	}
	return purged, nil
}
