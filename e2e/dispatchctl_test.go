package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// dispatchctl runs one dispatchctl command line in-process against the
// stack, configured through the environment as an operator would be.
func (s *stack) dispatchctl(args ...string) (code int, stdout, stderr string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := s.t.TempDir()
	require.NoError(s.t, os.Mkdir(filepath.Join(dir, ".git"), 0o755)) // no key file is looked for above it
	var out, errOut bytes.Buffer
	code = app.Main(ctx, app.Options{
		Args:   append([]string{"--poll-interval", "100ms"}, args...),
		Stdout: &out, Stderr: &errOut,
		Env: []string{"DISPATCH_URL=" + s.apiURL, "DISPATCH_API_KEY=" + s.apiKey},
		Dir: dir,
	})
	s.t.Logf("dispatchctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestDispatchctlSendWaitDeliversAndPrintsTheResult(t *testing.T) {
	s := setup(t)

	code, stdout, stderr := s.dispatchctl("send", "--json", "--wait", "--wait-timeout", "45s",
		"--channel", "sms", "--to", "+14155550123", "--content", "hi from dispatchctl", "--idempotency-key", "dispatchctl-e2e-1")

	require.Equal(t, app.ExitOK, code, stderr)
	var n struct {
		ID, Status, IdempotencyKey string
		Attempts                   int
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &n), stdout)
	require.Equal(t, "DELIVERED", n.Status)
	require.Equal(t, "dispatchctl-e2e-1", n.IdempotencyKey)
	require.Equal(t, 1, n.Attempts)
	rec, ok := s.sink.Record(n.ID)
	require.True(t, ok, "the provider got it")
	require.Equal(t, 1, rec.Delivered)
	require.Contains(t, string(rec.Body), "hi from dispatchctl")

	code, stdout, _ = s.dispatchctl("attempts", n.ID)
	require.Equal(t, app.ExitOK, code)
	require.Regexp(t, `(?m)^1\s+\S+\s+\d+ms\s+200\s+delivered\s`, stdout)

	// The same command again is a replay: the same notification, not a second one.
	code, stdout, stderr = s.dispatchctl("send", "--channel", "sms", "--to", "+14155550123", "--content", "hi from dispatchctl", "--idempotency-key", "dispatchctl-e2e-1")
	require.Equal(t, app.ExitOK, code)
	require.Contains(t, stderr, "replayed: notification "+n.ID)
	require.Regexp(t, `(?m)^status\s+DELIVERED$`, stdout)
}

func TestDispatchctlSendWaitExitsOneWhenTheProviderRefuses(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})

	code, stdout, stderr := s.dispatchctl("send", "--wait", "--wait-timeout", "45s", "--channel", "sms", "--to", "+14155550123", "--content", "refused")

	require.Equal(t, app.ExitFailed, code, stderr)
	require.Regexp(t, `(?m)^status\s+FAILED$`, stdout)
	require.Regexp(t, `(?m)^error: notification \S+ ended FAILED \(permanent\)`, stderr)

	code, _, stderr = s.dispatchctl("send", "--channel", "sms", "--to", "not-a-number", "--content", "x")
	require.Equal(t, app.ExitFailed, code)
	require.Regexp(t, `^error: 422 Validation failed\n  recipient: .+\n.+\nrequest id: \S+\n$`, stderr)
}
