package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/queue"
)

// maxRetirements bounds the retirements one pass takes out; the rest wait
// for the next pass, which begins as this one ends.
const maxRetirements = 100000

// A step is one call of the publisher, bounded by its call timeout, and
// holds the lock as long: how many messages it visits is adapted to take
// about stepTarget, from minStep to maxStep.
const (
	stepTarget = 500 * time.Millisecond
	minStep    = 50
	maxStep    = 5000
)

// sweeper runs the steps of the passes over the dead-letter queues, for the
// worker's Pruner and the API's Queues alike: a pass is in
// dead_letter_sweeps, so any of them resumes one that another began.
//
// A pass over a channel's DLQ begins with the number of messages it holds
// (read after the retirements it takes out were loaded, so every message
// they retire is among them) and visits that many at the head of the queue
// in bounded steps (queue.Publisher.SweepStep), each under the lock and
// writing how many are left in the same transaction; it removes the
// messages its retirements retire and, when it is a purge, the poison
// messages, and moves every other one to the back. When none is left, it
// deletes its retirements and ends. A step that fails writes nothing: the
// next one visits again what it had visited, which removes only what is
// still there.
type sweeper struct {
	pool    *pgxpool.Pool
	queues  *queue.Publisher
	retired *prometheus.CounterVec
	log     *zap.Logger

	// mu guards the retirements of the pass last stepped, by its key, and
	// the size of the next step.
	mu        sync.Mutex
	cachedFor passKey
	cached    map[string]int
	stepSize  int
}

// nextStep is how many messages the next step may visit.
func (s *sweeper) nextStep() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stepSize == 0 {
		s.stepSize = 500
	}
	return s.stepSize
}

// stepped adapts the size of the steps to one of n messages that took
// took, or failed: halved after a slow or failed step, doubled after a
// quick one that visited as many as it could.
func (s *sweeper) stepped(n, visited int, took time.Duration, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case failed || took > stepTarget:
		s.stepSize = max(minStep, s.stepSize/2)
	case visited == n && took < stepTarget/2:
		s.stepSize = min(maxStep, s.stepSize*2)
	}
}

// passKey names one pass.
type passKey struct {
	channel string
	started int64 // µs since the epoch, as PostgreSQL keeps it
}

// pass is a row of dead_letter_sweeps.
type pass struct {
	Channel   string    `db:"channel"`
	Remaining int64     `db:"remaining"`
	Purge     bool      `db:"purge"`
	Purged    int64     `db:"purged"`
	Retired   int64     `db:"retired"`
	StartedAt time.Time `db:"started_at"`
}

// stepResult is what a step did and where its pass stands.
type stepResult struct {
	// Idle: there was no pass and none to begin (no retirements, no purge).
	Idle bool
	// Done: the pass ended with this step (or had nothing to visit).
	Done bool
	// Remaining is what the pass has still to visit; Purged and Retired
	// what it removed so far (all of it, when Done).
	Remaining, Purged, Retired int64
	// Removed is what this step removed.
	Removed int
}

// errNoPass is a step's finding that there is nothing to do.
var errNoPass = errors.New("no dead-letter pass")

// step runs one step of the channel's pass, beginning one when there is
// none and the channel has retirements (or purge is asked); purge makes the
// pass a purge from now on, visiting what the queue holds now. With wait
// false it returns locked false at once when another visit holds the lock.
func (s *sweeper) step(ctx context.Context, channel string, wait, purge bool) (res stepResult, locked bool, err error) {
	var retired int
	locked, err = withLock(ctx, s.pool, wait, func(tx pgx.Tx) error {
		p, err := s.load(ctx, tx, channel, purge)
		if errors.Is(err, errNoPass) {
			res.Idle = true
			return nil
		}
		if err != nil {
			return err
		}
		below, err := s.retirements(ctx, tx, p)
		if err != nil {
			return err
		}
		var purged int
		if p.Remaining > 0 {
			size := s.nextStep()
			n := int(min(p.Remaining, int64(size)))
			var stepPurged, stepRetired int
			began := time.Now()
			st, err := s.queues.SweepStep(ctx, channel, n, func(d queue.DeadLetterInfo) bool {
				switch {
				case d.Poison:
					if p.Purge {
						stepPurged++
					}
					return p.Purge
				case d.Generation < below[d.NotificationID]:
					stepRetired++
					return true
				}
				return false
			})
			s.stepped(n, st.Visited, time.Since(began), err != nil)
			if err != nil {
				return fmt.Errorf("sweeping the dead letters of %s: %w", channel, err)
			}
			purged, retired, res.Removed = stepPurged, stepRetired, st.Removed
			if st.Emptied {
				p.Remaining = 0 // it visited all the queue holds
			} else {
				p.Remaining -= int64(st.Visited)
			}
		}
		p.Purged += int64(purged)
		p.Retired += int64(retired)
		res.Remaining, res.Purged, res.Retired = p.Remaining, p.Purged, p.Retired
		if p.Remaining > 0 {
			_, err = tx.Exec(ctx, `
				UPDATE dead_letter_sweeps SET remaining = $2, purge = $3, purged = $4, retired = $5, updated_at = now()
				WHERE channel = $1`, channel, p.Remaining, p.Purge, p.Purged, p.Retired)
			if err != nil {
				return fmt.Errorf("recording the dead-letter pass of %s: %w", channel, err)
			}
			return nil
		}
		res.Done = true
		return s.finish(ctx, tx, p)
	})
	if retired > 0 && s.retired != nil {
		// Removed by the broker whatever became of the transaction.
		s.retired.WithLabelValues(channel).Add(float64(retired))
	}
	return res, locked, err
}

