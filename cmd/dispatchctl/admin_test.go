package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"dispatch-engine/cmd/dispatchctl/app"
	"dispatch-engine/internal/store"
	"dispatch-engine/internal/testenv"
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
	require.Contains(t, r.stdout, "revoked")

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

	r = runIn(t, dir, env, "tenants", "set", "acme", "--weight", "0")
	require.Equal(t, app.ExitUsage, r.code)
	r = runIn(t, dir, env, "tenants", "list")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "acme")
	require.Contains(t, r.stdout, "default")
}
