package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// TestSendGridEventBatchesDeliverAndBounce: email routed to a sendgrid
// provider (a fake SendGrid, the outside world) with awaitReceipt, so a
// message SendGrid took is SENT until its Event Webhook settles it. A
// forged batch is refused and changes nothing; the signed batch (four
// events, out of order) delivers one notification and bounces the other,
// which ends FAILED undelivered and suppresses its address (bounced), so
// the next email to it is SKIPPED without a request to SendGrid.
func TestSendGridEventBatchesDeliverAndBounce(t *testing.T) {
	const apiKey = "SG.e2e-test-key"
	fake, err := sink.NewSendGridFake(sink.SendGridFakeConfig{APIKey: apiKey, Hold: true}, nil)
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	s := setupWith(t, withProviders(`
providers:
  - name: sg
    kind: sendgrid
    baseURL: `+srv.URL+`
    apiKey: ${TEST_SENDGRID_KEY}
    from: Dispatch <noreply@example.com>
    eventPublicKey: `+fake.PublicKey()+`
    timeout: 5s
    awaitReceipt: 60s
routes:
  email: [sg]
`, "TEST_SENDGRID_KEY="+apiKey))
	fake.SetConfig(sink.SendGridFakeConfig{APIKey: apiKey, Hold: true, EventsURL: s.apiURL + "/v1/receipts/sg"})

	email := func(to string) map[string]any {
		return map[string]any{"channel": "email", "recipient": to, "subject": "Your code", "content": "It is 123456."}
	}
	ada, bob := s.accepted(email("ada@example.com")), s.accepted(email("bounce-bob@example.com"))
	s.waitStatus(ada, "SENT", 30*time.Second)
	s.waitStatus(bob, "SENT", 30*time.Second)
	msgs := fake.Messages()
	require.Len(t, msgs, 2)
	for _, m := range msgs {
		require.Contains(t, []string{ada, bob}, m.CustomArgs["dispatch_id"])
		require.Equal(t, "1", m.CustomArgs["dispatch_attempt"])
		require.Equal(t, "<"+m.CustomArgs["dispatch_id"]+"@example.com>", m.Headers["Message-ID"])
	}
	require.Equal(t, 4, fake.Pending(), "processed and delivered or bounce, for each")

	// A forged batch: ada bounced, under a signature of another body.
	forged, err := json.Marshal([]map[string]any{{"event": "bounce", "type": "bounce", "email": "ada@example.com",
		"timestamp": time.Now().Unix(), "dispatch_id": ada, "dispatch_attempt": "1"}})
	require.NoError(t, err)
	ts, sig := fake.Sign([]byte(`[]`))
	code, _, raw := s.request(http.MethodPost, "/v1/receipts/sg", forged, "Content-Type", "application/json",
		provider.SendGridTimestampHeader, ts, provider.SendGridSignatureHeader, sig)
	require.Equal(t, http.StatusUnauthorized, code, string(raw))
	require.Contains(t, string(raw), "does not verify")
	n := s.waitStatus(ada, "SENT", time.Second)
	require.Nil(t, n["receipt"], n)
	code, page := s.get("/v1/suppressions?channel=email")
	require.Equal(t, http.StatusOK, code, page)
	require.Empty(t, page["data"], "the forged batch suppressed nothing")

	status, err := fake.Flush()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)

	n = s.waitStatus(ada, "DELIVERED", 15*time.Second)
	require.Equal(t, "delivered", n["receipt"], n)
	n = s.waitStatus(bob, "FAILED", 15*time.Second)
	require.Equal(t, "undelivered", n["failureReason"], n)
	log := s.providerAttempts(bob)
	require.Len(t, log, 1)
	require.Equal(t, "failed", log[0].Receipt)
	code, _, raw = s.request(http.MethodGet, "/v1/notifications/"+bob+"/attempts", nil)
	require.Equal(t, http.StatusOK, code, string(raw))
	require.Contains(t, string(raw), "bounce: 5.1.1")
	require.NotContains(t, strings.ToLower(string(raw)), "bounce-bob@example.com", "the bounce's text names the address")

	code, page = s.get("/v1/suppressions?channel=email")
	require.Equal(t, http.StatusOK, code, page)
	data := page["data"].([]any)
	require.Len(t, data, 1, page)
	entry := data[0].(map[string]any)
	require.Equal(t, "bounce-bob@example.com", entry["recipient"])
	require.Equal(t, "bounced", entry["reason"])
	require.Equal(t, bob, entry["notificationId"])

	next := s.accepted(email("bounce-bob@example.com"))
	s.skipped(next, "suppressed")
	require.Len(t, fake.Messages(), 2, "no request to SendGrid")

	for name, text := range map[string]string{"ada's history": s.historyOf(ada), "bob's history": s.historyOf(bob),
		"the worker's log": s.worker.Output(), "the API's log": s.api.Output()} {
		require.NotContains(t, text, apiKey, name)
		require.NotContains(t, text, "bounce-bob@example.com", name)
	}
}
