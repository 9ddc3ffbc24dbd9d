package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// receiptSecret signs the receipt-taking providers' deliveries and receipts.
const receiptSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// withProviders writes a providers file into the test's directory and
// points the processes at it; the file may use {sink} and {api} for the
// sink's and the API's base URLs.
func withProviders(yaml string, env ...string) func(s *stack) {
	return func(s *stack) {
		path := filepath.Join(s.t.TempDir(), "providers.yaml")
		yaml = strings.NewReplacer("{sink}", s.sinkURL, "{api}", s.apiURL).Replace(yaml)
		require.NoError(s.t, os.WriteFile(path, []byte(yaml), 0o600))
		s.env = append(s.env, "PROVIDERS_FILE="+path, "RECEIPTS_BASE_URL="+s.apiURL, "TEST_RECEIPT_SECRET="+receiptSecret)
		s.env = append(s.env, env...)
	}
}

// providerAttempt is one attempt of the log as the API shows it.
type providerAttempt struct {
	Attempt           int        `json:"attempt"`
	StartedAt         time.Time  `json:"startedAt"`
	DurationMS        int        `json:"durationMs"`
	Outcome           string     `json:"outcome"`
	Provider          string     `json:"provider"`
	ProviderMessageID string     `json:"providerMessageId"`
	Receipt           string     `json:"receipt"`
	ReceiptAt         *time.Time `json:"receiptAt"`
	// Channel is the channel the attempt went on.
	Channel string `json:"channel"`
}

func (s *stack) providerAttempts(id string) []providerAttempt {
	s.t.Helper()
	code, _, raw := s.request(http.MethodGet, "/v1/notifications/"+id+"/attempts", nil)
	require.Equal(s.t, http.StatusOK, code, string(raw))
	var page struct {
		Data []providerAttempt `json:"data"`
	}
	require.NoError(s.t, json.Unmarshal(raw, &page))
	return page.Data
}

// send posts one notification on channel and returns its id.
func (s *stack) send(channel, content string) string {
	s.t.Helper()
	body := map[string]any{"channel": channel, "recipient": "+15550100", "content": content}
	if channel == "email" {
		body["recipient"], body["subject"] = "someone@example.com", "Your code"
	}
	code, _, n := s.post("/v1/notifications", body)
	require.Equal(s.t, http.StatusAccepted, code, n)
	return n["id"].(string)
}

// breaker reads one provider's breaker from GET /v1/providers.
func (s *stack) breaker(name string) map[string]any {
	s.t.Helper()
	code, page := s.get("/v1/providers")
	require.Equal(s.t, http.StatusOK, code, page)
	for _, p := range page["data"].([]any) {
		if p := p.(map[string]any); p["name"] == name {
			b, _ := p["breaker"].(map[string]any)
			return b
		}
	}
	s.t.Fatalf("no provider %s in GET /v1/providers", name)
	return nil
}

const twoWebhooks = `
providers:
  - name: sms-primary
    kind: webhook
    url: {sink}/sms-primary
    timeout: 5s
  - name: sms-backup
    kind: webhook
    url: {sink}/sms-backup
    timeout: 5s
routes:
  sms: [sms-primary, sms-backup]
breaker:
  failureThreshold: 3
  openFor: 8s
`

