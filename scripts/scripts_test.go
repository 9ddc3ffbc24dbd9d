// Package scripts_test tests the shell helpers the project's scripts share
// (lib.sh), by running them with bash.
package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
