package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// SigningKey returns the key stored for purpose, storing fresh first when
// there is none. Every process calls it at start with its own random
// candidate; the first insert wins and all of them read back that one, so
// a token signed by one instance verifies on every other and after a
// restart. The insert and the read are two statements: a row committed by
// another process after the insert's snapshot is seen by the read.
func SigningKey(ctx context.Context, q Querier, purpose string, fresh []byte) ([]byte, error) {
	if _, err := q.Exec(ctx, `INSERT INTO signing_keys (purpose, key) VALUES ($1, $2)
		ON CONFLICT (purpose) DO NOTHING`, purpose, fresh); err != nil {
		return nil, fmt.Errorf("storing the %s signing key: %w", purpose, err)
	}
	var key []byte
	if err := q.QueryRow(ctx, `SELECT key FROM signing_keys WHERE purpose = $1`, purpose).Scan(&key); err != nil {
		return nil, fmt.Errorf("reading the %s signing key: %w", purpose, err)
	}
	return key, nil
}

// Sources of an opt-out (opt_outs.source), saying how it was made.
const (
	// OptOutUnsubscribe: the person used a one-click unsubscribe link.
	OptOutUnsubscribe = "unsubscribe"
	// OptOutComplaint: the person reported a message as spam.
	OptOutComplaint = "complaint"
)

// RecordOptOut records that the person at address on channel refuses
// category from tenantID. The refusal goes on a profile when there is one:
// recipientID's, when given and it exists, else every profile of the
// tenant holding the address (preferences[category][channel] = false, the
// category's object made when missing). With no such profile it is an
// opt_outs row for the address, from source. Recording it again changes
// nothing, so a repeated one-click POST is harmless. A tenant that does not
// exist is ErrNotFound.
func RecordOptOut(ctx context.Context, q Querier, tenantID uuid.UUID, channel, address string, recipientID *string, category, source string) error {
	if !notification.ValidChannel(channel) {
		return fmt.Errorf("recording opt-out: %q is not a channel", channel)
	}
	if address == "" && recipientID == nil {
		return errors.New("recording opt-out: neither an address nor a recipient")
	}
	if category == "" {
		return errors.New("recording opt-out: no category")
	}
	_, err := q.Exec(ctx, `
		WITH holders AS (
			SELECT r.id FROM recipients r WHERE r.tenant_id = $1 AND r.id = $5
			UNION
			SELECT ra.recipient_id FROM recipient_addresses ra
			WHERE ra.tenant_id = $1 AND ra.channel = $2 AND ra.address = $3
				AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.tenant_id = $1 AND r.id = $5)
		), refused AS (
			UPDATE recipients r SET
				preferences = jsonb_set(
					CASE WHEN jsonb_typeof(r.preferences -> $4) = 'object' THEN r.preferences
						ELSE jsonb_set(r.preferences, ARRAY[$4::text], '{}'::jsonb) END,
					ARRAY[$4::text, $2::text], 'false'::jsonb),
				updated_at = now()
			FROM holders h
			WHERE r.tenant_id = $1 AND r.id = h.id AND (r.preferences -> $4 -> $2) IS DISTINCT FROM 'false'::jsonb
		)
		INSERT INTO opt_outs (tenant_id, channel, address, category, source)
		SELECT $1, $2, $3, $4, $6 WHERE $3 <> '' AND NOT EXISTS (SELECT 1 FROM holders)
		ON CONFLICT (tenant_id, channel, address, category) DO NOTHING`,
		tenantID, channel, address, category, recipientID, source)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		// The tenant is gone (a link outlives what it was for).
		return fmt.Errorf("recording opt-out: tenant %s: %w", tenantID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("recording opt-out: %w", err)
	}
	return nil
}
