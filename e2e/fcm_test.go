package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// TestFCMDeliversWithOneTokenExchangeAndSuppressesAnUnregisteredToken:
// push routed to an fcm provider (a fake FCM HTTP v1 API with its OAuth2
// token endpoint, the outside world). A push to a token FCM answers
// UNREGISTERED ends FAILED permanent and suppresses the token
// (unregistered), so the next one to it is SKIPPED without a request; a
// push to a live token is DELIVERED, its attempt naming the message FCM
// made and its data the notification's id. One token was bought for both
// sends, with a grant the fake verified against the service account's key.
func TestFCMDeliversWithOneTokenExchangeAndSuppressesAnUnregisteredToken(t *testing.T) {
	key, public, err := sink.NewFCMServiceAccount("dispatch-e2e", "")
	require.NoError(t, err)
	fake := sink.NewFCMFake(sink.FCMFakeConfig{
		ProjectID: "dispatch-e2e", ClientEmail: "dispatch@dispatch-e2e.iam.gserviceaccount.com", PublicKey: public,
	})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	keyFile := filepath.Join(t.TempDir(), "service-account.json")
	require.NoError(t, os.WriteFile(keyFile, key, 0o600))

	s := setupWith(t, withProviders(`
providers:
  - name: android
    kind: fcm
    credentialsFile: ${TEST_FCM_CREDENTIALS_FILE}
    baseURL: `+srv.URL+`
    tokenURL: `+srv.URL+`/token
    timeout: 5s
routes:
  push: [android]
`, "TEST_FCM_CREDENTIALS_FILE="+keyFile))

	dead := map[string]any{"channel": "push", "recipient": "dead-1", "content": "hello"}
	first := s.accepted(dead)
	n := s.waitStatus(first, "FAILED", 30*time.Second)
	require.Equal(t, "permanent", n["failureReason"], n)
	sends := fake.Sends()
	require.Len(t, sends, 1)
	require.Equal(t, http.StatusNotFound, sends[0].Status)

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
	require.Len(t, fake.Sends(), 1, "no request for a suppressed token")

	live := s.accepted(map[string]any{"channel": "push", "recipient": "tok-ok", "content": "shipped",
		"metadata": map[string]any{"collapseKey": "order-7", "data": map[string]any{"orderId": "7"}}})
	s.waitStatus(live, "DELIVERED", 30*time.Second)
	sends = fake.Sends()
	require.Len(t, sends, 2)
	got := sends[1]
	require.Equal(t, http.StatusOK, got.Status)
	require.Equal(t, "tok-ok", got.Token)
	require.Equal(t, "shipped", got.Body)
	require.Equal(t, map[string]string{provider.FCMDataID: live, provider.FCMDataAttempt: "1", "orderId": "7"}, got.Data)
	require.Equal(t, "order-7", got.CollapseKey)
	log := s.providerAttempts(live)
	require.Len(t, log, 1)
	require.Equal(t, "android", log[0].Provider)
	require.Equal(t, got.Name, log[0].ProviderMessageID, "the message's name FCM answered")

	require.Equal(t, 1, fake.Exchanges(), "one token bought for both sends")
	require.Zero(t, fake.Refused())

	// The service account's key reaches no history.
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	require.NoError(t, json.Unmarshal(key, &sa))
	keyLine := strings.Split(sa.PrivateKey, "\n")[1]
	for _, id := range []string{first, live} {
		require.NotContains(t, s.historyOf(id), keyLine)
	}
}
