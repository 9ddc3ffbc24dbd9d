package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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
