package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ReceiptTarget is the attempt a receipt is about.
type ReceiptTarget struct {
	NotificationID uuid.UUID
	Attempt        int
	Status         Status
}

// FindReceiptTarget finds the latest attempt that went to provider for a
// receipt: by the notification's id when id is set (a webhook's
// webhook-id), else by the provider's message id. ErrNotFound when no
// attempt matches.
func FindReceiptTarget(ctx context.Context, q Querier, provider string, id *uuid.UUID, messageID string) (ReceiptTarget, error) {
	var t ReceiptTarget
	var err error
	if id != nil {
		err = q.QueryRow(ctx, `
			SELECT a.notification_id, a.attempt, n.status FROM delivery_attempts a JOIN notifications n ON n.id = a.notification_id
			WHERE a.notification_id = $1 AND a.provider = $2
			ORDER BY a.attempt DESC LIMIT 1`, *id, provider).Scan(&t.NotificationID, &t.Attempt, &t.Status)
	} else {
		err = q.QueryRow(ctx, `
			SELECT a.notification_id, a.attempt, n.status FROM delivery_attempts a JOIN notifications n ON n.id = a.notification_id
			WHERE a.provider = $1 AND a.provider_message_id = $2
			ORDER BY a.attempt DESC LIMIT 1`, provider, messageID).Scan(&t.NotificationID, &t.Attempt, &t.Status)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ReceiptTarget{}, ErrNotFound
	}
	if err != nil {
		return ReceiptTarget{}, fmt.Errorf("finding the receipt's attempt: %w", err)
	}
	return t, nil
}

// SettleReceipt records a receipt on its attempt and moves a SENT
// notification on: to DELIVERED when the receipt says delivered (or none
// came and none is taken as delivered), to next (PROCESSING, for failover)
// otherwise. A notification no longer SENT (terminal, or on another
// attempt) is not moved: a late or repeated receipt changes nothing but
// its attempt's record, and only the first receipt is recorded there. It
// returns the notification's status after.
func SettleReceipt(ctx context.Context, q Querier, id uuid.UUID, attempt int, receipt, reason string, next Status) (Status, error) {
	var status Status
	err := q.QueryRow(ctx, `
		WITH n AS (
			-- Locked first: an erasure committing meanwhile is seen, and the
			-- receipt's reason (which may name the recipient) is not kept.
			SELECT erased_at IS NOT NULL AS erased FROM notifications WHERE id = $1 FOR UPDATE
		), a AS (
			UPDATE delivery_attempts SET receipt = $3, receipt_at = now(),
				receipt_reason = CASE WHEN n.erased THEN NULL ELSE NULLIF($4, '') END
			FROM n WHERE notification_id = $1 AND attempt = $2 AND receipt IS NULL
		), u AS (
			UPDATE notifications
			SET status = $5, receipt = $3, updated_at = now(),
				last_error = CASE WHEN n.erased THEN NULL WHEN $5 = 'DELIVERED' THEN last_error ELSE COALESCE(NULLIF($4, ''), last_error) END,
				delivered_at = CASE WHEN $5 = 'DELIVERED' THEN now() ELSE delivered_at END
			FROM n WHERE id = $1 AND status = 'SENT' AND attempts = $2
			RETURNING status
		)
		SELECT status FROM u
		UNION ALL
		SELECT status FROM notifications WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM u)`,
		id, attempt, receipt, SafeText(reason), next).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("settling the receipt: %w", err)
	}
	return status, nil
}