// load returns the channel's pass, beginning one (stored) when there is
// none and there is something to do, and making it a purge when asked.
func (s *sweeper) load(ctx context.Context, tx pgx.Tx, channel string, purge bool) (pass, error) {
	rows, err := tx.Query(ctx, `
		SELECT channel, remaining, purge, purged, retired, started_at FROM dead_letter_sweeps WHERE channel = $1`, channel)
	if err != nil {
		return pass{}, fmt.Errorf("loading the dead-letter pass of %s: %w", channel, err)
	}
	p, err := pgx.CollectOneRow(rows, pgx.RowToStructByName[pass])
	switch {
	case err == nil:
		if purge && !p.Purge {
			// A purge visits every message in the queue now: those the pass
			// has still to visit are at the head, and it goes on past them.
			depth, err := s.queues.DeadLetterDepth(ctx, channel)
			if err != nil {
				return pass{}, err
			}
			p.Purge, p.Remaining = true, max(p.Remaining, int64(depth))
		}
		return p, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return pass{}, fmt.Errorf("loading the dead-letter pass of %s: %w", channel, err)
	}
	// The retirements are committed before the queue is counted, and the
	// retry or erasure that wrote one dropped the dead-letter record not yet
	// relayed (or waited for the relay holding it): every message a row
	// retires is among those counted.
	rows, err = tx.Query(ctx, `
		SELECT notification_id, below_generation FROM dead_letter_retirements
		WHERE channel = $1 ORDER BY created_at LIMIT $2`, channel, maxRetirements)
	if err != nil {
		return pass{}, fmt.Errorf("loading dead-letter retirements: %w", err)
	}
	ids, below := []uuid.UUID{}, []int32{}
	var id uuid.UUID
	var b int32
	if _, err := pgx.ForEachRow(rows, []any{&id, &b}, func() error {
		ids, below = append(ids, id), append(below, b)
		return nil
	}); err != nil {
		return pass{}, fmt.Errorf("loading dead-letter retirements: %w", err)
	}
	if len(ids) == 0 && !purge {
		return pass{}, errNoPass
	}
	depth, err := s.queues.DeadLetterDepth(ctx, channel)
	if err != nil {
		return pass{}, err
	}
	p = pass{Channel: channel, Remaining: int64(depth), Purge: purge}
	err = tx.QueryRow(ctx, `
		INSERT INTO dead_letter_sweeps (channel, remaining, purge, retire_ids, retire_below)
		VALUES ($1, $2, $3, $4, $5) RETURNING started_at`, channel, p.Remaining, purge, ids, below).Scan(&p.StartedAt)
	if err != nil {
		return pass{}, fmt.Errorf("beginning a dead-letter pass of %s: %w", channel, err)
	}
	return p, nil
}

// retirements returns the generation below which the pass removes each
// notification's messages, read once a pass.
func (s *sweeper) retirements(ctx context.Context, tx pgx.Tx, p pass) (map[string]int, error) {
	key := passKey{channel: p.Channel, started: p.StartedAt.UnixMicro()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cachedFor == key {
		return s.cached, nil
	}
	var (
		ids   []uuid.UUID
		below []int32
	)
	err := tx.QueryRow(ctx, `SELECT retire_ids, retire_below FROM dead_letter_sweeps WHERE channel = $1`, p.Channel).Scan(&ids, &below)
	if err != nil {
		return nil, fmt.Errorf("loading the retirements of the dead-letter pass of %s: %w", p.Channel, err)
	}
	m := make(map[string]int, len(ids))
	for i, id := range ids {
		m[id.String()] = max(m[id.String()], int(below[i]))
	}
	s.cachedFor, s.cached = key, m
	return m, nil
}

// finish ends the pass: its retirements are done with, by key (a row
// written since it began stays for the next pass).
func (s *sweeper) finish(ctx context.Context, tx pgx.Tx, p pass) error {
	_, err := tx.Exec(ctx, `
		WITH done AS (DELETE FROM dead_letter_sweeps WHERE channel = $1 RETURNING retire_ids, retire_below)
		DELETE FROM dead_letter_retirements d
		USING done, unnest(done.retire_ids, done.retire_below) AS r(notification_id, below_generation)
		WHERE d.notification_id = r.notification_id AND d.below_generation = r.below_generation`, p.Channel)
	if err != nil {
		return fmt.Errorf("ending the dead-letter pass of %s: %w", p.Channel, err)
	}
	if p.Retired > 0 {
		s.log.Info("retired dead letters of retried or erased notifications", zap.String("channel", p.Channel),
			zap.Int64("removed", p.Retired), zap.Duration("took", time.Since(p.StartedAt)))
	}
	return nil
}
