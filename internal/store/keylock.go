package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// DB runs statements and transactions: a pool, or a transaction (whose
// Begin is a savepoint).
type DB interface {
	Querier
	TxStarter
}

// TryLockKey takes, for the rest of tx, the lock of an idempotency key in
// its scope (notification, batch, retry, operation: separate namespaces),
// without waiting: false means another request with the key holds it now,
// still being processed.
func TryLockKey(ctx context.Context, tx pgx.Tx, scope, key string) (bool, error) {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`, scope+":"+key).Scan(&ok); err != nil {
		return false, fmt.Errorf("locking the idempotency key: %w", err)
	}
	return ok, nil
}

// TenantKeyScope is the lock scope of a tenant's idempotency keys of one
// kind: keys are unique per tenant, so are their locks.
func TenantKeyScope(scope string, tenant uuid.UUID) string {
	return scope + ":" + TenantOrDefault(tenant).String()
}
