package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Stale is a notification the reconciler should check.
type Stale struct {
	ID        uuid.UUID             `db:"id"`
	Channel   notification.Channel  `db:"channel"`
	Priority  notification.Priority `db:"priority"`
	Status    Status                `db:"status"`
	Attempts  int                   `db:"attempts"`
	UpdatedAt time.Time             `db:"updated_at"`
	// Generation is the notification's; its workflow's run of an earlier
	// generation is not the one that should be delivering it.
	Generation int `db:"generation"`
}

// StaleCursor is where a reconciler's sweep stands: the (updated_at, id) of
// the last notification it looked at. The zero value starts at the oldest.
type StaleCursor struct {
	UpdatedAt time.Time
	ID        uuid.UUID
}

// ListStale returns up to limit non-terminal notifications past from (in
// (updated_at, id) order) that have no outbox row and have not changed for
// after, past any scheduled or next-attempt time: the ones that may have
// fallen off their path. Paging on with the last one's cursor, a sweep
// reaches every such notification, however many of the oldest are only
// waiting (a running workflow) and stay stale.
func ListStale(ctx context.Context, q Querier, after time.Duration, limit int, from StaleCursor) ([]Stale, error) {
	rows, err := q.Query(ctx, `
		SELECT n.id, n.channel, n.priority, n.status, n.attempts, n.updated_at, n.generation FROM notifications n
		WHERE n.status IN `+nonTerminal+`
			AND n.updated_at < now() - $1::interval
			AND (n.updated_at, n.id) > ($3, $4)
			AND (n.next_attempt_at IS NULL OR n.next_attempt_at < now() - $1::interval)
			AND (n.scheduled_at IS NULL OR n.scheduled_at < now() - $1::interval)
			AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.notification_id = n.id)
		ORDER BY n.updated_at, n.id
		LIMIT $2`, after, limit, from.UpdatedAt, from.ID)
	if err != nil {
		return nil, fmt.Errorf("listing stale notifications: %w", err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowToStructByName[Stale])
	if err != nil {
		return nil, fmt.Errorf("listing stale notifications: %w", err)
	}
	return stale, nil
}

// Cursor is where a sweep stands after s.
func (s Stale) Cursor() StaleCursor { return StaleCursor{UpdatedAt: s.UpdatedAt, ID: s.ID} }

// Requeue puts a non-terminal notification back on its path: a new outbox
// row (the relay publishes it, the consumer starts its workflow), and
// updated_at refreshed so the next scan leaves it alone meanwhile. It
// reports false when the notification became terminal.
func Requeue(ctx context.Context, q Querier, id uuid.UUID) (bool, error) {
	tag, err := q.Exec(ctx, `
		WITH n AS (
			UPDATE notifications SET updated_at = now()
			WHERE id = $1 AND status IN `+nonTerminal+`
			RETURNING id, channel, priority
		)
		INSERT INTO outbox (notification_id, channel, priority) SELECT id, channel, priority FROM n`, id)
	if err != nil {
		return false, fmt.Errorf("requeueing notification: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}