// TestFailoverRoutesAroundAFailingProviderAndComesBack: a route of two
// webhook providers whose first fails always. The notification is
// delivered by the second at once (no backoff: the backoff here is 10s),
// the attempt log names both; once the breaker opened, notifications go
// straight to the second, through another worker process too (the breaker
// lives in Redis), with no request to the first while it is open; after it
// recovers, a half-open probe closes the breaker and traffic returns.
func TestFailoverRoutesAroundAFailingProviderAndComesBack(t *testing.T) {
	s := setupWith(t, withProviders(twoWebhooks, "RETRY_INITIAL_INTERVAL=10s", "RETRY_MAX_INTERVAL=20s", "DELIVERY_FAST_PATH=false"))
	s.sink.SetPathConfig("/sms-primary", sink.Config{FailRate: 1, FailStatus: http.StatusBadGateway})

	first := s.send("sms", "failover 1")
	s.waitStatus(first, "DELIVERED", 8*time.Second)
	log := s.providerAttempts(first)
	require.Len(t, log, 2, "one attempt at each provider")
	require.Equal(t, "sms-primary", log[0].Provider)
	require.Equal(t, "retry", log[0].Outcome)
	require.Equal(t, "sms-backup", log[1].Provider)
	require.Equal(t, "delivered", log[1].Outcome)
	firstEnded := log[0].StartedAt.Add(time.Duration(log[0].DurationMS) * time.Millisecond)
	require.Less(t, log[1].StartedAt.Sub(firstEnded), 4*time.Second, "failover does not wait out the 5-10s backoff")
	_, n := s.get("/v1/notifications/" + first)
	require.Equal(t, "sms-backup", n["provider"])

	// Two more failures open the breaker (threshold 3).
	for i := range 2 {
		s.waitStatus(s.send("sms", "failover "+strconv.Itoa(i+2)), "DELIVERED", 8*time.Second)
	}
	b := s.breaker("sms-primary")
	require.Equal(t, "open", b["state"], b)
	require.Equal(t, "closed", s.breaker("sms-backup")["state"])

	// Another worker process sees the same breaker: with the first one
	// stopped, it sends nothing to the open provider.
	s.worker.Stop()
	s.env = append(s.env, "WORKER_METRICS_PORT="+strconv.Itoa(freePort(t)))
	s.worker = s.start("worker")
	before := s.sink.PathStats("/sms-primary").Requests
	var ids []string
	for i := range 3 {
		ids = append(ids, s.send("sms", "while open "+strconv.Itoa(i)))
	}
	for _, id := range ids {
		s.waitStatus(id, "DELIVERED", 10*time.Second)
		log := s.providerAttempts(id)
		require.Len(t, log, 1)
		require.Equal(t, "sms-backup", log[0].Provider, "straight to the backup while the primary's breaker is open")
	}
	require.Equal(t, "open", s.breaker("sms-primary")["state"], "still open (openFor 8s)")
	require.Equal(t, before, s.sink.PathStats("/sms-primary").Requests, "no request reaches an open provider")

	// The primary recovers; once the breaker half-opens, a probe closes it.
	s.sink.SetPathConfig("/sms-primary", sink.Config{})
	require.Eventually(t, func() bool {
		id := s.send("sms", "after recovery")
		s.waitStatus(id, "DELIVERED", 10*time.Second)
		return s.providerAttempts(id)[0].Provider == "sms-primary"
	}, 20*time.Second, 500*time.Millisecond, "traffic returns to the primary")
	require.Equal(t, "closed", s.breaker("sms-primary")["state"])
	last := s.send("sms", "closed again")
	s.waitStatus(last, "DELIVERED", 8*time.Second)
	require.Equal(t, "sms-primary", s.providerAttempts(last)[0].Provider)
}

const receiptProviders = `
providers:
  - name: push-primary
    kind: webhook
    url: {sink}/push-primary
    secret: ${TEST_RECEIPT_SECRET}
    awaitReceipt: 30s
  - name: push-backup
    kind: webhook
    url: {sink}/push-backup
    secret: ${TEST_RECEIPT_SECRET}
    awaitReceipt: 30s
routes:
  push: [push-primary, push-backup]
`

// signedReceipt posts a receipt for id to provider, signed with secret.
func (s *stack) signedReceipt(provider, secret, id, status string) (int, map[string]any) {
	s.t.Helper()
	body, _ := json.Marshal(map[string]string{"webhookId": id, "status": status})
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(s.t, err)
	msgID, now := "rcpt_test_"+id, time.Now()
	sig, err := wh.Sign(msgID, now, body)
	require.NoError(s.t, err)
	code, _, raw := s.request(http.MethodPost, "/v1/receipts/"+provider, body,
		"Content-Type", "application/json", "webhook-id", msgID, "webhook-timestamp", strconv.FormatInt(now.Unix(), 10),
		"webhook-signature", sig, "Authorization", "")
	return code, decodeJSON(s.t, raw)
}

