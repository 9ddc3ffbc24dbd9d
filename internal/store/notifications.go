package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"dispatch-engine/internal/notification"
)

// Status re-exports the lifecycle type for callers of this package.
type Status = notification.Status

// Notification is one row of the notifications table.
type Notification struct {
	ID                 uuid.UUID       `db:"id"`
	BatchID            *uuid.UUID      `db:"batch_id"`
	Channel            string          `db:"channel"`
	Priority           string          `db:"priority"`
	Recipient          string          `db:"recipient"`
	Subject            *string         `db:"subject"`
	Content            string          `db:"content"`
	Metadata           json.RawMessage `db:"metadata"`
	IdempotencyKey     *string         `db:"idempotency_key"`
	RequestFingerprint *string         `db:"request_fingerprint"`
	Status             Status          `db:"status"`
	Attempts           int             `db:"attempts"`
	LastError          *string         `db:"last_error"`
	FailureReason      *string         `db:"failure_reason"`
	NextAttemptAt      *time.Time      `db:"next_attempt_at"`
	ScheduledAt        *time.Time      `db:"scheduled_at"`
	ExpiresAt          *time.Time      `db:"expires_at"`
	CreatedAt          time.Time       `db:"created_at"`
	UpdatedAt          time.Time       `db:"updated_at"`
	DeliveredAt        *time.Time      `db:"delivered_at"`
}

const notificationColumns = `id, batch_id, channel, priority, recipient, subject, content, metadata,
	idempotency_key, request_fingerprint, status, attempts, last_error, failure_reason,
	next_attempt_at, scheduled_at, expires_at, created_at, updated_at, delivered_at`

// nonTerminal is the SQL list of statuses a notification can still leave.
const nonTerminal = `('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING')`

func scanNotification(row pgx.CollectableRow) (Notification, error) {
	return pgx.RowToStructByName[Notification](row)
}

// NewNotification is what a client asked for, validated.
type NewNotification struct {
	ID                 uuid.UUID
	Channel            string
	Priority           string
	Recipient          string
	Subject            *string
	Content            string
	Metadata           json.RawMessage
	IdempotencyKey     *string
	RequestFingerprint *string
	ScheduledAt        *time.Time
	ExpiresAt          *time.Time
}

// CreateNotification inserts the notification and its outbox row in one
// statement, hence one transaction: a notification never exists without the
// outbox entry that hands it to the broker. A taken idempotency key is ErrConflict.
func CreateNotification(ctx context.Context, q Querier, n NewNotification) (Notification, error) {
	rows, err := q.Query(ctx, `
		WITH n AS (
			INSERT INTO notifications (id, channel, priority, recipient, subject, content, metadata,
				idempotency_key, request_fingerprint, scheduled_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			RETURNING `+notificationColumns+`
		), o AS (
			INSERT INTO outbox (notification_id, channel, priority)
			SELECT id, channel, priority FROM n
		)
		SELECT `+notificationColumns+` FROM n`,
		n.ID, n.Channel, n.Priority, n.Recipient, n.Subject, n.Content, nullJSON(n.Metadata),
		n.IdempotencyKey, n.RequestFingerprint, n.ScheduledAt, n.ExpiresAt)
	if err != nil {
		return Notification{}, fmt.Errorf("inserting notification: %w", err)
	}
	created, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if isUniqueViolation(err) {
		return Notification{}, fmt.Errorf("inserting notification: %w", ErrConflict)
	}
	if err != nil {
		return Notification{}, fmt.Errorf("inserting notification: %w", err)
	}
	return created, nil
}

// GetNotification loads one notification; ErrNotFound when there is none.
func GetNotification(ctx context.Context, q Querier, id uuid.UUID) (Notification, error) {
	rows, err := q.Query(ctx, `SELECT `+notificationColumns+` FROM notifications WHERE id = $1`, id)
	if err != nil {
		return Notification{}, fmt.Errorf("loading notification: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, ErrNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("loading notification: %w", err)
	}
	return n, nil
}

// GetStatus loads only a notification's status; ErrNotFound when there is none.
func GetStatus(ctx context.Context, q Querier, id uuid.UUID) (Status, error) {
	var s Status
	err := q.QueryRow(ctx, `SELECT status FROM notifications WHERE id = $1`, id).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading notification status: %w", err)
	}
	return s, nil
}

// MarkQueued moves notifications the relay has published from ACCEPTED to
// QUEUED; rows already further along are left alone.
func MarkQueued(ctx context.Context, q Querier, ids []uuid.UUID) error {
	_, err := q.Exec(ctx, `
		UPDATE notifications SET status = 'QUEUED', updated_at = now()
		WHERE id = ANY($1) AND status = 'ACCEPTED'`, ids)
	if err != nil {
		return fmt.Errorf("marking notifications queued: %w", err)
	}
	return nil
}

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

func nullJSON(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return raw
}
