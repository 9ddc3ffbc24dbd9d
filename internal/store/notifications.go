package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Status re-exports the lifecycle type for callers of this package.
type Status = notification.Status

// Notification is one row of the notifications table.
type Notification struct {
	ID                 uuid.UUID             `db:"id"`
	BatchID            *uuid.UUID            `db:"batch_id"`
	Channel            notification.Channel  `db:"channel"`
	Priority           notification.Priority `db:"priority"`
	Recipient          string                `db:"recipient"`
	Subject            *string               `db:"subject"`
	Content            string                `db:"content"`
	Metadata           json.RawMessage       `db:"metadata"`
	IdempotencyKey     *string               `db:"idempotency_key"`
	RequestFingerprint *string               `db:"request_fingerprint"`
	Status             Status                `db:"status"`
	Attempts           int                   `db:"attempts"`
	LastError          *string               `db:"last_error"`
	FailureReason      *string               `db:"failure_reason"`
	NextAttemptAt      *time.Time            `db:"next_attempt_at"`
	ScheduledAt        *time.Time            `db:"scheduled_at"`
	ExpiresAt          *time.Time            `db:"expires_at"`
	CreatedAt          time.Time             `db:"created_at"`
	UpdatedAt          time.Time             `db:"updated_at"`
	DeliveredAt        *time.Time            `db:"delivered_at"`
	CancelRequestedAt  *time.Time            `db:"cancel_requested_at"`
	// Provider is the provider of the latest attempt; Receipt what its
	// receipt reported (delivered, failed, none), when one was awaited.
	Provider *string `db:"provider"`
	Receipt  *string `db:"receipt"`
	// Generation counts the notification's explicit retries (each a new run
	// of its workflow); AttemptBase is the attempts made before the current
	// generation, whose budget starts after them. ErasedAt marks a
	// notification whose recipient and content were erased.
	Generation  int        `db:"generation"`
	AttemptBase int        `db:"attempt_base"`
	ErasedAt    *time.Time `db:"erased_at"`
	// TenantID is the tenant that owns the notification.
	TenantID uuid.UUID `db:"tenant_id"`
	// RecipientID names the tenant's recipient profile the notification is
	// for (nil when it names an address); Channels is the ordered list of
	// channels it falls back along (nil for one channel; Channel is the one
	// in hand). Category is the preference it is subject to. SkipReason says
	// why a SKIPPED notification was not sent.
	RecipientID *string  `db:"recipient_id"`
	Channels    []string `db:"channels"`
	Category    *string  `db:"category"`
	SkipReason  *string  `db:"skip_reason"`
	// DeferredBy says why the notification waits, or waited, past its turn
	// (quiet-hours, throttle, digest, ordering); ScheduledAt is then when
	// it goes. OrderingKey orders it after the tenant's notifications with
	// the same key accepted before it (OrderingPos: its place in its
	// batch); it waits for the one before it for at most MaxHoldMS (nil:
	// the worker's ORDERING_MAX_HOLD) from its first wait, until
	// OrderingHoldUntil, and OrderingBroken records that it went before
	// that one ended. DigestKey gathers it into a digest of its category
	// (DigestID); a digest's message is the notification whose id is the
	// digest's, with its DigestItems.
	DeferredBy        *string         `db:"deferred_by"`
	OrderingKey       *string         `db:"ordering_key"`
	OrderingPos       *int            `db:"ordering_pos"`
	MaxHoldMS         *int64          `db:"max_hold_ms"`
	OrderingHoldUntil *time.Time      `db:"ordering_hold_until"`
	OrderingBroken    *bool           `db:"ordering_broken"`
	DigestKey         *string         `db:"digest_key"`
	DigestID          *uuid.UUID      `db:"digest_id"`
	DigestItems       json.RawMessage `db:"digest_items"`
	// Template is the template the content was rendered from at
	// acceptance, TemplateVersion its version, Locale the locale it took,
	// HTML the rendered HTML part of an email; all nil without a template
	// (HTML also when the template has none).
	Template        *string `db:"template"`
	TemplateVersion *int    `db:"template_version"`
	Locale          *string `db:"locale"`
	HTML            *string `db:"html"`
}