// TestReceiptsDecideDelivery: with awaitReceipt, a 2xx makes the
// notification SENT until the provider's signed receipt; a receipt with a
// bad signature is refused and changes nothing; a "failed" receipt fails
// over to the next provider; a late receipt changes nothing.
func TestReceiptsDecideDelivery(t *testing.T) {
	s := setupWith(t, withProviders(receiptProviders))

	// No receipt yet: SENT, and a forged one is refused.
	id := s.send("push", "receipt 1")
	s.waitStatus(id, "SENT", 10*time.Second)
	code, _ := s.signedReceipt("push-primary", "whsec_"+strings.Repeat("A", 32), id, "delivered")
	require.Equal(t, http.StatusUnauthorized, code)
	_, n := s.get("/v1/notifications/" + id)
	require.Equal(t, "SENT", n["status"], "a refused receipt changes nothing")
	code, _ = s.signedReceipt("push-primary", receiptSecret, "0195b5f2-7f00-7000-8000-000000000000", "delivered")
	require.Equal(t, http.StatusNotFound, code, "a receipt for an unknown id")

	code, body := s.signedReceipt("push-primary", receiptSecret, id, "delivered")
	require.Equal(t, http.StatusAccepted, code, body)
	n = s.waitStatus(id, "DELIVERED", 10*time.Second)
	require.Equal(t, "delivered", n["receipt"])
	log := s.providerAttempts(id)
	require.Len(t, log, 1)
	require.Equal(t, "delivered", log[0].Receipt)
	require.NotNil(t, log[0].ReceiptAt)

	// A late, repeated receipt changes nothing.
	code, body = s.signedReceipt("push-primary", receiptSecret, id, "failed")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, false, body["applied"])
	_, n = s.get("/v1/notifications/" + id)
	require.Equal(t, "DELIVERED", n["status"])

	// The primary reports failure on its own (the sink sends the receipt):
	// the notification fails over to the backup, whose receipt delivers it.
	s.sink.SetPathConfig("/push-primary", sink.Config{Receipts: &sink.Receipts{URL: s.apiURL + "/v1/receipts/", Secret: receiptSecret, Status: "failed", Reason: "unregistered device"}})
	s.sink.SetPathConfig("/push-backup", sink.Config{Receipts: &sink.Receipts{URL: s.apiURL + "/v1/receipts/", Secret: receiptSecret}})
	id = s.send("push", "receipt 2")
	n = s.waitStatus(id, "DELIVERED", 15*time.Second)
	require.Equal(t, "push-backup", n["provider"])
	log = s.providerAttempts(id)
	require.Len(t, log, 2)
	require.Equal(t, "push-primary", log[0].Provider)
	require.Equal(t, "failed", log[0].Receipt)
	require.Equal(t, "push-backup", log[1].Provider)
	require.Equal(t, "delivered", log[1].Receipt)
}

// signedReceiptFor posts a receipt naming message messageID (none when
// empty) of notification id to provider, signed with receiptSecret.
func (s *stack) signedReceiptFor(provider, id, messageID, status string) (int, map[string]any) {
	s.t.Helper()
	receipt := map[string]string{"webhookId": id, "status": status}
	if messageID != "" {
		receipt["messageId"] = messageID
	}
	body, _ := json.Marshal(receipt)
	wh, err := standardwebhooks.NewWebhook(receiptSecret)
	require.NoError(s.t, err)
	msgID, now := "rcpt_test_"+messageID+"_"+status, time.Now()
	sig, err := wh.Sign(msgID, now, body)
	require.NoError(s.t, err)
	code, _, raw := s.request(http.MethodPost, "/v1/receipts/"+provider, body,
		"Content-Type", "application/json", "webhook-id", msgID, "webhook-timestamp", strconv.FormatInt(now.Unix(), 10),
		"webhook-signature", sig, "Authorization", "")
	return code, decodeJSON(s.t, raw)
}

// TestALateReceiptForAnEarlierAttemptChangesNothing: the provider took
// attempt 1 but answered too late (a timeout, so the workflow made attempt
// 2, which the provider took too). A "failed" receipt about attempt 1's
// message, coming while attempt 2 awaits its own, changes nothing (200,
// applied false): no failover, no FAILED. A receipt naming no message is
// refused as ambiguous (409). Attempt 2's receipt delivers it.
func TestALateReceiptForAnEarlierAttemptChangesNothing(t *testing.T) {
	s := setupWith(t, withProviders(`
providers:
  - name: push-primary
    kind: webhook
    url: {sink}/push-primary
    secret: ${TEST_RECEIPT_SECRET}
    timeout: 1s
    awaitReceipt: 30s
    onNoReceipt: failed
routes:
  push: [push-primary]
`, "RETRY_INITIAL_INTERVAL=200ms", "RETRY_MAX_INTERVAL=500ms", "DELIVERY_FAST_PATH=false"))
	s.sink.SetPathConfig("/push-primary", sink.Config{HangFirst: 1})

	id := s.send("push", "late receipts")
	n := s.waitStatus(id, "SENT", 15*time.Second)
	require.EqualValues(t, 2, n["attempts"])
	first, second := id+".1", id+".2"
	log := s.providerAttempts(id)
	require.Len(t, log, 2)
	require.Equal(t, "retry", log[0].Outcome)
	require.Equal(t, first, log[0].ProviderMessageID)
	require.Equal(t, second, log[1].ProviderMessageID)
	rec, ok := s.sink.Record(id)
	require.True(t, ok)
	require.Equal(t, second, rec.Headers.Get("X-Dispatch-Message-Id"))

	for _, status := range []string{"failed", "delivered"} {
		code, body := s.signedReceiptFor("push-primary", id, first, status)
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, false, body["applied"], body)
	}
	code, body := s.signedReceiptFor("push-primary", id, "", "failed")
	require.Equal(t, http.StatusConflict, code, body)
	require.Equal(t, "/problems/ambiguous-receipt", body["type"])
	_, n = s.get("/v1/notifications/" + id)
	require.Equal(t, "SENT", n["status"], "nothing changed")

	code, body = s.signedReceiptFor("push-primary", id, second, "delivered")
	require.Equal(t, http.StatusAccepted, code, body)
	require.Equal(t, true, body["applied"])
	n = s.waitStatus(id, "DELIVERED", 10*time.Second)
	require.EqualValues(t, 2, n["attempts"])
	log = s.providerAttempts(id)
	require.Empty(t, log[0].Receipt, "the late receipts were not recorded on attempt 1")
	require.Equal(t, "delivered", log[1].Receipt)
}

