package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// DefaultTenantID is the default tenant's id: it owns the keys of API_KEYS
// and every row made before tenants existed.
var DefaultTenantID = uuid.MustParse("00000000-0000-0000-0000-000000000001")

// DefaultTenantName is the default tenant's name.
const DefaultTenantName = "default"

// Tenant is a tenant: who owns notifications, batches, operations and
// idempotency keys, with its acceptance quotas and fairness weight.
type Tenant struct {
	ID           uuid.UUID `db:"id"`
	Name         string    `db:"name"`
	AcceptPerSec *int      `db:"accept_per_sec"`
	AcceptPerDay *int      `db:"accept_per_day"`
	Weight       float32   `db:"weight"`
	// QuietHours is the default window of the tenant's profiles that set
	// none of their own.
	QuietHours *pacing.QuietHours `db:"quiet_hours"`
	CreatedAt  time.Time          `db:"created_at"`
	UpdatedAt  time.Time          `db:"updated_at"`
}

const tenantColumns = `id, name, accept_per_sec, accept_per_day, weight, quiet_hours, created_at, updated_at`

// DefaultTenant is the default tenant as the migration creates it, for the
// keys of API_KEYS (its quotas and weight are read from the row).
func DefaultTenant() Tenant {
	return Tenant{ID: DefaultTenantID, Name: DefaultTenantName, Weight: 1}
}

var tenantName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ErrInvalidTenantName is returned for a tenant name the schema refuses.
var ErrInvalidTenantName = errors.New("a tenant name is 1-63 characters: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit")

// ValidTenantName checks a tenant name.
func ValidTenantName(name string) error {
	if !tenantName.MatchString(name) {
		return ErrInvalidTenantName
	}
	return nil
}

// EnsureTenant returns the tenant named name, creating it (no quota,
// weight 1) if it does not exist.
func EnsureTenant(ctx context.Context, q Querier, name string) (t Tenant, created bool, err error) {
	if err := ValidTenantName(name); err != nil {
		return Tenant{}, false, err
	}
	rows, err := q.Query(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $2)
		ON CONFLICT (name) DO NOTHING RETURNING `+tenantColumns, uuid.New(), name)
	if err != nil {
		return Tenant{}, false, fmt.Errorf("creating tenant: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, false, fmt.Errorf("creating tenant: %w", err)
	}
	if len(ts) == 1 {
		return ts[0], true, nil
	}
	t, err = TenantByName(ctx, q, name)
	return t, false, err
}

// TenantByName loads a tenant by name.
func TenantByName(ctx context.Context, q Querier, name string) (Tenant, error) {
	return oneTenant(ctx, q, `SELECT `+tenantColumns+` FROM tenants WHERE name = $1`, name)
}

// GetTenant loads a tenant by id.
func GetTenant(ctx context.Context, q Querier, id uuid.UUID) (Tenant, error) {
	return oneTenant(ctx, q, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, id)
}

// ListTenants lists every tenant by name.
func ListTenants(ctx context.Context, q Querier) ([]Tenant, error) {
	rows, err := q.Query(ctx, `SELECT `+tenantColumns+` FROM tenants ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return nil, fmt.Errorf("listing tenants: %w", err)
	}
	return ts, nil
}

