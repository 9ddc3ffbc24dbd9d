package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// Pacing is what paces a notification on its person's side (Recipients
// II): the quiet hours that apply to it (its profile's, else its tenant's
// default) in Timezone, and its category's criticality, throttle and
// digest. A field is nil when it does not apply.
type Pacing struct {
	QuietHours *pacing.QuietHours
	Timezone   string
	Critical   bool
	Throttle   *pacing.Throttle
	Digest     *pacing.Digest
}

// PacingOf reads what paces n, in one statement of primary-key probes:
// quiet hours only for a notification naming a profile (one naming an
// address has no timezone to keep them in), the category's rules only for
// a notification that has one.
func PacingOf(ctx context.Context, q Querier, n Notification) (Pacing, error) {
	var (
		p                      Pacing
		profileHours, defaults *pacing.QuietHours
		timezone               *string
	)
	err := q.QueryRow(ctx, `
		SELECT r.quiet_hours, r.timezone, t.quiet_hours,
			COALESCE(c.critical, false), c.throttle, c.digest
		FROM tenants t
		LEFT JOIN recipients r ON $2::text IS NOT NULL AND r.tenant_id = t.id AND r.id = $2
		LEFT JOIN categories c ON $3::text IS NOT NULL AND c.tenant_id = t.id AND c.name = $3
		WHERE t.id = $1`, n.TenantID, n.RecipientID, n.Category).
		Scan(&profileHours, &timezone, &defaults, &p.Critical, &p.Throttle, &p.Digest)
	if errors.Is(err, pgx.ErrNoRows) {
		return Pacing{}, nil
	}
	if err != nil {
		return Pacing{}, fmt.Errorf("reading the notification's pacing: %w", err)
	}
	if n.RecipientID != nil {
		p.QuietHours = profileHours
		if p.QuietHours == nil {
			p.QuietHours = defaults
		}
		if timezone != nil {
			p.Timezone = *timezone
		}
	}
	return p, nil
}

// RecipientKey is whom a throttle or a digest counts n for: its profile,
// or its address on its channel when it names none. An address is kept as
// its SHA-256, so the throttle's and the digests' rows never hold one (an
// erasure need not find them).
func RecipientKey(n Notification) string {
	if n.RecipientID != nil {
		return "profile:" + *n.RecipientID
	}
	sum := sha256.Sum256([]byte(string(n.Channel) + ":" + n.Recipient))
	return "address:" + hex.EncodeToString(sum[:])
}

