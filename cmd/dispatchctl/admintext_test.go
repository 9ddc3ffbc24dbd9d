package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// Text PostgreSQL cannot store (NUL, invalid UTF-8) in a tenant's name, a
// key's label or a key's prefix is a usage error naming the argument
// (exit 2), and nothing is changed; never the database's refusal (exit 1).
func TestKeysAndTenantsRefuseTextPostgreSQLCannotStore(t *testing.T) {
	_, dsn := testenv.Pool(t)
	env := []string{"DATABASE_DSN=" + dsn}
	dir := isolatedDir(t)
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"keys", "create", "--tenant", "acme", "--name", "bill\x00ing"}, "--name"},
		{[]string{"keys", "create", "--tenant", "acme", "--name", "bill\xffing"}, "--name"},
		{[]string{"keys", "create", "--tenant", "acme", "--name", strings.Repeat("n", 201)}, "--name"},
		{[]string{"keys", "create", "--tenant", "ac\x00me"}, "tenant name"},
		{[]string{"keys", "list", "--tenant", "ac\x00me"}, "tenant name"},
		{[]string{"keys", "revoke", "de_\x00bcdefgh"}, "PREFIX"},
		{[]string{"keys", "revoke", "de_\xffbcdefg"}, "PREFIX"},
		{[]string{"tenants", "set", "ac\x00me"}, "tenant name"},
	} {
		r := runIn(t, dir, env, tc.args...)
		require.Equal(t, app.ExitUsage, r.code, "dispatchctl %q: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.says, "dispatchctl %q", tc.args)
	}
	r := runIn(t, dir, env, "keys", "list")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.NotContains(t, r.stdout, "acme", "nothing was made")
}
