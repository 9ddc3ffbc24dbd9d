package outbox

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// wakeGap is the least time between two wake-ups: bursts of accepted
// notifications share one NOTIFY.
const wakeGap = 2 * time.Millisecond

// Waker wakes the relays (LISTEN outbox) after notifications were committed.
// It sends NOTIFY in a transaction of its own, coalescing many Pokes into
// one, so the accepting transactions never queue on Postgres's notify lock. A
// wake-up lost to a crash costs at most the relay's poll interval.
type Waker struct {
	pool *pgxpool.Pool
	log  *zap.Logger
	poke chan struct{}
}

// NewWaker returns a Waker; Run must be running for Pokes to have effect.
func NewWaker(pool *pgxpool.Pool, log *zap.Logger) *Waker {
	return &Waker{pool: pool, log: log, poke: make(chan struct{}, 1)}
}

// Poke asks for a wake-up; it never blocks.
func (w *Waker) Poke() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Run sends the wake-ups until ctx ends.
func (w *Waker) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.poke:
		}
		nctx, cancel := context.WithTimeout(ctx, time.Second)
		if _, err := w.pool.Exec(nctx, `SELECT pg_notify('outbox', '')`); err != nil && ctx.Err() == nil {
			w.log.Debug("outbox wake-up not sent; the relay's polling covers it", zap.Error(err))
		}
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wakeGap):
		}
	}
}