const notificationColumns = `id, batch_id, channel, priority, recipient, subject, content, metadata,
	idempotency_key, request_fingerprint, status, attempts, last_error, failure_reason,
	next_attempt_at, scheduled_at, expires_at, created_at, updated_at, delivered_at, cancel_requested_at,
	provider, receipt, generation, attempt_base, erased_at, tenant_id,
	recipient_id, channels, category, skip_reason,
	deferred_by, ordering_key, ordering_pos, max_hold_ms, ordering_hold_until, ordering_broken,
	digest_key, digest_id, digest_items,
	template, template_version, locale, html`

// nonTerminal is the SQL list of statuses a notification can still leave.
const nonTerminal = `('ACCEPTED', 'QUEUED', 'SCHEDULED', 'PROCESSING', 'RETRYING', 'SENT')`

// Payload is the body sent to the provider for attempt of n (and to the
// dead-letter queue).
func (n Notification) Payload(attempt int) notification.Payload {
	return notification.Payload{
		ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority, Recipient: n.Recipient,
		Subject: n.Subject, Content: n.Content, Metadata: n.Metadata, BatchID: n.BatchID,
		CreatedAt: n.CreatedAt, Attempt: attempt, Items: n.DigestItems,
	}
}

func scanNotification(row pgx.CollectableRow) (Notification, error) {
	return pgx.RowToStructByName[Notification](row)
}

// NewNotification is what a client asked for, validated.
type NewNotification struct {
	ID uuid.UUID
	// TenantID owns the notification (and its idempotency key); zero is
	// the default tenant.
	TenantID           uuid.UUID
	Channel            notification.Channel
	Priority           notification.Priority
	Recipient          string
	Subject            *string
	Content            string
	Metadata           json.RawMessage
	IdempotencyKey     *string
	RequestFingerprint *string
	ScheduledAt        *time.Time
	ExpiresAt          *time.Time
	// RecipientID names a recipient profile instead of an address
	// (Recipient is then empty until an attempt resolves it); Channels is
	// the ordered list it falls back along (Channel is its first); Category
	// is the preference it is subject to.
	RecipientID *string
	Channels    []string
	Category    *string
	// OrderingKey orders the notification after the tenant's others with
	// the same key (OrderingPos is its place in a batch, set by the batch's
	// insert); MaxHold, when set, shortens how long it waits for the one
	// before it. DigestKey gathers it into a digest of its category.
	OrderingKey *string
	MaxHold     time.Duration
	DigestKey   *string
	// TraceParent is the W3C traceparent of the request that accepted it,
	// stored with its outbox row so its delivery joins that trace; "" for
	// none (tracing off).
	TraceParent string
	// Template, TemplateVersion, Locale and HTML: the template the content
	// was rendered from, as Notification has them. TemplateData and
	// RequestedLocale are what the request gave to render it (for its
	// fingerprint; not stored).
	Template        *string
	TemplateVersion *int
	Locale          *string
	HTML            *string
	TemplateData    json.RawMessage
	RequestedLocale *string
}

// CreateNotification inserts the notification and its outbox row in one
// statement, hence one transaction: a notification never exists without the
// outbox entry that hands it to the broker. A taken idempotency key is ErrConflict.
func CreateNotification(ctx context.Context, q Querier, n NewNotification) (Notification, error) {
	created, replayed, err := AcceptNotification(ctx, q, n)
	if err != nil {
		return Notification{}, err
	}
	if replayed {
		return Notification{}, fmt.Errorf("inserting notification: idempotency key taken: %w", ErrConflict)
	}
	return created, nil
}

