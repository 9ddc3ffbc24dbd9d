package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ReceiptTarget is the attempt a receipt is about, and where its
// notification stands.
type ReceiptTarget struct {
	NotificationID uuid.UUID
	// Attempt is the attempt the receipt reports on; zero when it is about
	// none of the current generation's attempts.
	Attempt int
	Status  Status
	// Latest is the notification's latest begun attempt; AttemptBase the
	// attempts of its generations before the current one.
	Latest, AttemptBase int
	// Recorded: the attempt's answer is recorded, with Outcome; an attempt
	// not recorded yet is in flight when it is Latest (a provider may report
	// before its answer was recorded), lost with its worker otherwise.
	Recorded bool
	Outcome  string
	// Settled: the attempt's receipt was recorded already.
	Settled bool
	// Ambiguous counts the current generation's attempts a receipt naming no
	// message could be about, when more than one: it cannot be applied.
	Ambiguous int
}

// Current reports whether the receipt is about the attempt the
// notification waits on now: its latest, of its current generation, taken
// by the provider (SENT) or still in flight, with no receipt yet, and the
// notification not terminal. Only such a receipt can change anything.
func (t ReceiptTarget) Current() bool {
	return t.Attempt > 0 && t.Attempt == t.Latest && t.Attempt > t.AttemptBase && !t.Settled && !t.Status.Terminal() &&
		(!t.Recorded || t.Outcome == "sent")
}

// receiptTargetQuery reads a notification and one of its attempts ($2; no
// attempt row when there is none of that number). $3 is the provider the
// attempt must have gone to.
const receiptTargetQuery = `
	SELECT n.id, n.status, n.attempts, n.attempt_base, a.attempt IS NOT NULL, COALESCE(a.outcome, ''),
		a.receipt IS NOT NULL, a.attempt IS NULL OR a.provider IS NOT DISTINCT FROM $3
	FROM notifications n LEFT JOIN delivery_attempts a ON a.notification_id = n.id AND a.attempt = $2
	WHERE n.id = $1`

// FindReceiptAttempt finds attempt of notification id for a receipt from
// provider that names it (by our message id, or a callback URL naming
// both). ErrNotFound when there is no such notification, no such attempt
// begun, or the attempt went to another provider.
func FindReceiptAttempt(ctx context.Context, q Querier, provider string, id uuid.UUID, attempt int) (ReceiptTarget, error) {
	t := ReceiptTarget{Attempt: attempt}
	var sameProvider bool
	err := q.QueryRow(ctx, receiptTargetQuery, id, attempt, provider).Scan(&t.NotificationID, &t.Status, &t.Latest, &t.AttemptBase,
		&t.Recorded, &t.Outcome, &t.Settled, &sameProvider)
	if errors.Is(err, pgx.ErrNoRows) {
		return ReceiptTarget{}, ErrNotFound
	}
	if err != nil {
		return ReceiptTarget{}, fmt.Errorf("finding the receipt's attempt: %w", err)
	}
	if !sameProvider || attempt < 1 || attempt > t.Latest {
		return ReceiptTarget{}, ErrNotFound
	}
	return t, nil
}

// FindReceiptMessage finds the attempt whose message provider knows as
// messageID (a Twilio SID, our message id once recorded). ErrNotFound when
// no recorded attempt has it.
func FindReceiptMessage(ctx context.Context, q Querier, provider, messageID string) (ReceiptTarget, error) {
	var id uuid.UUID
	var attempt int
	err := q.QueryRow(ctx, `
		SELECT notification_id, attempt FROM delivery_attempts
		WHERE provider = $1 AND provider_message_id = $2
		ORDER BY attempt DESC LIMIT 1`, provider, SafeText(messageID)).Scan(&id, &attempt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ReceiptTarget{}, ErrNotFound
	}
	if err != nil {
		return ReceiptTarget{}, fmt.Errorf("finding the receipt's message: %w", err)
	}
	return FindReceiptAttempt(ctx, q, provider, id, attempt)
}

// FindUnnamedReceiptTarget finds the attempt a receipt from provider that
// names only its notification (the first receipts' shape: no message id)
// is about: the current generation's one attempt at provider, counting the
// latest attempt while its answer is not recorded (its provider is not
// known yet). With none, Attempt is zero; with more, Ambiguous counts them.
// ErrNotFound when there is no such notification.
func FindUnnamedReceiptTarget(ctx context.Context, q Querier, provider string, id uuid.UUID) (ReceiptTarget, error) {
	var t ReceiptTarget
	var atProvider []int32
	var latestRecorded bool
	err := q.QueryRow(ctx, `
		SELECT n.id, n.status, n.attempts, n.attempt_base,
			COALESCE(array_agg(a.attempt ORDER BY a.attempt) FILTER (WHERE a.provider = $2 AND a.attempt > n.attempt_base), '{}'),
			COALESCE(bool_or(a.attempt = n.attempts), false)
		FROM notifications n LEFT JOIN delivery_attempts a ON a.notification_id = n.id
		WHERE n.id = $1 GROUP BY n.id`, id, provider).Scan(&t.NotificationID, &t.Status, &t.Latest, &t.AttemptBase, &atProvider, &latestRecorded)
	if errors.Is(err, pgx.ErrNoRows) {
		return ReceiptTarget{}, ErrNotFound
	}
	if err != nil {
		return ReceiptTarget{}, fmt.Errorf("finding the receipt's attempt: %w", err)
	}
	candidates := len(atProvider)
	only := 0
	if candidates == 1 {
		only = int(atProvider[0])
	}
	if !latestRecorded && t.Latest > t.AttemptBase {
		candidates++
		only = t.Latest
	}
	switch {
	case candidates == 0:
		return t, nil
	case candidates > 1:
		t.Ambiguous = candidates
		return t, nil
	}
	return FindReceiptAttempt(ctx, q, provider, id, only)
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