func oneTenant(ctx context.Context, q Querier, sql string, arg any) (Tenant, error) {
	rows, err := q.Query(ctx, sql, arg)
	if err != nil {
		return Tenant{}, fmt.Errorf("loading tenant: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, ErrNotFound
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("loading tenant: %w", err)
	}
	return t, nil
}

// TenantSettings are the settings `dispatchctl tenants set` changes; a nil
// field is left as it is. A quota of 0 removes it.
type TenantSettings struct {
	AcceptPerSec *int
	AcceptPerDay *int
	Weight       *float32
	// QuietHours sets the default quiet hours of the tenant's profiles;
	// NoQuietHours removes them.
	QuietHours *pacing.QuietHours
}

// NoQuietHours, as TenantSettings.QuietHours, removes a tenant's default.
var NoQuietHours = &pacing.QuietHours{}

// SetTenant creates the tenant named name if it is new and applies s.
func SetTenant(ctx context.Context, db TxStarter, name string, s TenantSettings) (Tenant, error) {
	if s.Weight != nil && (*s.Weight <= 0 || *s.Weight > 1000) {
		return Tenant{}, errors.New("the weight must be above 0 and at most 1000")
	}
	for _, q := range []*int{s.AcceptPerSec, s.AcceptPerDay} {
		if q != nil && *q < 0 {
			return Tenant{}, errors.New("a quota is 0 (none) or more")
		}
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return Tenant{}, fmt.Errorf("setting tenant: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	t, _, err := EnsureTenant(ctx, tx, name)
	if err != nil {
		return Tenant{}, err
	}
	quota := func(v *int) any { // nil: keep; 0: none
		if v == nil {
			return nil
		}
		return *v
	}
	rows, err := tx.Query(ctx, `UPDATE tenants SET
			accept_per_sec = CASE WHEN $2::int IS NULL THEN accept_per_sec ELSE NULLIF($2::int, 0) END,
			accept_per_day = CASE WHEN $3::int IS NULL THEN accept_per_day ELSE NULLIF($3::int, 0) END,
			weight = COALESCE($4::real, weight),
			quiet_hours = CASE WHEN NOT $5 THEN quiet_hours WHEN $6::jsonb IS NULL THEN NULL ELSE $6::jsonb END,
			updated_at = now()
		WHERE id = $1 RETURNING `+tenantColumns, t.ID, quota(s.AcceptPerSec), quota(s.AcceptPerDay), s.Weight,
		s.QuietHours != nil, quietHoursValue(s.QuietHours))
	if err != nil {
		return Tenant{}, fmt.Errorf("setting tenant: %w", err)
	}
	t, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if err != nil {
		return Tenant{}, fmt.Errorf("setting tenant: %w", err)
	}
	return t, tx.Commit(ctx)
}

// quietHoursValue is the quiet_hours column's value for a setting: NULL
// to remove (NoQuietHours, or none).
func quietHoursValue(q *pacing.QuietHours) *pacing.QuietHours {
	if q == nil || *q == (pacing.QuietHours{}) {
		return nil
	}
	return q
}

// APIKey is a stored API key: its hash, never the key.
type APIKey struct {
	ID         uuid.UUID  `db:"id"`
	TenantID   uuid.UUID  `db:"tenant_id"`
	TenantName string     `db:"tenant_name"`
	Prefix     string     `db:"prefix"`
	Name       *string    `db:"name"`
	CreatedAt  time.Time  `db:"created_at"`
	ExpiresAt  *time.Time `db:"expires_at"`
	RevokedAt  *time.Time `db:"revoked_at"`
	LastUsedAt *time.Time `db:"last_used_at"`
}

// Active reports whether the key is accepted at now.
func (k APIKey) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || k.ExpiresAt.After(now))
}

const apiKeyColumns = `k.id, k.tenant_id, t.name AS tenant_name, k.prefix, k.name, k.created_at,
	k.expires_at, k.revoked_at, k.last_used_at`

// keyPrefixLen is how many characters of a key are kept to recognise it:
// "de_" and 8 of its random characters.
const keyPrefixLen = 11

// HashAPIKey is the digest a key is stored and looked up by. The key holds
// 256 random bits, so a fast hash is enough: nothing to brute-force.
func HashAPIKey(key string) []byte {
	d := sha256.Sum256([]byte(key))
	return d[:]
}

// NewAPIKey makes a key, "de_" followed by 43 URL-safe characters (256
// random bits), and its prefix.
func NewAPIKey() (key, prefix string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	key = "de_" + base64.RawURLEncoding.EncodeToString(b)
	return key, key[:keyPrefixLen], nil
}

// CreateAPIKey makes a key for the tenant named tenant (created if new) and
// stores its hash; the key itself is returned once and never stored.
func CreateAPIKey(ctx context.Context, db TxStarter, tenant, name string, expires *time.Time) (key string, k APIKey, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return "", APIKey{}, fmt.Errorf("creating key: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	t, _, err := EnsureTenant(ctx, tx, tenant)
	if err != nil {
		return "", APIKey{}, err
	}
	key, prefix, err := NewAPIKey()
	if err != nil {
		return "", APIKey{}, fmt.Errorf("creating key: %w", err)
	}
	var label *string
	if name != "" {
		label = &name
	}
	rows, err := tx.Query(ctx, `WITH k AS (
			INSERT INTO api_keys (id, tenant_id, prefix, hash, name, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING *)
		SELECT `+apiKeyColumns+` FROM k JOIN tenants t ON t.id = k.tenant_id`,
		uuid.New(), t.ID, prefix, HashAPIKey(key), label, expires)
	if err != nil {
		return "", APIKey{}, fmt.Errorf("creating key: %w", err)
	}
	k, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[APIKey])
	if err != nil {
		return "", APIKey{}, fmt.Errorf("creating key: %w", err)
	}
	return key, k, tx.Commit(ctx)
}

// ListAPIKeys lists the stored keys, of one tenant when tenant is not empty.
func ListAPIKeys(ctx context.Context, q Querier, tenant string) ([]APIKey, error) {
	rows, err := q.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
		WHERE $1 = '' OR t.name = $1 ORDER BY t.name, k.created_at, k.prefix`, tenant)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	ks, err := pgx.CollectRows(rows, pgx.RowToStructByName[APIKey])
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return ks, nil
}

// RevokeAPIKey revokes the key with this prefix; revoking a revoked key is
// not an error. ErrNotFound when no key has it.
func RevokeAPIKey(ctx context.Context, q Querier, prefix string) (APIKey, error) {
	rows, err := q.Query(ctx, `WITH k AS (
			UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE prefix = $1 RETURNING *)
		SELECT `+apiKeyColumns+` FROM k JOIN tenants t ON t.id = k.tenant_id`, prefix)
	if err != nil {
		return APIKey{}, fmt.Errorf("revoking key: %w", err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[APIKey])
	if errors.Is(err, pgx.ErrNoRows) {
		return APIKey{}, ErrNotFound
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("revoking key: %w", err)
	}
	return k, nil
}

// lastUsedEvery bounds how often a key's last use is written: a key used
// a thousand times a second writes it once a minute.
const lastUsedEvery = time.Minute

// AuthenticateAPIKey returns the tenant of an active key with this hash,
// and records its use (at most once a minute). ErrNotFound for a key that
// is unknown, revoked or expired. It reads the row every time, so a revoked
// key is refused at once by every API process.
func AuthenticateAPIKey(ctx context.Context, q Querier, hash []byte) (Tenant, error) {
	rows, err := q.Query(ctx, `WITH k AS (
			SELECT id, tenant_id, last_used_at FROM api_keys
			WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
		), used AS (
			UPDATE api_keys a SET last_used_at = now() FROM k
			WHERE a.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < now() - $2::interval)
		)
		SELECT t.id, t.name, t.accept_per_sec, t.accept_per_day, t.weight, t.quiet_hours, t.created_at, t.updated_at
		FROM k JOIN tenants t ON t.id = k.tenant_id`, hash, lastUsedEvery)
	if err != nil {
		return Tenant{}, fmt.Errorf("authenticating key: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Tenant])
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, ErrNotFound
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("authenticating key: %w", err)
	}
	return t, nil
}

// TenantOrDefault is id, or the default tenant's id when id is zero (a
// caller from before tenants, or a test).
func TenantOrDefault(id uuid.UUID) uuid.UUID {
	if id == uuid.Nil {
		return DefaultTenantID
	}
	return id
}

// CountActiveAPIKeys counts the keys accepted now.
func CountActiveAPIKeys(ctx context.Context, q Querier) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM api_keys
		WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting API keys: %w", err)
	}
	return n, nil
}