// AcceptNotification stores n like CreateNotification, except that an
// idempotency key already taken by a notification with the same
// RequestFingerprint is not an error: that notification is returned with
// replayed true, and nothing is written. A key taken with another
// fingerprint (or none) is ErrConflict.
//
// It is safe under concurrency: the unique index on idempotency_key makes
// simultaneous inserts of one key wait for the first to commit and then
// insert nothing, so exactly one row (and one outbox row) is created and
// every caller gets it.
func AcceptNotification(ctx context.Context, q Querier, n NewNotification) (stored Notification, replayed bool, err error) {
	rows, err := q.Query(ctx, `
		WITH n AS (
			INSERT INTO notifications (id, channel, priority, recipient, subject, content, metadata,
				idempotency_key, request_fingerprint, scheduled_at, expires_at, tenant_id,
				recipient_id, channels, category, ordering_key, max_hold_ms, digest_key, ordering_pos,
				template, template_version, locale, html)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15, $16, $17, NULLIF($18, 0), $19,
				CASE WHEN $17::text IS NOT NULL THEN 0 END, $20, $21, $22, $23)
			ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING `+notificationColumns+`
		), o AS (
			INSERT INTO outbox (notification_id, channel, priority, traceparent)
			SELECT id, channel, priority, NULLIF($13, '') FROM n
		)
		SELECT `+notificationColumns+` FROM n`,
		n.ID, n.Channel, n.Priority, n.Recipient, n.Subject, n.Content, nullJSON(n.Metadata),
		n.IdempotencyKey, n.RequestFingerprint, n.ScheduledAt, n.ExpiresAt, TenantOrDefault(n.TenantID), n.TraceParent,
		n.RecipientID, n.Channels, n.Category, n.OrderingKey, n.MaxHold.Milliseconds(), n.DigestKey,
		n.Template, n.TemplateVersion, n.Locale, n.HTML)
	if err != nil {
		return Notification{}, false, fmt.Errorf("inserting notification: %w", err)
	}
	created, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return Notification{}, false, fmt.Errorf("inserting notification: %w", err)
	}
	if len(created) == 1 {
		return created[0], false, nil
	}
	if n.IdempotencyKey == nil {
		return Notification{}, false, errors.New("inserting notification: no row inserted")
	}
	// Nothing inserted: the idempotency key is taken. This is a new
	// statement, so it sees the row whose commit the insert waited for.
	existing, err := notificationByKey(ctx, q, TenantOrDefault(n.TenantID), *n.IdempotencyKey)
	if err != nil {
		return Notification{}, false, err
	}
	if !sameFingerprint(existing.RequestFingerprint, n.RequestFingerprint) {
		return Notification{}, false, fmt.Errorf("idempotency key used by notification %s for another request: %w", existing.ID, ErrConflict)
	}
	return existing, true, nil
}

func notificationByKey(ctx context.Context, q Querier, tenant uuid.UUID, key string) (Notification, error) {
	rows, err := q.Query(ctx, `SELECT `+notificationColumns+` FROM notifications WHERE tenant_id = $1 AND idempotency_key = $2`, tenant, key)
	if err != nil {
		return Notification{}, fmt.Errorf("loading notification by idempotency key: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if err != nil {
		return Notification{}, fmt.Errorf("loading notification by idempotency key: %w", err)
	}
	return n, nil
}

// sameFingerprint reports whether two request fingerprints are present and equal.
func sameFingerprint(a, b *string) bool {
	return a != nil && b != nil && *a == *b
}

// GetNotification loads one notification; ErrNotFound when there is none.
func GetNotification(ctx context.Context, q Querier, id uuid.UUID) (Notification, error) {
	return oneNotification(ctx, q, `SELECT `+notificationColumns+` FROM notifications WHERE id = $1`, id)
}

// GetTenantNotification loads one of the tenant's notifications;
// ErrNotFound when there is none, or it is another tenant's.
func GetTenantNotification(ctx context.Context, q Querier, tenant, id uuid.UUID) (Notification, error) {
	return oneNotification(ctx, q, `SELECT `+notificationColumns+` FROM notifications WHERE id = $1 AND tenant_id = $2`,
		id, TenantOrDefault(tenant))
}

func oneNotification(ctx context.Context, q Querier, sql string, args ...any) (Notification, error) {
	rows, err := q.Query(ctx, sql, args...)
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

// GetNotifications loads the notifications with these ids, by id; the ones
// that do not exist are missing from the map.
func GetNotifications(ctx context.Context, q Querier, ids []uuid.UUID) (map[uuid.UUID]Notification, error) {
	rows, err := q.Query(ctx, `SELECT `+notificationColumns+` FROM notifications WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("loading notifications: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return nil, fmt.Errorf("loading notifications: %w", err)
	}
	out := make(map[uuid.UUID]Notification, len(list))
	for _, n := range list {
		out[n.ID] = n
	}
	return out, nil
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

func nullJSON(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return raw
}