// Hold takes back the attempt begun on a notification of generation gen
// (any when nil) that must wait past its turn: it is SCHEDULED until until,
// deferred by by, with the attempts made before attempt; nothing was sent.
// holdUntil, when set, is kept as the end of an ordering wait (the first
// one set stands). It reports whether the row changed (one terminal
// meanwhile, or of another generation, is left alone).
func Hold(ctx context.Context, q Querier, id uuid.UUID, gen *int, attempt int, until time.Time, by string, holdUntil *time.Time) (bool, error) {
	tag, err := q.Exec(ctx, `
		UPDATE notifications SET status = 'SCHEDULED', scheduled_at = $3, deferred_by = $4,
			attempts = LEAST(attempts, $5 - 1), next_attempt_at = NULL, updated_at = now(),
			ordering_hold_until = COALESCE(ordering_hold_until, $6)
		WHERE id = $1 AND status = 'PROCESSING' AND ($2::int IS NULL OR generation = $2)`,
		id, gen, until, by, attempt, holdUntil)
	if err != nil {
		return false, fmt.Errorf("holding notification: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// lockKey takes a transaction-scoped advisory lock on key: the throttle's
// and the digest's read-then-write run one at a time per key, across every
// worker, and the lock goes with the transaction (a crash releases it).
func lockKey(ctx context.Context, tx pgx.Tx, key string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key)
	return err
}

// TakeThrottleSlot takes a slot of the tenant's category throttle t for
// recipient (RecipientKey) for notification id: at most t.Limit slots in
// any t.Per. A notification that holds one already (a retry) keeps it. ok
// is false when none is free; next is then when one frees.
//
// The count and the insert run under an advisory lock on (tenant,
// category, recipient), so concurrent attempts on any worker take slots
// one at a time: a race exceeds nothing, and the one that loses waits.
func TakeThrottleSlot(ctx context.Context, db TxStarter, tenantID uuid.UUID, category, recipient string, id uuid.UUID, t pacing.Throttle) (ok bool, next time.Time, err error) {
	per := time.Duration(t.Per)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := lockKey(ctx, tx, "throttle/"+tenantID.String()+"/"+category+"/"+recipient); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH gone AS (
				DELETE FROM throttle_slots WHERE tenant_id = $1 AND category = $2 AND recipient_key = $3
					AND taken_at <= now() - $4::bigint * interval '1 millisecond' AND notification_id <> $5
			)
			SELECT notification_id = $5, taken_at, now() FROM throttle_slots
			WHERE tenant_id = $1 AND category = $2 AND recipient_key = $3 AND taken_at > now() - $4::bigint * interval '1 millisecond'
			ORDER BY taken_at`, tenantID, category, recipient, per.Milliseconds(), id)
		if err != nil {
			return err
		}
		type slot struct {
			mine bool
			at   time.Time
			now  time.Time
		}
		slots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slot, error) {
			var s slot
			return s, r.Scan(&s.mine, &s.at, &s.now)
		})
		if err != nil {
			return err
		}
		for _, s := range slots {
			if s.mine {
				ok = true
				return nil
			}
		}
		if len(slots) >= t.Limit {
			next = slots[len(slots)-t.Limit].at.Add(per)
			return nil
		}
		ok = true
		_, err = tx.Exec(ctx, `
			INSERT INTO throttle_slots (tenant_id, category, recipient_key, notification_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant_id, category, recipient_key, notification_id) DO UPDATE SET taken_at = now()`,
			tenantID, category, recipient, id)
		return err
	})
	if err != nil {
		return false, time.Time{}, fmt.Errorf("taking a throttle slot: %w", err)
	}
	return ok, next, nil
}

// Predecessor is the notification accepted just before n with its
// ordering key, and its status; ok is false when there is none.
func Predecessor(ctx context.Context, q Querier, n Notification) (id uuid.UUID, status Status, ok bool, err error) {
	if n.OrderingKey == nil {
		return uuid.UUID{}, "", false, nil
	}
	pos := 0
	if n.OrderingPos != nil {
		pos = *n.OrderingPos
	}
	err = q.QueryRow(ctx, `
		SELECT id, status FROM notifications
		WHERE tenant_id = $1 AND ordering_key = $2 AND (created_at, ordering_pos, id) < ($3, $4, $5)
		ORDER BY created_at DESC, ordering_pos DESC, id DESC LIMIT 1`,
		n.TenantID, *n.OrderingKey, n.CreatedAt, pos, n.ID).Scan(&id, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.UUID{}, "", false, nil
	}
	if err != nil {
		return uuid.UUID{}, "", false, fmt.Errorf("finding the notification before in its ordering key: %w", err)
	}
	return id, status, true, nil
}

// Successor is the notification accepted just after the one with id in its
// tenant's ordering key, if it is not terminal: the one that may be
// waiting for it.
func Successor(ctx context.Context, q Querier, id uuid.UUID) (uuid.UUID, bool, error) {
	var next uuid.UUID
	err := q.QueryRow(ctx, `
		SELECT s.id FROM notifications n
		JOIN LATERAL (
			SELECT s.id, s.status FROM notifications s
			WHERE s.tenant_id = n.tenant_id AND s.ordering_key = n.ordering_key
				AND (s.created_at, s.ordering_pos, s.id) > (n.created_at, n.ordering_pos, n.id)
			ORDER BY s.created_at, s.ordering_pos, s.id LIMIT 1
		) s ON true
		WHERE n.id = $1 AND n.ordering_key IS NOT NULL AND s.status IN `+nonTerminal, id).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.UUID{}, false, nil
	}
	if err != nil {
		return uuid.UUID{}, false, fmt.Errorf("finding the notification after in its ordering key: %w", err)
	}
	return next, true, nil
}

// BreakOrdering records that the notification goes before the one ahead
// of it in its ordering key ended: it waited its longest.
func BreakOrdering(ctx context.Context, q Querier, id uuid.UUID) error {
	if _, err := q.Exec(ctx, `UPDATE notifications SET ordering_broken = true WHERE id = $1`, id); err != nil {
		return fmt.Errorf("recording the broken ordering: %w", err)
	}
	return nil
}
