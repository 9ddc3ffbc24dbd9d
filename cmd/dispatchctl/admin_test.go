package main

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// TestKeysCreateListRevoke: keys create prints the key alone on its last
// line and stores only its hash; list shows its prefix, never the key;
// revoke makes the API's lookup refuse it.
func TestKeysCreateListRevoke(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	env := []string{"DATABASE_DSN=" + dsn}
	dir := isolatedDir(t)
	ctx := context.Background()

	r := runIn(t, dir, env, "keys", "create", "--tenant", "acme", "--name", "billing")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	key := lines[len(lines)-1]
	require.Regexp(t, `^de_[A-Za-z0-9_-]{43}$`, key, "the key alone on the last line")
	tenant, err := store.AuthenticateAPIKey(ctx, pool, store.HashAPIKey(key))
	require.NoError(t, err)
	require.Equal(t, "acme", tenant.Name)
	require.Nil(t, tenant.AcceptPerSec)
	require.EqualValues(t, 1, tenant.Weight)

	r = runIn(t, dir, env, "keys", "list", "--tenant", "acme")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, key[:11])
	require.Contains(t, r.stdout, "active")
	require.NotContains(t, r.stdout, key[11:], "never the key")

	r = runIn(t, dir, env, "keys", "revoke", key[:11])
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	_, err = store.AuthenticateAPIKey(ctx, pool, store.HashAPIKey(key))
	require.ErrorIs(t, err, store.ErrNotFound)
	r = runIn(t, dir, env, "keys", "list")
	require.Regexp(t, `(?m)^PREFIX\s+TENANT\s+NAME\s+CREATED\s+EXPIRES\s+LAST USED\s+STATUS$`, r.stdout)
	require.Regexp(t, `(?m)^`+key[:11]+`\s+acme\s+billing\s+\S+\s+-\s+\S+\s+revoked$`, r.stdout, "never expires; used once by the lookup above")

	r = runIn(t, dir, env, "keys", "revoke", "de_unknown0")
	require.Equal(t, app.ExitFailed, r.code)
	require.Contains(t, r.stderr, "no key has the prefix")
	r = runIn(t, dir, env, "keys", "create")
	require.Equal(t, app.ExitUsage, r.code)
	r = runIn(t, dir, env, "keys", "create", "--tenant", "Not A Name")
	require.Equal(t, app.ExitUsage, r.code)
}

// TestTenantsSetChangesOnlyTheFlagsGiven.
func TestTenantsSetChangesOnlyTheFlagsGiven(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	env := []string{"DATABASE_DSN=" + dsn}
	dir := isolatedDir(t)
	ctx := context.Background()

	r := runIn(t, dir, env, "tenants", "set", "acme", "--accept-per-sec", "50", "--weight", "2.5")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	tn, err := store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.Equal(t, 50, *tn.AcceptPerSec)
	require.Nil(t, tn.AcceptPerDay)
	require.EqualValues(t, 2.5, tn.Weight)

	r = runIn(t, dir, env, "tenants", "set", "acme", "--accept-per-day", "1000")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	tn, err = store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.Equal(t, 50, *tn.AcceptPerSec, "kept")
	require.Equal(t, 1000, *tn.AcceptPerDay)
	require.EqualValues(t, 2.5, tn.Weight, "kept")

	r = runIn(t, dir, env, "tenants", "set", "acme", "--accept-per-sec", "0")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	tn, err = store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.Nil(t, tn.AcceptPerSec, "0 removes the quota")

	for _, args := range [][]string{
		{"tenants", "set", "acme", "--weight", "0"},
		{"tenants", "set", "acme", "--weight", "1001"},
		{"tenants", "set", "acme", "--weight", "heavy"},
		{"tenants", "set", "acme", "--accept-per-sec", "-1"},
		{"tenants", "set", "Not_A_Name"},
		{"tenants", "set"},
	} {
		r = runIn(t, dir, env, args...)
		require.Equal(t, app.ExitUsage, r.code, "dispatchctl %v", args)
	}
	tn, err = store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 2.5, tn.Weight, "unchanged by the refused commands")
	r = runIn(t, dir, env, "tenants", "list")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "acme")
	require.Contains(t, r.stdout, "default")
}

// TestKeysJSONNeverHoldsTheKey: --json of list names the fields in the
// API's style and holds neither the key nor its hash.
func TestKeysJSONNeverHoldsTheKey(t *testing.T) {
	dsn := testenv.Database(t)
	env := []string{"DATABASE_DSN=" + dsn}
	dir := isolatedDir(t)

	r := runIn(t, dir, env, "keys", "create", "--tenant", "acme", "--expires-in", "720h")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "shown once")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	key := lines[len(lines)-1]

	r = runIn(t, dir, env, "keys", "list", "--json")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	var ks []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ks), r.stdout)
	require.Len(t, ks, 1)
	require.Equal(t, key[:11], ks[0]["prefix"])
	require.Equal(t, "acme", ks[0]["tenant"])
	require.Equal(t, "active", ks[0]["status"])
	require.NotNil(t, ks[0]["expiresAt"])
	require.NotContains(t, r.stdout, key[11:])
	require.NotContains(t, strings.ToLower(r.stdout), "hash")

	r = runIn(t, dir, env, "tenants", "list", "--json")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	var ts []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ts), r.stdout)
	require.Len(t, ts, 2) // acme and default
	require.Equal(t, "acme", ts[0]["name"])
	require.EqualValues(t, 1, ts[0]["weight"])
	require.Nil(t, ts[0]["acceptPerSec"])
}

// TestKeysOnAnUnmigratedDatabaseSaysToMigrate: the commands do not migrate;
// a database without the tenants tables gets a clear error.
func TestKeysOnAnUnmigratedDatabaseSaysToMigrate(t *testing.T) {
	base := testenv.Shared(t).PostgresDSN
	u, err := url.Parse(base)
	require.NoError(t, err)
	name := testenv.Name("dispatch_test_")
	u.Path = "/" + name
	ctx := context.Background()
	require.NoError(t, store.EnsureDatabase(ctx, u.String()))
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	env := []string{"DATABASE_DSN=" + u.String()}
	for _, args := range [][]string{
		{"keys", "create", "--tenant", "acme"},
		{"keys", "list"},
		{"tenants", "list"},
	} {
		r := runIn(t, isolatedDir(t), env, args...)
		require.Equal(t, app.ExitFailed, r.code, "dispatchctl %v", args)
		require.Contains(t, r.stderr, "migrate it first", "dispatchctl %v", args)
	}
}
