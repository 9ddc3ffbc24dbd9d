package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// NotCancellableError is a cancel request for a notification that was
// already delivered or failed. It is an ErrConflict.
type NotCancellableError struct {
	Status Status
}

func (e *NotCancellableError) Error() string {
	return fmt.Sprintf("notification is %s and can no longer be cancelled", e.Status)
}

// Unwrap makes a NotCancellableError an ErrConflict.
func (e *NotCancellableError) Unwrap() error { return ErrConflict }

// RequestCancel records a cancel request on a non-terminal notification in
// one conditional update: it sets cancel_requested_at (keeping the first
// request's time), and a notification whose workflow has not started
// delivering (ACCEPTED or QUEUED) becomes CANCELLED at once. The flag is
// what makes the cancel win: no delivery attempt starts once it is set,
// whether or not the workflow ever gets the cancel signal.
//
// It returns the notification and requested true. A notification already
// CANCELLED is returned unchanged with requested false; a DELIVERED or
// FAILED one is a *NotCancellableError; an unknown one ErrNotFound.
func RequestCancel(ctx context.Context, q Querier, id uuid.UUID) (n Notification, requested bool, err error) {
	rows, err := q.Query(ctx, `
		UPDATE notifications
		SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
			status = CASE WHEN status IN ('ACCEPTED', 'QUEUED') THEN 'CANCELLED' ELSE status END,
			next_attempt_at = CASE WHEN status IN ('ACCEPTED', 'QUEUED') THEN NULL ELSE next_attempt_at END,
			updated_at = now()
		WHERE id = $1 AND status IN `+nonTerminal+`
		RETURNING `+notificationColumns, id)
	if err != nil {
		return Notification{}, false, fmt.Errorf("requesting cancel: %w", err)
	}
	n, err = pgx.CollectExactlyOneRow(rows, scanNotification)
	if err == nil {
		return n, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, false, fmt.Errorf("requesting cancel: %w", err)
	}
	// Terminal or missing; a terminal status never changes, so this read
	// agrees with the update that did not match.
	n, err = GetNotification(ctx, q, id)
	if err != nil {
		return Notification{}, false, err
	}
	if n.Status == notification.StatusCancelled {
		return n, false, nil
	}
	return Notification{}, false, &NotCancellableError{Status: n.Status}
}
