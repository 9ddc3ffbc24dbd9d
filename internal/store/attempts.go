package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// BeginAttempt marks a non-terminal notification PROCESSING for attempt and
// returns it. A terminal notification is returned unchanged with ok false.
func BeginAttempt(ctx context.Context, q Querier, id uuid.UUID, attempt int) (n Notification, ok bool, err error) {
	rows, err := q.Query(ctx, `
		UPDATE notifications
		SET status = 'PROCESSING', attempts = GREATEST(attempts, $2), next_attempt_at = NULL, updated_at = now()
		WHERE id = $1 AND status IN `+nonTerminal+`
		RETURNING `+notificationColumns, id, attempt)
	if err != nil {
		return Notification{}, false, fmt.Errorf("beginning attempt: %w", err)
	}
	n, err = pgx.CollectExactlyOneRow(rows, scanNotification)
	if errors.Is(err, pgx.ErrNoRows) {
		n, err = GetNotification(ctx, q, id)
		return n, false, err
	}
	if err != nil {
		return Notification{}, false, fmt.Errorf("beginning attempt: %w", err)
	}
	return n, true, nil
}

// Attempt is one row of delivery_attempts.
type Attempt struct {
	NotificationID  uuid.UUID `db:"notification_id"`
	Attempt         int       `db:"attempt"`
	StartedAt       time.Time `db:"started_at"`
	DurationMS      int       `db:"duration_ms"`
	StatusCode      *int      `db:"status_code"`
	Outcome         string    `db:"outcome"`
	Error           *string   `db:"error"`
	ResponseExcerpt *string   `db:"response_excerpt"`
}

// Transition is the status change that closes an attempt.
type Transition struct {
	Status        Status
	LastError     *string
	FailureReason *string
	NextAttemptAt *time.Time
}

// FinishAttempt records an attempt and applies the status change it caused,
// in one statement. The change applies only while the notification is not
// terminal, so a late or repeated attempt never moves it backwards; the
// attempt row is kept either way, as it happened.
func FinishAttempt(ctx context.Context, q Querier, a Attempt, t Transition) error {
	_, err := q.Exec(ctx, `
		WITH a AS (
			INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms,
				status_code, outcome, error, response_excerpt)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (notification_id, attempt) DO NOTHING
		)
		UPDATE notifications
		SET status = $9, last_error = COALESCE($10, last_error), failure_reason = $11,
			next_attempt_at = $12, updated_at = now(),
			delivered_at = CASE WHEN $9 = 'DELIVERED' THEN now() ELSE delivered_at END
		WHERE id = $1 AND status IN `+nonTerminal,
		a.NotificationID, a.Attempt, a.StartedAt, a.DurationMS, a.StatusCode, a.Outcome, a.Error,
		a.ResponseExcerpt, t.Status, t.LastError, t.FailureReason, t.NextAttemptAt)
	if err != nil {
		return fmt.Errorf("recording attempt %d: %w", a.Attempt, err)
	}
	return nil
}

// MarkFailed moves a non-terminal notification to FAILED with reason.
func MarkFailed(ctx context.Context, q Querier, id uuid.UUID, reason, lastError string) error {
	_, err := q.Exec(ctx, `
		UPDATE notifications
		SET status = 'FAILED', failure_reason = $2, last_error = COALESCE(NULLIF($3, ''), last_error),
			next_attempt_at = NULL, updated_at = now()
		WHERE id = $1 AND status IN `+nonTerminal, id, reason, lastError)
	if err != nil {
		return fmt.Errorf("marking notification failed: %w", err)
	}
	return nil
}

// ListAttempts returns a notification's attempts in order.
func ListAttempts(ctx context.Context, q Querier, id uuid.UUID) ([]Attempt, error) {
	rows, err := q.Query(ctx, `
		SELECT notification_id, attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt
		FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	attempts, err := pgx.CollectRows(rows, pgx.RowToStructByName[Attempt])
	if err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	return attempts, nil
}
