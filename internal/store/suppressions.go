package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Why an address is suppressed: the schema's list.
const (
	// SuppressManual is an entry a tenant made itself.
	SuppressManual = "manual"
	// SuppressRefused: an SMTP server refused the address at RCPT (5.1.x).
	SuppressRefused = "refused"
	// SuppressBounced, SuppressComplained: a provider's receipt said so.
	SuppressBounced    = "bounced"
	SuppressComplained = "complained"
	// SuppressUnsubscribed: the number's owner unsubscribed (Twilio 21610).
	SuppressUnsubscribed = "unsubscribed"
	// SuppressInvalid: the address cannot take the channel (Twilio 21211, 21614).
	SuppressInvalid = "invalid"
	// SuppressUnregistered: a push token is dead (FCM UNREGISTERED, APNs 410).
	SuppressUnregistered = "unregistered"
)

// SuppressionReasons lists every reason, in the schema's order.
var SuppressionReasons = []string{SuppressManual, SuppressRefused, SuppressBounced, SuppressComplained,
	SuppressUnsubscribed, SuppressInvalid, SuppressUnregistered}

// ValidSuppressionReason reports whether r is one of SuppressionReasons.
func ValidSuppressionReason(r string) bool { return slices.Contains(SuppressionReasons, r) }

// Suppression is an address the tenant never sends to again on a channel,
// with why, the notification whose provider said so (none for a manual
// entry) and when it was added.
type Suppression struct {
	Channel        string     `db:"channel"`
	Address        string     `db:"address"`
	Reason         string     `db:"reason"`
	Note           *string    `db:"note"`
	NotificationID *uuid.UUID `db:"notification_id"`
	CreatedAt      time.Time  `db:"created_at"`
}

const suppressionColumns = `channel, address, reason, note, notification_id, created_at`

// SuppressionKeyset is a position in the suppressions' listing order
// (created_at DESC, channel, address): the last row of a page.
type SuppressionKeyset struct {
	CreatedAt time.Time
	Channel   string
	Address   string
}

// SuppressionFilter selects a tenant's suppressions; a nil field does not
// filter.
type SuppressionFilter struct {
	Channel *string
	Address *string
	Reason  *string
	// After is the last row of the previous page; nil for the first page.
	After *SuppressionKeyset
	// Limit bounds the page; it must be positive.
	Limit int
}

// ListSuppressions returns up to f.Limit of the tenant's suppressions that
// f matches, newest first, after f.After, along
// suppressions_tenant_created_idx.
func ListSuppressions(ctx context.Context, q Querier, tenantID uuid.UUID, f SuppressionFilter) ([]Suppression, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("listing suppressions: limit %d must be positive", f.Limit)
	}
	args := []any{tenantID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"tenant_id = $1"}
	if f.Channel != nil {
		where = append(where, "channel = "+arg(*f.Channel))
	}
	if f.Address != nil {
		where = append(where, "address = "+arg(*f.Address))
	}
	if f.Reason != nil {
		where = append(where, "reason = "+arg(*f.Reason))
	}
	if k := f.After; k != nil {
		t := arg(k.CreatedAt)
		where = append(where, "(created_at < "+t+" OR (created_at = "+t+" AND (channel, address) > ("+
			arg(k.Channel)+", "+arg(k.Address)+")))")
	}
	rows, err := q.Query(ctx, `SELECT `+suppressionColumns+` FROM suppressions WHERE `+strings.Join(where, " AND ")+
		` ORDER BY created_at DESC, channel, address LIMIT `+arg(f.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("listing suppressions: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Suppression])
	if err != nil {
		return nil, fmt.Errorf("listing suppressions: %w", err)
	}
	return list, nil
}

// GetSuppression loads the tenant's suppression of address on channel;
// ErrNotFound when there is none.
func GetSuppression(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address string) (Suppression, error) {
	rows, err := q.Query(ctx, `SELECT `+suppressionColumns+` FROM suppressions
		WHERE tenant_id = $1 AND channel = $2 AND address = $3`, tenantID, channel, address)
	if err != nil {
		return Suppression{}, fmt.Errorf("loading suppression: %w", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Suppression])
	if errors.Is(err, pgx.ErrNoRows) {
		return Suppression{}, ErrNotFound
	}
	if err != nil {
		return Suppression{}, fmt.Errorf("loading suppression: %w", err)
	}
	return s, nil
}

// PutSuppression suppresses address on channel by the tenant's own hand: a
// new entry is created with reason ("" is manual) and note; an existing one
// takes the reason and note given, and keeps when it was added and the
// notification it came from. created reports a new entry.
func PutSuppression(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address, reason string, note *string) (s Suppression, created bool, err error) {
	if reason == "" {
		reason = SuppressManual
	}
	rows, err := q.Query(ctx, `
		INSERT INTO suppressions (tenant_id, channel, address, reason, note) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant_id, channel, address) DO UPDATE SET reason = EXCLUDED.reason, note = EXCLUDED.note
		RETURNING `+suppressionColumns+`, xmax = 0 AS created`, tenantID, channel, address, reason, note)
	if err != nil {
		return Suppression{}, false, fmt.Errorf("storing suppression: %w", err)
	}
	type row struct {
		Suppression
		Created bool `db:"created"`
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if err != nil {
		return Suppression{}, false, fmt.Errorf("storing suppression: %w", err)
	}
	return r.Suppression, r.Created, nil
}

// DeleteSuppression lifts the tenant's suppression of address on channel:
// the next notification to it is sent. ErrNotFound when there is none.
func DeleteSuppression(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address string) error {
	tag, err := q.Exec(ctx, `DELETE FROM suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3`,
		tenantID, channel, address)
	if err != nil {
		return fmt.Errorf("deleting suppression: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Suppress records that a provider said address is dead or refused on
// channel (reason), from notificationID's attempt: the delivery side's
// automatic entry. An address already suppressed keeps its first entry
// (reason, source and time), so repeated refusals change nothing.
func Suppress(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address, reason string, notificationID *uuid.UUID) error {
	if !ValidSuppressionReason(reason) {
		return fmt.Errorf("suppressing an address: unknown reason %q", reason)
	}
	_, err := q.Exec(ctx, `
		INSERT INTO suppressions (tenant_id, channel, address, reason, notification_id) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (tenant_id, channel, address) DO NOTHING`, tenantID, channel, address, reason, notificationID)
	if err != nil {
		return fmt.Errorf("suppressing an address: %w", err)
	}
	return nil
}
