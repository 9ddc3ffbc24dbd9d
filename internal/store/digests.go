package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// Digest is one digest of a tenant's category to one recipient: the
// notifications with one digestKey gathered from OpenedAt until ClosesAt
// (or MaxItems), sent as one message, the notification whose id is ID,
// once FlushedAt is set. Items counts its members (at the flush, the ones
// that were not cancelled).
type Digest struct {
	ID           uuid.UUID  `db:"id"`
	TenantID     uuid.UUID  `db:"tenant_id"`
	Category     string     `db:"category"`
	RecipientKey string     `db:"recipient_key"`
	DigestKey    string     `db:"digest_key"`
	OpenedAt     time.Time  `db:"opened_at"`
	ClosesAt     time.Time  `db:"closes_at"`
	MaxItems     int        `db:"max_items"`
	Items        int        `db:"items"`
	FlushedAt    *time.Time `db:"flushed_at"`
}

const digestColumns = `id, tenant_id, category, recipient_key, digest_key, opened_at, closes_at, max_items, items, flushed_at`

// GetDigest loads a digest; ErrNotFound when there is none.
func GetDigest(ctx context.Context, q Querier, id uuid.UUID) (Digest, error) {
	rows, err := q.Query(ctx, `SELECT `+digestColumns+` FROM digests WHERE id = $1`, id)
	if err != nil {
		return Digest{}, fmt.Errorf("loading digest: %w", err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Digest])
	if errors.Is(err, pgx.ErrNoRows) {
		return Digest{}, ErrNotFound
	}
	if err != nil {
		return Digest{}, fmt.Errorf("loading digest: %w", err)
	}
	return d, nil
}

// Joined is where a member joined its digest: the digest, when its window
// closes, and whether the member filled it (MaxItems reached: it flushes
// now) or opened it (its workflow must be started).
type Joined struct {
	DigestID uuid.UUID
	ClosesAt time.Time
	Full     bool
	Opened   bool
}

