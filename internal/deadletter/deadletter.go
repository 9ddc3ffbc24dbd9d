// Package deadletter keeps the dead-letter queues in step with the
// notifications: a notification that is retried or erased must leave its
// channel's DLQ, and its retry or erasure records that in
// dead_letter_retirements, in the same transaction. The worker's Pruner
// takes those messages out and then the rows. Queues is the API's view of
// the DLQs: it lists them and purges their poison messages.
//
// Every visit of a DLQ (each step of a pass, the API's peeks) holds one
// PostgreSQL advisory lock, so no two overlap: a message that one visit
// holds unacked is hidden from another, and a pass that missed one would
// drop its retirement with the message still in the queue. A pass (of the
// pruner, or a purge) is made of bounded steps and recorded in
// dead_letter_sweeps, so it ends however deep the queue, and any worker or
// API resumes it where it stopped.
package deadletter

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/queue"
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
// the API (httpapi.DeadLetterQueues), each call (or step of a purge) under
// the lock the pruner steps under; a call waits for a step in progress,
// within its context.
type Queues struct {
	// PurgeFor bounds how long a purge steps before it leaves the rest of
	// its pass to the workers' pruners. Default 4s.
	PurgeFor time.Duration

	pool   *pgxpool.Pool
	queues *queue.Publisher
	sweep  *sweeper
}

// NewQueues returns Queues reading the DLQs through queues.
func NewQueues(pool *pgxpool.Pool, queues *queue.Publisher) *Queues {
	return &Queues{pool: pool, queues: queues,
		sweep: &sweeper{pool: pool, queues: queues, log: zap.NewNop()}}
}

// Peek returns the first limit messages of the channel's DLQ and how many
// it holds (queue.Publisher.Peek). During a pass, the head of the queue is
// the messages the pass has still to visit.
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

// defaultPurgeFor is the PurgeFor of Queues that set none.
const defaultPurgeFor = 4 * time.Second

// purgeStepMargin is the time a purge keeps before its context's deadline
// when it begins a step.
const purgeStepMargin = 2 * time.Second

// PurgePoison removes the channel's poison messages: it makes the channel's
// pass a purge (beginning one when there is none) and steps it for at most
// PurgeFor. It returns how many poison messages the pass removed and how
// many messages it has still to visit: 0 when it is done; otherwise the
// workers' pruners finish it, and another purge steps it further.
func (q *Queues) PurgePoison(ctx context.Context, channel string) (purged, remaining int, err error) {
	budget := q.PurgeFor
	if budget <= 0 {
		budget = defaultPurgeFor
	}
	until := time.Now().Add(budget)
	if d, ok := ctx.Deadline(); ok && d.Add(-purgeStepMargin).Before(until) {
		until = d.Add(-purgeStepMargin)
	}
	for first := true; ; first = false {
		// The first step always runs: it makes the pass a purge.
		if !first && time.Now().After(until) {
			return purged, remaining, nil
		}
		res, _, err := q.sweep.step(ctx, channel, true, true)
		if err != nil {
			return 0, 0, err
		}
		purged, remaining = int(res.Purged), int(res.Remaining)
		if res.Done || res.Idle {
			return purged, 0, nil
		}
	}
}
