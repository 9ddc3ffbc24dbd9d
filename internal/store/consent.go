package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Skip ends a notification of generation gen (any when nil) that an
// attempt began as SKIPPED with reason: the address or the person refused
// it, or no channel had an address. The begun attempt is taken back (the
// notification's attempts are those made before it), nothing is
// dead-lettered. It answers the status the notification ends with: one
// terminal meanwhile keeps its own.
func Skip(ctx context.Context, q Querier, id uuid.UUID, gen *int, attempt int, reason string) (Status, error) {
	var status Status
	err := q.QueryRow(ctx, `
		WITH u AS (
			UPDATE notifications
			SET status = 'SKIPPED', skip_reason = $3, attempts = LEAST(attempts, $2 - 1),
				next_attempt_at = NULL, updated_at = now()
			WHERE id = $1 AND status IN `+nonTerminal+` AND ($4::int IS NULL OR generation = $4)
			RETURNING status
		)
		SELECT status FROM u
		UNION ALL
		SELECT status FROM notifications WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM u)`,
		id, attempt, reason, gen).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("marking notification skipped: %w", err)
	}
	return status, nil
}

// Resolution is where a profile's notification goes: the first of its
// channels, from the one in hand on, that the person has an address for,
// did not opt out of for the notification's category, and whose addresses
// are not all suppressed; or, when none is, why (Refusal).
type Resolution struct {
	Channel string
	// Addresses are the channel's addresses that are not suppressed, in
	// the profile's order: one for sms and email, each token for push.
	Addresses []string
	// Refusal is set when no channel is left: no-address when none of
	// them had an address, else the refusal of the first that had one.
	Refusal string
}

// Found reports whether a channel was found.
func (r Resolution) Found() bool { return r.Refusal == "" }

// ResolveRecipient resolves n, a notification naming a recipient profile,
// to a channel and its addresses, trying its channels from the one in hand
// (from on) or, with after set, from the one after it. A profile that does
// not exist has no address.
func ResolveRecipient(ctx context.Context, q Querier, n Notification, after bool) (Resolution, error) {
	channels := remaining(n, after)
	if len(channels) == 0 || n.RecipientID == nil {
		return Resolution{Refusal: notification.SkipNoAddress}, nil
	}
	rows, err := q.Query(ctx, `
		SELECT ra.channel, ra.address,
			EXISTS (SELECT 1 FROM suppressions s
				WHERE s.tenant_id = ra.tenant_id AND s.channel = ra.channel AND s.address = ra.address) AS suppressed,
			$4::text IS NOT NULL
				AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.tenant_id = ra.tenant_id AND c.name = $4 AND c.critical)
				AND (COALESCE(r.preferences -> $4 ->> ra.channel = 'false', false)
					OR EXISTS (SELECT 1 FROM opt_outs o WHERE o.tenant_id = ra.tenant_id AND o.channel = ra.channel
						AND o.address = ra.address AND o.category = $4)) AS opted_out
		FROM recipient_addresses ra
		JOIN recipients r ON r.tenant_id = ra.tenant_id AND r.id = ra.recipient_id
		WHERE ra.tenant_id = $1 AND ra.recipient_id = $2 AND ra.channel = ANY($3)
		ORDER BY ra.channel, ra.position`, n.TenantID, *n.RecipientID, channels, n.Category)
	if err != nil {
		return Resolution{}, fmt.Errorf("resolving recipient: %w", err)
	}
	type address struct {
		Channel    string `db:"channel"`
		Address    string `db:"address"`
		Suppressed bool   `db:"suppressed"`
		OptedOut   bool   `db:"opted_out"`
	}
	held, err := pgx.CollectRows(rows, pgx.RowToStructByName[address])
	if err != nil {
		return Resolution{}, fmt.Errorf("resolving recipient: %w", err)
	}
	refusal := ""
	for _, ch := range channels {
		var open []string
		why := notification.SkipNoAddress
		for _, a := range held {
			switch {
			case a.Channel != ch:
			case a.OptedOut:
				why = notification.SkipOptedOut
			case a.Suppressed:
				if why == notification.SkipNoAddress {
					why = notification.SkipSuppressed
				}
			default:
				open = append(open, a.Address)
			}
		}
		if len(open) > 0 {
			return Resolution{Channel: ch, Addresses: open}, nil
		}
		if refusal == "" && why != notification.SkipNoAddress {
			refusal = why
		}
	}
	if refusal == "" {
		refusal = notification.SkipNoAddress
	}
	return Resolution{Refusal: refusal}, nil
}

// remaining are n's channels from the one in hand on (after it, with
// after set).
func remaining(n Notification, after bool) []string {
	channels := n.Channels
	if len(channels) == 0 {
		channels = []string{string(n.Channel)}
	}
	i := slices.Index(channels, string(n.Channel))
	if i < 0 {
		i = 0
	}
	if after {
		i++
	}
	if i >= len(channels) {
		return nil
	}
	return channels[i:]
}

// UseChannel points a notification of generation gen at channel and its
// address (recipient, the first of a push channel's tokens): the channel a
// profile's notification resolved to. With takeBack set, that attempt was
// begun but is not made on this channel: the notification's attempts are
// those made before it, and it is QUEUED again, not PROCESSING. It reports whether the row changed (a terminal
// notification, or one of another generation, is left alone).
func UseChannel(ctx context.Context, q Querier, id uuid.UUID, gen *int, channel, recipient string, takeBack int) (bool, error) {
	tag, err := q.Exec(ctx, `
		UPDATE notifications SET channel = $2, recipient = $3, updated_at = now(),
			attempts = CASE WHEN $5 > 0 THEN LEAST(attempts, $5 - 1) ELSE attempts END,
			-- Taken back, the attempt is not begun: a first attempt may begin
			-- again (the fast path's, on the new channel).
			status = CASE WHEN $5 > 0 AND status = 'PROCESSING' THEN 'QUEUED' ELSE status END
		WHERE id = $1 AND status IN `+nonTerminal+` AND erased_at IS NULL AND ($4::int IS NULL OR generation = $4)
			AND (channel <> $2 OR recipient <> $3)`, id, channel, recipient, gen, takeBack)
	if err != nil {
		return false, fmt.Errorf("pointing notification at its channel: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// ConsentRefusal is why a notification of tenantID in category (none when
// "") to address on channel would be refused at its begin: suppressed,
// opted-out, or "" when it would be sent. It runs the begin's own check
// (consentRefusal) on those values.
func ConsentRefusal(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address, category string) (string, error) {
	var why *string
	err := q.QueryRow(ctx, `SELECT `+consentRefusal+`
		FROM (VALUES ($1::uuid, $2::text, $3::text, NULLIF($4::text, ''))) AS notifications (tenant_id, channel, recipient, category)`,
		tenantID, channel, address, category).Scan(&why)
	if err != nil || why == nil {
		return "", err
	}
	return *why, err
}
