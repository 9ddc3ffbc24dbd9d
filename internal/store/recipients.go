package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// Recipient is a tenant's profile of one person: the tenant's own id for
// them, their addresses, timezone, locale and preferences.
type Recipient struct {
	ID          string
	Addresses   Addresses
	Timezone    *string
	Locale      *string
	Preferences Preferences
	// QuietHours is the window in which the person's non-critical
	// notifications wait, local to Timezone (UTC when none); nil takes the
	// tenant's default.
	QuietHours *pacing.QuietHours
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Addresses are a profile's addresses, each stored as the notifications
// table stores a recipient: one sms number and one email address at most,
// and any number of push tokens, in order.
type Addresses struct {
	SMS   *string
	Email *string
	Push  []string
}

// Preferences are a profile's choices: category -> channel -> allowed. A
// category or channel not named is allowed.
type Preferences map[string]map[string]bool

// address is one row of recipient_addresses.
type address struct {
	channel  string
	position int
	address  string
}

// rows lists a's addresses as recipient_addresses holds them.
func (a Addresses) rows() []address {
	var out []address
	if a.SMS != nil {
		out = append(out, address{"sms", 0, *a.SMS})
	}
	if a.Email != nil {
		out = append(out, address{"email", 0, *a.Email})
	}
	for i, tok := range a.Push {
		out = append(out, address{"push", i, tok})
	}
	return out
}

// recipientColumns reads a profile with its addresses in one row: the
// address rows are few, and each is one probe of their primary key.
const recipientColumns = `r.id, r.timezone, r.locale, r.preferences, r.quiet_hours, r.created_at, r.updated_at,
	(SELECT a.address FROM recipient_addresses a
		WHERE a.tenant_id = r.tenant_id AND a.recipient_id = r.id AND a.channel = 'sms' AND a.position = 0),
	(SELECT a.address FROM recipient_addresses a
		WHERE a.tenant_id = r.tenant_id AND a.recipient_id = r.id AND a.channel = 'email' AND a.position = 0),
	COALESCE((SELECT array_agg(a.address ORDER BY a.position) FROM recipient_addresses a
		WHERE a.tenant_id = r.tenant_id AND a.recipient_id = r.id AND a.channel = 'push'), '{}')`

func scanRecipient(row pgx.CollectableRow) (Recipient, error) {
	var r Recipient
	err := row.Scan(&r.ID, &r.Timezone, &r.Locale, &r.Preferences, &r.QuietHours, &r.CreatedAt, &r.UpdatedAt,
		&r.Addresses.SMS, &r.Addresses.Email, &r.Addresses.Push)
	if r.Preferences == nil {
		r.Preferences = Preferences{}
	}
	return r, err
}

// PutRecipient stores r as the tenant's whole profile r.ID: a new profile
// is created, an existing one replaced (addresses, timezone, locale and
// preferences; a field r leaves empty is removed) in one transaction, so a
// reader sees the old profile or the new one, never a mix. created reports
// a new profile. r is expected valid (the API checks it); the schema's own
// checks answer for anything else.
func PutRecipient(ctx context.Context, db TxStarter, tenantID uuid.UUID, r Recipient) (out Recipient, created bool, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		out, created, err = putRecipient(ctx, tx, tenantID, r)
		return err
	})
	if err != nil {
		return Recipient{}, false, err
	}
	return out, created, nil
}

// PatchRecipient changes the tenant's profile id with change, which gets
// the stored profile and returns the one to store, in one transaction that
// holds the profile's row: two concurrent changes apply one after the
// other, neither lost. ErrNotFound when the tenant has no such profile; an
// error of change is returned as it is, and nothing is written.
func PatchRecipient(ctx context.Context, db TxStarter, tenantID uuid.UUID, id string, change func(Recipient) (Recipient, error)) (out Recipient, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var locked int
		err := tx.QueryRow(ctx, `SELECT 1 FROM recipients WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenantID, id).Scan(&locked)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("locking recipient: %w", err)
		}
		current, err := getRecipient(ctx, tx, tenantID, id)
		if err != nil {
			return err
		}
		next, err := change(current)
		if err != nil {
			return err
		}
		next.ID = id
		out, _, err = putRecipient(ctx, tx, tenantID, next)
		return err
	})
	if err != nil {
		return Recipient{}, err
	}
	return out, nil
}

// putRecipient writes r whole inside tx (PutRecipient's contract).
func putRecipient(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, r Recipient) (out Recipient, created bool, err error) {
	if r.Preferences == nil {
		r.Preferences = Preferences{}
	}
	// xmax = 0 tells an inserted row from an updated one.
	err = tx.QueryRow(ctx, `
		INSERT INTO recipients (tenant_id, id, timezone, locale, preferences, quiet_hours)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (tenant_id, id) DO UPDATE SET timezone = EXCLUDED.timezone, locale = EXCLUDED.locale,
			preferences = EXCLUDED.preferences, quiet_hours = EXCLUDED.quiet_hours, updated_at = now()
		RETURNING xmax = 0`, tenantID, r.ID, r.Timezone, r.Locale, r.Preferences, r.QuietHours).Scan(&created)
	if err != nil {
		return Recipient{}, false, fmt.Errorf("storing recipient: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM recipient_addresses WHERE tenant_id = $1 AND recipient_id = $2`,
		tenantID, r.ID); err != nil {
		return Recipient{}, false, fmt.Errorf("replacing recipient's addresses: %w", err)
	}
	var channels, addrs []string
	var positions []int32
	for _, a := range r.Addresses.rows() {
		channels = append(channels, a.channel)
		positions = append(positions, int32(a.position))
		addrs = append(addrs, a.address)
	}
	if len(addrs) > 0 {
		if _, err := tx.Exec(ctx, `
			INSERT INTO recipient_addresses (tenant_id, recipient_id, channel, position, address)
			SELECT $1, $2, c, p, a FROM unnest($3::text[], $4::int[], $5::text[]) AS u(c, p, a)`,
			tenantID, r.ID, channels, positions, addrs); err != nil {
			return Recipient{}, false, fmt.Errorf("storing recipient's addresses: %w", err)
		}
	}
	out, err = getRecipient(ctx, tx, tenantID, r.ID)
	return out, created, err
}

