package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Batch is one row of the batches table.
type Batch struct {
	ID                 uuid.UUID `db:"id"`
	Total              int       `db:"total"`
	CreatedAt          time.Time `db:"created_at"`
	IdempotencyKey     *string   `db:"idempotency_key"`
	RequestFingerprint *string   `db:"request_fingerprint"`
}

const batchColumns = `id, total, created_at, idempotency_key, request_fingerprint`

// NewBatch is a validated batch request: its notifications in request order.
type NewBatch struct {
	ID uuid.UUID
	// TenantID owns the batch, its notifications and their keys.
	TenantID uuid.UUID
	// IdempotencyKey and RequestFingerprint identify the batch request as a
	// whole (the Idempotency-Key header), apart from any item's own key.
	IdempotencyKey     *string
	RequestFingerprint *string
	Notifications      []NewNotification
	// TraceParent is the W3C traceparent of the batch request, stored with
	// every notification's outbox row (their own TraceParent is not read);
	// "" for none.
	TraceParent string
}

// KeysTakenError is a batch whose items carry idempotency keys that already
// belong to stored notifications. It is an ErrConflict.
type KeysTakenError struct {
	// Taken maps each such item's index in the batch to the notification
	// that holds its key.
	Taken map[int]uuid.UUID
}

// Items returns the indexes of the items whose keys are taken, in order.
func (e *KeysTakenError) Items() []int {
	return slices.Sorted(maps.Keys(e.Taken))
}

func (e *KeysTakenError) Error() string {
	idx := e.Items()
	parts := make([]string, len(idx))
	for k, i := range idx {
		parts[k] = strconv.Itoa(i)
	}
	return "idempotency keys already taken by items " + strings.Join(parts, ", ")
}

// Unwrap makes a KeysTakenError an ErrConflict.
func (e *KeysTakenError) Unwrap() error { return ErrConflict }