// mailProviders is a providers file routing email to the real SMTP server
// on port through the smtp provider "mail".
func mailProviders(port int) string {
	return `
providers:
  - name: mail
    kind: smtp
    host: 127.0.0.1
    port: ` + strconv.Itoa(port) + `
    from: Dispatch <noreply@example.com>
routes:
  email: [mail]
`
}

// TestEmailArrivesThroughARealSMTPServer: an smtp provider sends the email
// to a real SMTP server, which receives it with the right headers.
func TestEmailArrivesThroughARealSMTPServer(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mail.Arrivals(4)

	s := setupWith(t, withProviders(mailProviders(port)))
	id := s.send("email", "Your code is 424242")
	s.waitStatus(id, "DELIVERED", 10*time.Second)
	select {
	case <-arrivals:
	case <-time.After(5 * time.Second):
		t.Fatal("no email arrived")
	}
	msgs := mail.ByMessageID("<" + id + "@example.com>")
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, []string{"someone@example.com"}, m.To)
	require.Contains(t, m.Header.Get("From"), "noreply@example.com")
	require.Equal(t, "Your code", m.Header.Get("Subject"))
	require.Equal(t, id, m.Header.Get("X-Dispatch-Notification-Id"))
	require.Contains(t, m.Body, "Your code is 424242")
	log := s.providerAttempts(id)
	require.Len(t, log, 1)
	require.Equal(t, "mail", log[0].Provider)
	require.Equal(t, "<"+id+"@example.com>", log[0].ProviderMessageID)
}

// TestProvidersListsBreakersWithoutSecrets: GET /v1/providers shows each
// provider, its channels and breaker, and never a credential.
func TestProvidersListsBreakersWithoutSecrets(t *testing.T) {
	s := setupWith(t, withProviders(receiptProviders))
	code, _, raw := s.request(http.MethodGet, "/v1/providers", nil)
	require.Equal(t, http.StatusOK, code)
	require.False(t, bytes.Contains(raw, []byte(strings.TrimPrefix(receiptSecret, "whsec_"))), "no secret in the answer")
	b := s.breaker("push-primary")
	require.Equal(t, "closed", b["state"])
	code, _, _ = s.request(http.MethodGet, "/v1/providers", nil, "Authorization", "Bearer wrong")
	require.Equal(t, http.StatusUnauthorized, code)
}

// TestTwilioStatusCallbacksAreReceipts: a twilio provider sends through the
// Messages API (a fake Twilio, the outside world) and takes its signed
// status callbacks as receipts: delivered → DELIVERED; undelivered with no
// other provider on the route → FAILED (undelivered).
func TestTwilioStatusCallbacksAreReceipts(t *testing.T) {
	fake := sink.NewTwilioFake(sink.TwilioFakeConfig{AccountSID: "AC0123456789abcdef0123456789abcdef", AuthToken: "twilio-test-token"})
	t.Cleanup(fake.Close)
	ts := httptest.NewServer(fake)
	t.Cleanup(ts.Close)
	srv := ts.URL
	s := setupWith(t, withProviders(`
providers:
  - name: tw
    kind: twilio
    url: `+srv+`
    accountSid: AC0123456789abcdef0123456789abcdef
    authToken: ${TEST_TWILIO_TOKEN}
    from: "+15550001111"
    awaitReceipt: 30s
routes:
  sms: [tw]
`, "TEST_TWILIO_TOKEN=twilio-test-token"))

	id := s.send("sms", "twilio 1")
	n := s.waitStatus(id, "DELIVERED", 15*time.Second)
	require.Equal(t, "delivered", n["receipt"])
	log := s.providerAttempts(id)
	require.Len(t, log, 1)
	require.True(t, strings.HasPrefix(log[0].ProviderMessageID, "SM"), log[0].ProviderMessageID)
	msgs := fake.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, "+15550100", msgs[0].To)
	require.Equal(t, s.apiURL+"/v1/receipts/tw?attempt=1&notification="+id, msgs[0].StatusCallback)

	fake.SetConfig(sink.TwilioFakeConfig{AccountSID: "AC0123456789abcdef0123456789abcdef", AuthToken: "twilio-test-token", Final: "undelivered"})
	id = s.send("sms", "twilio 2")
	n = s.waitStatus(id, "FAILED", 15*time.Second)
	require.Equal(t, "undelivered", n["failureReason"])
}
