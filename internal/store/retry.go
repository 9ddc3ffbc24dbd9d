package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// NotRetryableError is a retry of a notification that is not FAILED or
// CANCELLED (delivered, or still in flight), or was erased. It is an
// ErrConflict.
type NotRetryableError struct {
	Status Status
	Erased bool
}

func (e *NotRetryableError) Error() string {
	if e.Erased {
		return "the notification was erased; there is nothing left to send"
	}
	return fmt.Sprintf("notification is %s; only a FAILED, CANCELLED or SKIPPED notification can be retried", e.Status)
}

// Unwrap makes a NotRetryableError an ErrConflict.
func (e *NotRetryableError) Unwrap() error { return ErrConflict }

// retryStatement retries the FAILED, CANCELLED or SKIPPED notifications among $1 in
// one statement: each becomes ACCEPTED in its next generation, with a fresh
// attempt budget after the attempts made (attempt_base), and gets an outbox
// row, which starts its new workflow run. A FAILED one's dead-letter record
// not yet relayed is dropped, and its dead-letter messages are retired (the
// worker's sweeper takes them out of the DLQ). Erased notifications are
// left alone. It answers the retried rows.
const retryStatement = `
	WITH old AS (
		SELECT id AS old_id, status AS old_status FROM notifications
		WHERE id = ANY($1) AND status IN ('FAILED', 'CANCELLED', 'SKIPPED') AND erased_at IS NULL
		FOR UPDATE
	), u AS (
		UPDATE notifications
		SET status = 'ACCEPTED', generation = generation + 1, attempt_base = attempts, failure_reason = NULL,
			skip_reason = NULL, channel = COALESCE(channels[1], channel),
			cancel_requested_at = NULL, next_attempt_at = NULL, delivered_at = NULL, receipt = NULL, updated_at = now()
		FROM old WHERE id = old_id
		RETURNING ` + notificationColumns + `, old_status
	), o AS (
		INSERT INTO outbox (notification_id, channel, priority) SELECT id, channel, priority FROM u
	), d AS (
		DELETE FROM outbox WHERE dead_letter IS NOT NULL AND notification_id IN (SELECT id FROM u WHERE old_status = 'FAILED')
	), r AS (
		INSERT INTO dead_letter_retirements (notification_id, channel, below_generation)
		SELECT id, channel, generation FROM u WHERE old_status = 'FAILED'
		ON CONFLICT DO NOTHING
	)`

// RetryNotification retries one FAILED, CANCELLED or SKIPPED notification (see
// retryStatement) and returns it ACCEPTED. A key, when given, makes it
// idempotent: the key's first retry is answered again (replayed true, with
// the notification as it is now) and nothing is written; a key used for
// another notification's retry is ErrConflict. Any other notification is a
// *NotRetryableError, an unknown one ErrNotFound.
func RetryNotification(ctx context.Context, q Querier, id uuid.UUID, key *string) (n Notification, replayed bool, err error) {
	if key != nil {
		if n, replayed, err := retryReplay(ctx, q, id, *key); err != nil || replayed {
			return n, replayed, err
		}
	}
	rows, err := q.Query(ctx, retryStatement+`, k AS (
			INSERT INTO notification_retries (idempotency_key, notification_id, generation, tenant_id)
			SELECT $2, id, generation, tenant_id FROM u WHERE $2::text IS NOT NULL
		)
		SELECT `+notificationColumns+` FROM u`, []uuid.UUID{id}, key)
	if err != nil {
		return Notification{}, false, fmt.Errorf("retrying notification: %w", err)
	}
	n, err = pgx.CollectExactlyOneRow(rows, scanNotification)
	switch {
	case err == nil:
		return n, false, nil
	case isUniqueViolation(err) && key != nil:
		// The same key, at the same moment: the other request retried it.
		return retryReplayOrConflict(ctx, q, id, *key)
	case !errors.Is(err, pgx.ErrNoRows):
		return Notification{}, false, fmt.Errorf("retrying notification: %w", err)
	}
	if key != nil {
		// Retried by a concurrent request with this key, which committed first?
		if n, replayed, err := retryReplay(ctx, q, id, *key); err != nil || replayed {
			return n, replayed, err
		}
	}
	n, err = GetNotification(ctx, q, id)
	if err != nil {
		return Notification{}, false, err
	}
	return Notification{}, false, &NotRetryableError{Status: n.Status, Erased: n.ErasedAt != nil}
}

// retryReplay answers the notification when key retried it before
// (replayed), ErrConflict when key retried another one of its tenant's, and
// nothing when key is new to the tenant.
func retryReplay(ctx context.Context, q Querier, id uuid.UUID, key string) (Notification, bool, error) {
	var owner uuid.UUID
	err := q.QueryRow(ctx, `SELECT r.notification_id FROM notification_retries r
		WHERE r.idempotency_key = $1 AND r.tenant_id = (SELECT tenant_id FROM notifications WHERE id = $2)`, key, id).Scan(&owner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Notification{}, false, nil
	case err != nil:
		return Notification{}, false, fmt.Errorf("loading the retry of idempotency key: %w", err)
	case owner != id:
		return Notification{}, false, fmt.Errorf("idempotency key used to retry notification %s: %w", owner, ErrConflict)
	}
	n, err := GetNotification(ctx, q, id)
	return n, err == nil, err
}

func retryReplayOrConflict(ctx context.Context, q Querier, id uuid.UUID, key string) (Notification, bool, error) {
	n, replayed, err := retryReplay(ctx, q, id, key)
	if err == nil && !replayed {
		err = fmt.Errorf("retrying notification: idempotency key taken: %w", ErrConflict)
	}
	return n, replayed, err
}

// retryable reports whether a notification in status s may be retried.
func retryable(s Status) bool {
	return s == notification.StatusFailed || s == notification.StatusCancelled || s == notification.StatusSkipped
}
