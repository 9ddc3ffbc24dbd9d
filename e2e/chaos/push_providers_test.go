//go:build chaos

package chaos

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// fcmRoutes sends push through an fcm provider (the suite's fake FCM with
// its OAuth2 token endpoint) and sms and email to the sink's webhook.
const fcmRoutes = `
providers:
  - name: android
    kind: fcm
    credentialsFile: ${CHAOS_FCM_CREDENTIALS_FILE}
    baseURL: ${CHAOS_FCM_URL}
    tokenURL: ${CHAOS_FCM_URL}/token
    timeout: 2s
  - {name: hook, kind: webhook, url: "${CHAOS_SINK_URL}/webhook"}
routes:
  push: [android]
  sms: [hook]
  email: [hook]
breaker:
  failureThreshold: 3
  openFor: 2s
`

// TestFCMAuthOutageMidStream: under the stream, FCM revokes every access
// token and refuses every new grant for 6 s (a key whose permissions were
// pulled, then restored), while the worker is killed. Each push sent then
// fails as the provider's fault, the breaker opens, and the pushes wait;
// once grants are taken again, a new token is bought and every push is
// delivered: nothing lost, nothing FAILED.
func TestFCMAuthOutageMidStream(t *testing.T) {
	key, public, err := sink.NewFCMServiceAccount("dispatch-chaos", "")
	require.NoError(t, err)
	cfg := sink.FCMFakeConfig{ProjectID: "dispatch-chaos", ClientEmail: "dispatch@dispatch-chaos.iam.gserviceaccount.com",
		PublicKey: public, RetryAfter: time.Second}
	fake := sink.NewFCMFake(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	keyFile, providers := filepath.Join(dir, "service-account.json"), filepath.Join(dir, "providers.yaml")
	require.NoError(t, os.WriteFile(keyFile, key, 0o600))
	require.NoError(t, os.WriteFile(providers, []byte(fcmRoutes), 0o600))

	s := newStack(t, "PROVIDERS_FILE="+providers, "CHAOS_FCM_CREDENTIALS_FILE="+keyFile, "CHAOS_FCM_URL="+srv.URL)
	s.taken = func(id string) int {
		n := 0
		for _, send := range fake.Sends() {
			if send.Status == http.StatusOK && send.Data["dispatchId"] == id {
				n++
			}
		}
		return n
	}
	_, _, r := s.play("fcm revokes tokens, refuses grants 6s", func(s *stack) {
		refusing := cfg
		refusing.RefuseGrants = true
		fake.SetConfig(refusing)
		fake.RevokeTokens()
		time.Sleep(3 * time.Second)
		s.worker.Kill()
		s.worker = s.start("worker")
		time.Sleep(3 * time.Second)
		fake.SetConfig(cfg)
	})
	require.Positive(t, fake.Refused(), "grants were refused during the outage")
	require.GreaterOrEqual(t, fake.Exchanges(), 2, "a new token was bought after it")
	require.Zero(t, r.Failed, "an auth outage fails no notification")
	require.LessOrEqual(t, r.Duplicates, (len(channels)+1)*workerConcurrency,
		"only calls in flight when the worker died went twice")
}