// TxStarter begins a transaction: a pool, or a transaction (a savepoint).
type TxStarter interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// CreateBatch stores a batch row, all its notifications and all their outbox
// rows in one transaction, the notifications and outbox rows in one
// statement (arrays unnested into a multi-row insert), and returns them in
// request order.
//
// When b.IdempotencyKey is taken by a batch with the same fingerprint,
// nothing is written and that batch and its notifications are returned with
// replayed true; with another fingerprint it is ErrConflict. When any item's
// own idempotency key is taken, nothing is written and the error is a
// *KeysTakenError naming every such item. Both hold under concurrency, for
// the unique indexes make a second writer wait for the first to commit.
func CreateBatch(ctx context.Context, db TxStarter, b NewBatch) (batch Batch, notes []Notification, replayed bool, err error) {
	if len(b.Notifications) == 0 {
		return Batch{}, nil, false, errors.New("creating batch: no notifications")
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			INSERT INTO batches (id, total, idempotency_key, request_fingerprint, tenant_id)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING `+batchColumns,
			b.ID, len(b.Notifications), b.IdempotencyKey, b.RequestFingerprint, TenantOrDefault(b.TenantID))
		if err != nil {
			return fmt.Errorf("inserting batch: %w", err)
		}
		inserted, err := pgx.CollectRows(rows, pgx.RowToStructByName[Batch])
		if err != nil {
			return fmt.Errorf("inserting batch: %w", err)
		}
		if len(inserted) == 0 {
			batch, notes, err = replayBatch(ctx, tx, b)
			replayed = err == nil
			return err
		}
		batch = inserted[0]
		notes, err = insertBatchNotifications(ctx, tx, TenantOrDefault(b.TenantID), batch.ID, b.Notifications, b.TraceParent)
		return err
	})
	if err != nil {
		return Batch{}, nil, false, err
	}
	return batch, notes, replayed, nil
}

// replayBatch returns the stored batch holding b's idempotency key, when it
// was created by the same request.
func replayBatch(ctx context.Context, q Querier, b NewBatch) (Batch, []Notification, error) {
	if b.IdempotencyKey == nil {
		return Batch{}, nil, errors.New("inserting batch: no row inserted")
	}
	rows, err := q.Query(ctx, `SELECT `+batchColumns+` FROM batches WHERE tenant_id = $1 AND idempotency_key = $2`,
		TenantOrDefault(b.TenantID), *b.IdempotencyKey)
	if err != nil {
		return Batch{}, nil, fmt.Errorf("loading batch by idempotency key: %w", err)
	}
	existing, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Batch])
	if err != nil {
		return Batch{}, nil, fmt.Errorf("loading batch by idempotency key: %w", err)
	}
	if !sameFingerprint(existing.RequestFingerprint, b.RequestFingerprint) {
		return Batch{}, nil, fmt.Errorf("idempotency key used by batch %s for another request: %w", existing.ID, ErrConflict)
	}
	// A batch's ids are UUIDv7 made in request order by one process, so id
	// order is request order.
	rows, err = q.Query(ctx, `SELECT `+notificationColumns+` FROM notifications WHERE batch_id = $1 ORDER BY id`, existing.ID)
	if err != nil {
		return Batch{}, nil, fmt.Errorf("loading batch notifications: %w", err)
	}
	notes, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return Batch{}, nil, fmt.Errorf("loading batch notifications: %w", err)
	}
	return existing, notes, nil
}

// insertBatchNotifications inserts the notifications and their outbox rows
// (each with traceparent, "" for none) in one statement and returns them in
// the order given.
func insertBatchNotifications(ctx context.Context, tx pgx.Tx, tenant, batchID uuid.UUID, ns []NewNotification, traceparent string) ([]Notification, error) {
	var (
		ids          = make([]uuid.UUID, len(ns))
		channels     = make([]string, len(ns))
		priorities   = make([]string, len(ns))
		recipients   = make([]string, len(ns))
		subjects     = make([]*string, len(ns))
		contents     = make([]string, len(ns))
		metadata     = make([]*string, len(ns))
		keys         = make([]*string, len(ns))
		fingerprints = make([]*string, len(ns))
		scheduled    = make([]*time.Time, len(ns))
		expires      = make([]*time.Time, len(ns))
		profiles     = make([]*string, len(ns))
		fallbacks    = make([]*string, len(ns))
		categories   = make([]*string, len(ns))
		orderingKeys = make([]*string, len(ns))
		maxHolds     = make([]int64, len(ns))
		digestKeys   = make([]*string, len(ns))
		templates    = make([]*string, len(ns))
		versions     = make([]*int32, len(ns))
		locales      = make([]*string, len(ns))
		htmls        = make([]*string, len(ns))
		position     = make(map[uuid.UUID]int, len(ns))
	)
	for i, n := range ns {
		ids[i], channels[i], priorities[i], recipients[i] = n.ID, string(n.Channel), string(n.Priority), n.Recipient
		subjects[i], contents[i], keys[i], fingerprints[i] = n.Subject, n.Content, n.IdempotencyKey, n.RequestFingerprint
		scheduled[i], expires[i] = n.ScheduledAt, n.ExpiresAt
		profiles[i], categories[i] = n.RecipientID, n.Category
		orderingKeys[i], maxHolds[i], digestKeys[i] = n.OrderingKey, n.MaxHold.Milliseconds(), n.DigestKey
		templates[i], locales[i], htmls[i] = n.Template, n.Locale, n.HTML
		if n.TemplateVersion != nil {
			v := int32(*n.TemplateVersion)
			versions[i] = &v
		}
		if len(n.Channels) > 0 {
			list := strings.Join(n.Channels, ",")
			fallbacks[i] = &list
		}
		if len(n.Metadata) > 0 {
			m := string(n.Metadata)
			metadata[i] = &m
		}
		position[n.ID] = i
	}
	rows, err := tx.Query(ctx, `
		WITH n AS (
			INSERT INTO notifications (id, batch_id, channel, priority, recipient, subject, content, metadata,
				idempotency_key, request_fingerprint, scheduled_at, expires_at, tenant_id,
				recipient_id, channels, category, ordering_key, ordering_pos, max_hold_ms, digest_key,
				template, template_version, locale, html)
			SELECT u.id, $1, u.channel, u.priority, u.recipient, u.subject, u.content, u.metadata::jsonb,
				u.idempotency_key, u.request_fingerprint, u.scheduled_at, u.expires_at, $13,
				u.recipient_id, string_to_array(u.channels, ','), u.category,
				-- A batch's notifications share their created_at: their
				-- place in the request orders the ones with one key.
				u.ordering_key, CASE WHEN u.ordering_key IS NOT NULL THEN u.pos END, NULLIF(u.max_hold_ms, 0), u.digest_key,
				u.template, u.template_version, u.locale, u.html
			FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[], $15::text[], $16::text[], $17::text[],
				$18::text[], $19::bigint[], $20::text[], $21::text[], $22::int[], $23::text[], $24::text[]) WITH ORDINALITY
				AS u(id, channel, priority, recipient, subject, content, metadata,
					idempotency_key, request_fingerprint, scheduled_at, expires_at, recipient_id, channels, category,
					ordering_key, max_hold_ms, digest_key, template, template_version, locale, html, pos)
			-- Keys are taken in one order whatever the request's: two
			-- batches sharing keys in other orders wait for each other
			-- instead of deadlocking on the unique index. Among the rows
			-- with no key the request's order stands, and so does the
			-- outbox's, which hands them on in that order.
			ORDER BY u.idempotency_key, u.pos
			ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING `+notificationColumns+`
		), o AS (
			INSERT INTO outbox (notification_id, channel, priority, traceparent)
			SELECT id, channel, priority, NULLIF($14, '') FROM n
		)
		SELECT `+notificationColumns+` FROM n`,
		batchID, ids, channels, priorities, recipients, subjects, contents, metadata,
		keys, fingerprints, scheduled, expires, tenant, traceparent, profiles, fallbacks, categories,
		orderingKeys, maxHolds, digestKeys, templates, versions, locales, htmls)
	if err != nil {
		return nil, fmt.Errorf("inserting batch notifications: %w", err)
	}
	inserted, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return nil, fmt.Errorf("inserting batch notifications: %w", err)
	}
	if len(inserted) < len(ns) {
		return nil, takenKeys(ctx, tx, tenant, batchID, ns)
	}
	out := make([]Notification, len(ns))
	for _, n := range inserted {
		out[position[n.ID]] = n
	}
	return out, nil
}

// takenKeys names the items whose idempotency key another notification
// holds; the caller's transaction then rolls back.
func takenKeys(ctx context.Context, q Querier, tenant, batchID uuid.UUID, ns []NewNotification) error {
	index := make(map[string]int)
	var keys []string
	for i, n := range ns {
		if n.IdempotencyKey != nil {
			index[*n.IdempotencyKey] = i
			keys = append(keys, *n.IdempotencyKey)
		}
	}
	rows, err := q.Query(ctx, `
		SELECT idempotency_key, id FROM notifications
		WHERE tenant_id = $3 AND idempotency_key = ANY($1) AND batch_id IS DISTINCT FROM $2`, keys, batchID, tenant)
	if err != nil {
		return fmt.Errorf("finding taken idempotency keys: %w", err)
	}
	taken := &KeysTakenError{Taken: make(map[int]uuid.UUID)}
	var (
		key string
		id  uuid.UUID
	)
	_, err = pgx.ForEachRow(rows, []any{&key, &id}, func() error {
		taken.Taken[index[key]] = id
		return nil
	})
	if err != nil {
		return fmt.Errorf("finding taken idempotency keys: %w", err)
	}
	if len(taken.Taken) == 0 {
		return errors.New("inserting batch notifications: fewer rows inserted than given, yet no key is taken")
	}
	return fmt.Errorf("inserting batch notifications: %w", taken)
}

// BatchSummary counts a batch's notifications by status and by channel;
// every status and every channel is present, zero or not.
type BatchSummary struct {
	Batch
	ByStatus  map[Status]int
	ByChannel map[string]int
}

// GetBatchSummary loads a batch and counts its notifications; ErrNotFound
// when there is no such batch.
func GetBatchSummary(ctx context.Context, q Querier, tenant, id uuid.UUID) (BatchSummary, error) {
	rows, err := q.Query(ctx, `SELECT `+batchColumns+` FROM batches WHERE id = $1 AND tenant_id = $2`, id, TenantOrDefault(tenant))
	if err != nil {
		return BatchSummary{}, fmt.Errorf("loading batch: %w", err)
	}
	b, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Batch])
	if errors.Is(err, pgx.ErrNoRows) {
		return BatchSummary{}, fmt.Errorf("batch %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return BatchSummary{}, fmt.Errorf("loading batch: %w", err)
	}
	s := BatchSummary{Batch: b, ByStatus: make(map[Status]int), ByChannel: make(map[string]int)}
	for _, st := range notification.Statuses {
		s.ByStatus[st] = 0
	}
	for _, c := range notification.Channels {
		s.ByChannel[string(c)] = 0
	}
	rows, err = q.Query(ctx, `
		SELECT status, channel, count(*) FROM notifications WHERE batch_id = $1 GROUP BY status, channel`, id)
	if err != nil {
		return BatchSummary{}, fmt.Errorf("counting batch notifications: %w", err)
	}
	var (
		status  Status
		channel string
		n       int
	)
	_, err = pgx.ForEachRow(rows, []any{&status, &channel, &n}, func() error {
		s.ByStatus[status] += n
		s.ByChannel[channel] += n
		return nil
	})
	if err != nil {
		return BatchSummary{}, fmt.Errorf("counting batch notifications: %w", err)
	}
	return s, nil
}