// JoinDigest makes the notification n, whose attempt (of generation gen)
// begun, a member of the open digest of its category d for its recipient
// and digest key (one is opened when none is open, its window counted from
// now), and takes the attempt back: the member is SCHEDULED until the
// window closes, deferred by digest. ok is false when n is no longer of
// gen or not begun (nothing is joined). Members join under an advisory lock
// on the key, so a digest never takes more than MaxItems, and two are never
// open for one key.
func JoinDigest(ctx context.Context, db TxStarter, n Notification, gen *int, attempt int, d pacing.Digest) (j Joined, ok bool, err error) {
	key := RecipientKey(n)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := lockKey(ctx, tx, "digest/"+n.TenantID.String()+"/"+*n.Category+"/"+key+"/"+*n.DigestKey); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `
			SELECT id, closes_at FROM digests
			WHERE tenant_id = $1 AND category = $2 AND recipient_key = $3 AND digest_key = $4
				AND flushed_at IS NULL AND closes_at > now() AND items < max_items
			ORDER BY closes_at LIMIT 1`, n.TenantID, *n.Category, key, *n.DigestKey).Scan(&j.DigestID, &j.ClosesAt)
		if errors.Is(err, pgx.ErrNoRows) {
			j.Opened, j.DigestID = true, uuid.Must(uuid.NewV7())
			err = tx.QueryRow(ctx, `
				INSERT INTO digests (id, tenant_id, category, recipient_key, digest_key, closes_at, max_items)
				VALUES ($1, $2, $3, $4, $5, now() + $6::bigint * interval '1 millisecond', $7)
				RETURNING closes_at`, j.DigestID, n.TenantID, *n.Category, key, *n.DigestKey,
				time.Duration(d.Window).Milliseconds(), d.MaxItems).Scan(&j.ClosesAt)
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
			UPDATE notifications SET digest_id = $3, status = 'SCHEDULED', scheduled_at = $4, deferred_by = 'digest',
				attempts = LEAST(attempts, $5 - 1), next_attempt_at = NULL, updated_at = now()
			WHERE id = $1 AND status = 'PROCESSING' AND ($2::int IS NULL OR generation = $2)`,
			n.ID, gen, j.DigestID, j.ClosesAt, attempt)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		ok = true
		return tx.QueryRow(ctx, `UPDATE digests SET items = items + 1 WHERE id = $1 RETURNING items >= max_items`,
			j.DigestID).Scan(&j.Full)
	})
	if err != nil {
		return Joined{}, false, fmt.Errorf("joining the digest: %w", err)
	}
	return j, ok, nil
}

// DigestItem is one member as its digest's message lists it.
type DigestItem struct {
	ID       string          `json:"id"`
	Subject  *string         `json:"subject,omitempty"`
	Content  string          `json:"content"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// FlushDigest closes the digest id and makes its message: the members not
// cancelled (nor terminal) are claimed, PROCESSING, and listed, in the
// order they were accepted, in a notification of its own whose id is the
// digest's, to their recipient on the first member's channel, with the
// highest of their priorities, written with its outbox row in the same
// transaction (the relay then hands it to the broker like any other).
// With no member left it sends nothing. It answers the members listed; a
// digest flushed already answers its count again and changes nothing.
func FlushDigest(ctx context.Context, db TxStarter, id uuid.UUID) (items int, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var flushed bool
		err := tx.QueryRow(ctx, `SELECT flushed_at IS NOT NULL, items FROM digests WHERE id = $1 FOR UPDATE`, id).
			Scan(&flushed, &items)
		if err != nil || flushed {
			return err
		}
		rows, err := tx.Query(ctx, `
			UPDATE notifications SET status = 'PROCESSING', scheduled_at = NULL, updated_at = now()
			WHERE digest_id = $1 AND id <> $1 AND status IN `+nonTerminal+` AND cancel_requested_at IS NULL
			RETURNING `+notificationColumns, id)
		if err != nil {
			return err
		}
		members, err := pgx.CollectRows(rows, scanNotification)
		if err != nil {
			return err
		}
		items = len(members)
		if _, err := tx.Exec(ctx, `UPDATE digests SET flushed_at = now(), items = $2 WHERE id = $1`, id, items); err != nil {
			return err
		}
		if items == 0 {
			return nil
		}
		msg := digestMessage(id, members)
		list, err := json.Marshal(digestItems(members))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			WITH n AS (
				INSERT INTO notifications (id, channel, priority, recipient, subject, content, tenant_id,
					recipient_id, channels, category, digest_id, digest_items)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $1, $11)
				RETURNING id, channel, priority
			)
			INSERT INTO outbox (notification_id, channel, priority) SELECT id, channel, priority FROM n`,
			id, msg.Channel, msg.Priority, msg.Recipient, msg.Subject, msg.Content, msg.TenantID,
			msg.RecipientID, msg.Channels, msg.Category, list)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("flushing digest %s: %w", id, err)
	}
	return items, nil
}

// digestMessage is the notification that carries a digest's members: to
// the first member's recipient (profile or address) and channel, with the
// highest of their priorities, its text listing each member.
func digestMessage(id uuid.UUID, members []Notification) Notification {
	slices.SortStableFunc(members, func(a, b Notification) int { return a.CreatedAt.Compare(b.CreatedAt) })
	first := members[0]
	msg := Notification{ID: id, TenantID: first.TenantID, Channel: first.Channel, Priority: first.Priority,
		Recipient: first.Recipient, RecipientID: first.RecipientID, Channels: first.Channels, Category: first.Category}
	var b strings.Builder
	for i, m := range members {
		// Temporal's priority key: the lower, the sooner.
		if notification.TemporalPriorityKey(m.Priority) < notification.TemporalPriorityKey(msg.Priority) {
			msg.Priority = m.Priority
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString("- ")
		if m.Subject != nil {
			b.WriteString(*m.Subject + ": ")
		}
		b.WriteString(m.Content)
	}
	msg.Content = b.String()
	if first.Subject != nil {
		subject := fmt.Sprintf("%s (and %d more)", *first.Subject, len(members)-1)
		if len(members) == 1 {
			subject = *first.Subject
		}
		msg.Subject = &subject
	}
	return msg
}

// digestItems are the members as the message's items list them.
func digestItems(members []Notification) []DigestItem {
	items := make([]DigestItem, len(members))
	for i, m := range members {
		items[i] = DigestItem{ID: m.ID.String(), Subject: m.Subject, Content: m.Content, Metadata: m.Metadata}
	}
	return items
}

// SettleDigest ends the members a digest's message listed as the message
// ended (DELIVERED, FAILED with its reason, CANCELLED, SKIPPED with its
// reason), its provider theirs, and answers them, for their workflows to be
// woken. A member terminal already keeps its status.
func SettleDigest(ctx context.Context, q Querier, id uuid.UUID) ([]uuid.UUID, error) {
	rows, err := q.Query(ctx, `
		UPDATE notifications m SET status = d.status, failure_reason = d.failure_reason, skip_reason = d.skip_reason,
			provider = d.provider, delivered_at = d.delivered_at, last_error = NULL, updated_at = now()
		FROM notifications d
		WHERE d.id = $1 AND d.status IN ('DELIVERED', 'FAILED', 'CANCELLED', 'SKIPPED')
			AND m.digest_id = $1 AND m.id <> $1 AND m.status IN `+nonTerminal+`
		RETURNING m.id`, id)
	if err != nil {
		return nil, fmt.Errorf("settling digest %s: %w", id, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("settling digest %s: %w", id, err)
	}
	return ids, nil
}