// GetRecipient loads the tenant's profile id; ErrNotFound when it has none.
func GetRecipient(ctx context.Context, q Querier, tenantID uuid.UUID, id string) (Recipient, error) {
	return getRecipient(ctx, q, tenantID, id)
}

func getRecipient(ctx context.Context, q Querier, tenantID uuid.UUID, id string) (Recipient, error) {
	rows, err := q.Query(ctx, `SELECT `+recipientColumns+` FROM recipients r WHERE r.tenant_id = $1 AND r.id = $2`,
		tenantID, id)
	if err != nil {
		return Recipient{}, fmt.Errorf("loading recipient: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecipient)
	if errors.Is(err, pgx.ErrNoRows) {
		return Recipient{}, ErrNotFound
	}
	if err != nil {
		return Recipient{}, fmt.Errorf("loading recipient: %w", err)
	}
	return r, nil
}

// ListRecipients returns up to limit of the tenant's profiles in id order,
// after the id after ("" for the first page): the primary key holds that
// order, so a page costs the same at any depth.
func ListRecipients(ctx context.Context, q Querier, tenantID uuid.UUID, after string, limit int) ([]Recipient, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("listing recipients: limit %d must be positive", limit)
	}
	rows, err := q.Query(ctx, `SELECT `+recipientColumns+` FROM recipients r
		WHERE r.tenant_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3`, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing recipients: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanRecipient)
	if err != nil {
		return nil, fmt.Errorf("listing recipients: %w", err)
	}
	return list, nil
}

// DeleteRecipient erases the tenant's profile id: the profile, its
// addresses, and the suppressions and opt-outs of every address it held
// (a person erased leaves nothing that names them), in one transaction.
// ErrNotFound when the tenant has no such profile.
func DeleteRecipient(ctx context.Context, db TxStarter, tenantID uuid.UUID, id string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var n int
		err := tx.QueryRow(ctx, `
			WITH p AS (
				DELETE FROM recipients WHERE tenant_id = $1 AND id = $2 RETURNING id
			), a AS (
				SELECT channel, address FROM recipient_addresses WHERE tenant_id = $1 AND recipient_id = $2
			), s AS (
				DELETE FROM suppressions x USING a WHERE x.tenant_id = $1 AND x.channel = a.channel AND x.address = a.address
			), o AS (
				DELETE FROM opt_outs x USING a WHERE x.tenant_id = $1 AND x.channel = a.channel AND x.address = a.address
			)
			SELECT count(*) FROM p`, tenantID, id).Scan(&n)
		if err != nil {
			return fmt.Errorf("erasing recipient: %w", err)
		}
		if n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// eraseAddress removes what the tenant keeps about one address, on one
// channel or (channel nil) on every channel: its suppressions and opt-outs,
// and the profile address rows that hold it (the profiles themselves stay,
// with their other addresses). The erase operation calls it when it ends.
func eraseAddress(ctx context.Context, q Querier, tenantID uuid.UUID, channel *string, addr string) error {
	_, err := q.Exec(ctx, `
		WITH s AS (
			DELETE FROM suppressions WHERE tenant_id = $1 AND address = $3 AND ($2::text IS NULL OR channel = $2)
		), o AS (
			DELETE FROM opt_outs WHERE tenant_id = $1 AND address = $3 AND ($2::text IS NULL OR channel = $2)
		)
		DELETE FROM recipient_addresses WHERE tenant_id = $1 AND address = $3 AND ($2::text IS NULL OR channel = $2)`,
		tenantID, channel, addr)
	if err != nil {
		return fmt.Errorf("erasing the address's suppressions, opt-outs and profile addresses: %w", err)
	}
	return nil
}
