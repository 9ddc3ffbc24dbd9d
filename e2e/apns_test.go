package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// TestAPNsDeliversOverHTTP2AndSuppressesAnUnregisteredToken: push routed
// to an apns provider (a fake APNs over TLS and HTTP/2, the outside world,
// trusted through caFile). A push to a token APNs answers 410 Unregistered
// ends FAILED permanent and suppresses the token (unregistered), so the
// next one to it is SKIPPED without a request; a push to a live token is
// DELIVERED over HTTP/2, its apns-id and dispatchId the notification's id.
// (The API takes a subject for email only, so these pushes have no title.)
func TestAPNsDeliversOverHTTP2AndSuppressesAnUnregisteredToken(t *testing.T) {
	p8, public, err := sink.GenerateAPNsKey()
	require.NoError(t, err)
	fake := sink.NewAPNsFake(sink.APNsFakeConfig{PublicKey: public, TeamID: "TEAM012345", KeyID: "KEY0123456", Topic: "com.example.app"})
	srv, err := sink.StartAPNs("127.0.0.1:0", fake)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	dir := t.TempDir()
	keyFile, caFile := filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(keyFile, p8, 0o600))
	require.NoError(t, os.WriteFile(caFile, srv.CA, 0o600))

	s := setupWith(t, withProviders(`
providers:
  - name: ios
    kind: apns
    teamId: TEAM012345
    keyId: KEY0123456
    keyFile: ${TEST_APNS_KEY_FILE}
    topic: com.example.app
    environment: sandbox
    baseURL: `+srv.URL+`
    caFile: ${TEST_APNS_CA_FILE}
    timeout: 5s
routes:
  push: [ios]
`, "TEST_APNS_KEY_FILE="+keyFile, "TEST_APNS_CA_FILE="+caFile))

	dead := map[string]any{"channel": "push", "recipient": "dead-1", "content": "hello"}
	first := s.accepted(dead)
	n := s.waitStatus(first, "FAILED", 30*time.Second)
	require.Equal(t, "permanent", n["failureReason"], n)
	pushes := fake.Pushes()
	require.Len(t, pushes, 1)
	require.Equal(t, http.StatusGone, pushes[0].Status)

	code, page := s.get("/v1/suppressions?channel=push")
	require.Equal(t, http.StatusOK, code, page)
	data := page["data"].([]any)
	require.Len(t, data, 1, page)
	entry := data[0].(map[string]any)
	require.Equal(t, "dead-1", entry["recipient"])
	require.Equal(t, "unregistered", entry["reason"])
	require.Equal(t, first, entry["notificationId"])

	second := s.accepted(dead)
	s.skipped(second, "suppressed")
	require.Len(t, fake.Pushes(), 1, "no request for a suppressed token")

	live := s.accepted(map[string]any{"channel": "push", "recipient": "a1b2c3d4e5f6", "content": "shipped"})
	s.waitStatus(live, "DELIVERED", 30*time.Second)
	log := s.providerAttempts(live)
	require.Len(t, log, 1)
	require.Equal(t, "ios", log[0].Provider)
	require.Equal(t, live, log[0].ProviderMessageID, "the apns-id APNs answered, which is the notification's id")
	pushes = fake.Pushes()
	require.Len(t, pushes, 2)
	got := pushes[1]
	require.Equal(t, "HTTP/2.0", got.Proto)
	require.Equal(t, http.StatusOK, got.Status)
	require.Equal(t, "a1b2c3d4e5f6", got.Token)
	require.Equal(t, live, got.DispatchID)
	require.Equal(t, "shipped", got.Body)
	require.Equal(t, "alert", got.PushType)

	// Neither the .p8 key nor a provider token reaches a history.
	keyLine := strings.Split(string(p8), "\n")[1]
	for _, id := range []string{first, live} {
		history := s.historyOf(id)
		require.NotContains(t, history, keyLine)
		require.NotContains(t, history, got.JWT)
	}
}
