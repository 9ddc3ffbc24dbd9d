package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

// repoWithKeyFile is a repository root (it has a .git) whose
// .data/dev-api-key holds key, as `make run` leaves it, and a directory two
// levels below it to run in.
func repoWithKeyFile(t *testing.T, key string) (root, sub string) {
	t.Helper()
	root = isolatedDir(t)
	require.NoError(t, os.MkdirAll(filepath.Join(root, ".data"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, ".data", "dev-api-key"), []byte(key+"\n"), 0o600))
	sub = filepath.Join(root, "cmd", "dispatchctl")
	require.NoError(t, os.MkdirAll(sub, 0o755))
	return root, sub
}

func TestConfigPrecedenceFlagThenEnvThenKeyFile(t *testing.T) {
	f := newFakeAPI(t)
	f.allowInvalid = true // the case without a key
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.NotificationPage{Data: []client.Notification{}})
	})
	_, sub := repoWithKeyFile(t, "file-key")
	// A key file above the repository root is not looked at.
	above, _ := repoWithKeyFile(t, "above-the-repository")
	require.NoError(t, os.Remove(filepath.Join(above, ".git")))
	outside := filepath.Join(above, "repo", "sub")
	require.NoError(t, os.MkdirAll(filepath.Join(above, "repo", ".git"), 0o755))
	require.NoError(t, os.MkdirAll(outside, 0o755))

	for _, tc := range []struct {
		name string
		dir  string
		env  []string
		args []string
		want string // the Authorization header
	}{
		{"the flag wins", sub, []string{"DISPATCH_API_KEY=env-key", "DISPATCH_URL=http://127.0.0.1:1"}, []string{"--url", f.srv.URL, "--api-key", "flag-key"}, "Bearer flag-key"},
		{"then the environment", sub, []string{"DISPATCH_API_KEY=env-key", "DISPATCH_URL=" + f.srv.URL}, nil, "Bearer env-key"},
		{"the last duplicate of a variable", sub, []string{"DISPATCH_API_KEY=old", "DISPATCH_API_KEY=env-key", "DISPATCH_URL=" + f.srv.URL}, nil, "Bearer env-key"},
		{"an empty variable is no key", sub, []string{"DISPATCH_API_KEY=", "DISPATCH_URL=" + f.srv.URL}, nil, "Bearer file-key"},
		{"then the key file in a parent directory", sub, []string{"DISPATCH_URL=" + f.srv.URL}, nil, "Bearer file-key"},
		{"none: the key file above the repository root is not read", outside, []string{"DISPATCH_URL=" + f.srv.URL}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.requests())
			res := runIn(t, tc.dir, tc.env, append(tc.args, "list")...)
			require.Equal(t, app.ExitOK, res.code, res.stderr)
			reqs := f.requests()
			require.Len(t, reqs, before+1)
			assert.Equal(t, tc.want, reqs[before].Header.Get("Authorization"))
		})
	}
}

func TestConfigDefaultURLAndBadURL(t *testing.T) {
	res := runIn(t, isolatedDir(t), []string{"DISPATCH_URL=ftp://example.com"}, "list")
	assert.Equal(t, app.ExitUsage, res.code)
	assert.Contains(t, res.stderr, `the API URL "ftp://example.com" (from $DISPATCH_URL) is not an http:// or https:// URL`)

	res = runIn(t, isolatedDir(t), nil, "--url", "127.0.0.1:8080", "list")
	assert.Equal(t, app.ExitUsage, res.code)
	assert.Contains(t, res.stderr, "(from --url)")
}
