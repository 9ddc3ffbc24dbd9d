// Package scripts_test tests the shell helpers the project's scripts share
// (lib.sh), by running them with bash.
package scripts_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// lib runs script in bash with lib.sh sourced, under umask 022 (a usual
// login's: new files readable by everyone), with args as $1, $2, ….
func lib(t *testing.T, script string, args ...string) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	cmd := exec.Command("bash", append([]string{"-c", `umask 022 && . "$LIB" && ` + script, "bash"}, args...)...)
	cmd.Env = append(os.Environ(), "LIB="+filepath.Join(dir, "lib.sh"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func requireOwnerOnly(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "%s is readable by others", path)
}

// make run's secrets (the development API key, the push provider's
// receipt secret) are written by secret_file: readable by their owner
// alone, whatever the umask, and one an older make run left readable by
// everyone is closed, keeping its content.
func TestSecretFilesAreReadableByTheirOwnerAlone(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "dev-push-provider-secret")
	lib(t, `secret_file "$1" new_webhook_secret`, fresh)
	requireOwnerOnly(t, fresh)
	secret, err := os.ReadFile(fresh)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(secret), "whsec_"), "secret: %q", secret)
	require.NoFileExists(t, fresh+".new")

	// A second run keeps the secret it made.
	lib(t, `secret_file "$1" new_webhook_secret`, fresh)
	again, err := os.ReadFile(fresh)
	require.NoError(t, err)
	require.Equal(t, secret, again)

	old := filepath.Join(dir, "dev-api-key")
	require.NoError(t, os.WriteFile(old, []byte("de_old\n"), 0o600))
	require.NoError(t, os.Chmod(old, 0o644))
	lib(t, `secret_file "$1" printf 'de_new\n'`, old)
	requireOwnerOnly(t, old)
	kept, err := os.ReadFile(old)
	require.NoError(t, err)
	require.Equal(t, "de_old\n", string(kept))

	// run.sh writes both of its secrets through secret_file.
	run, err := os.ReadFile("run.sh")
	require.NoError(t, err)
	require.Contains(t, string(run), `secret_file "$dev_key_file"`)
	require.Contains(t, string(run), `secret_file "$push_secret_file"`)
}

// make run's key is the operator's: the key it makes with dispatchctl
// belongs to the default tenant, the one that may read the dead-letter
// queues (GET /v1/dead-letters) and the metrics labelled by tenant; a key
// of another tenant is refused there with 404. The test runs the keys
// create command line run.sh holds against a fresh database.
func TestMakeRunsKeyIsTheOperators(t *testing.T) {
	run, err := os.ReadFile("run.sh")
	require.NoError(t, err)
	m := regexp.MustCompile(`"\$ROOT/bin/dispatchctl" (keys create [^|)]*)`).FindSubmatch(run)
	require.NotNil(t, m, "run.sh makes its key with dispatchctl keys create")
	// bash splits the command line as run.sh's bash does.
	out, err := exec.Command("bash", "-c", `eval "set -- $1"; printf '%s\0' "$@"`, "bash", string(m[1])).Output()
	require.NoError(t, err)
	args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")

	pool, dsn := testenv.Pool(t)
	var stdout, stderr bytes.Buffer
	code := app.Main(context.Background(), app.Options{Args: args, Stdout: &stdout, Stderr: &stderr,
		Env: []string{"DATABASE_DSN=" + dsn}, Dir: t.TempDir()})
	require.Equal(t, app.ExitOK, code, "dispatchctl %q: %s", args, stderr.String())
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	tenant, err := store.AuthenticateAPIKey(context.Background(), pool, store.HashAPIKey(lines[len(lines)-1]))
	require.NoError(t, err)
	require.Equal(t, store.DefaultTenantID, tenant.ID, "make run's key is of tenant %q, which cannot read the dead-letter queues", tenant.Name)
}
