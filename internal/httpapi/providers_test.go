package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const (
	hookSecret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	twilioToken  = "twilio-token-for-tests"
	receiptsBase = "https://dispatch.example.com"
)

// withProviders gives the API a webhook provider "hook" that takes
// receipts, a twilio provider "tw", and their breakers in Redis.
func withProviders(t *testing.T) option {
	t.Helper()
	f, err := provider.Parse([]byte(`
providers:
  - {name: hook, kind: webhook, url: "https://user:pw@hooks.example.com/in?token=x", secret: "${HOOK_SECRET}", awaitReceipt: 30s}
  - {name: tw, kind: twilio, accountSid: AC0123, authToken: "${TW_TOKEN}", from: "+15550001111", awaitReceipt: 1m}
routes:
  push: [hook]
  sms: [tw]
`), func(k string) (string, bool) {
		return map[string]string{"HOOK_SECRET": hookSecret, "TW_TOKEN": twilioToken}[k], true
	})
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{WebhookURL: "http://127.0.0.1:9/webhook", Timeout: time.Second,
		ReceiptsURL: receiptsBase + "/v1/receipts/"})
	require.NoError(t, err)
	rdb, prefix := testenv.Redis(t)
	return withConfig(func(c *config) {
		c.Providers, c.Breakers, c.ReceiptsBaseURL = set, breaker.New(rdb, prefix, set.BreakerSettings()), receiptsBase
	})
}

// sent makes a notification SENT after an attempt at providerName.
func (f *fixture) sent(channel, providerName, messageID string) uuid.UUID {
	f.t.Helper()
	id := uuid.MustParse(f.create(`{"channel":"` + channel + `","recipient":"+14155550123","content":"hi"}`))
	a := store.Attempt{NotificationID: id, Attempt: 1, StartedAt: time.Now(), DurationMS: 3, Outcome: string(workflows.OutcomeSent),
		Provider: &providerName}
	if messageID != "" {
		a.ProviderMessageID = &messageID
	}
	require.NoError(f.t, store.FinishAttempt(context.Background(), f.pool, a, store.Transition{Status: notification.StatusSent}))
	return id
}

func signedReceipt(t *testing.T, secret string, body string) []string {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	now := time.Now()
	sig, err := wh.Sign("rcpt_1", now, []byte(body))
	require.NoError(t, err)
	return []string{"Content-Type", "application/json", "Authorization", "", "webhook-id", "rcpt_1",
		"webhook-timestamp", strconv.FormatInt(now.Unix(), 10), "webhook-signature", sig}
}

func TestProvidersShowsRoutesAndBreakersWithoutCredentials(t *testing.T) {
	f := setup(t, withProviders(t))
	resp, raw := f.get("/v1/providers")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.NotContains(t, string(raw), "pw@")
	require.NotContains(t, string(raw), "token=x")
	require.NotContains(t, string(raw), strings.TrimPrefix(hookSecret, "whsec_"))
	var page struct {
		Data []httpapiProvider `json:"data"`
	}
	require.NoError(t, json.Unmarshal(raw, &page))
	require.Equal(t, "hook", page.Data[0].Name)
	require.Equal(t, "https://hooks.example.com", page.Data[0].Target)
	require.Equal(t, []string{"push"}, page.Data[0].Channels)
	require.Equal(t, "closed", page.Data[0].Breaker.State)

	resp, _ = f.get("/v1/providers", "Authorization", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

type httpapiProvider struct {
	Name     string   `json:"name"`
	Target   string   `json:"target"`
	Channels []string `json:"channels"`
	Breaker  struct {
		State string `json:"state"`
	} `json:"breaker"`
}

func TestWithoutProvidersTheDefaultHasNoBreaker(t *testing.T) {
	f := setup(t)
	resp, raw := f.get("/v1/providers")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.Contains(t, string(raw), `"name":"default"`)
	require.Contains(t, string(raw), `"breaker":null`)
}

func TestASignedReceiptReachesTheWorkflow(t *testing.T) {
	f := setup(t, withProviders(t))
	id := f.sent("push", "hook", "")
	body := `{"webhookId":"` + id.String() + `","status":"bounced","reason":"unregistered"}`

	resp, raw := f.post("/v1/receipts/hook", body, signedReceipt(t, hookSecret, body)...)

	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	calls := f.signals.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, notification.WorkflowID(id.String()), calls[0].WorkflowID)
	require.Equal(t, workflows.ReceiptSignal, calls[0].Name)
	require.Equal(t, workflows.Receipt{Provider: "hook", Status: "failed", Reason: "unregistered", Attempt: 1}, calls[0].Arg,
		"a receipt naming no message is about the one attempt at the provider")
}

func TestAReceiptWithABadSignatureIsRefusedAndChangesNothing(t *testing.T) {
	f := setup(t, withProviders(t))
	id := f.sent("push", "hook", "")
	body := `{"webhookId":"` + id.String() + `","status":"delivered"}`
	headers := signedReceipt(t, "whsec_"+strings.Repeat("B", 32), body)

	resp, raw := f.post("/v1/receipts/hook", body, headers...)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, string(raw))
	resp, _ = f.post("/v1/receipts/hook", `{"webhookId":"`+id.String()+`","status":"failed"}`, signedReceipt(t, hookSecret, body)[:8]...)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no signature")
	require.Empty(t, f.signals.Calls())
	status, err := store.GetStatus(context.Background(), f.pool, id)
	require.NoError(t, err)
	require.Equal(t, notification.StatusSent, status)
}

func TestReceiptsForUnknownOrTerminalNotificationsChangeNothing(t *testing.T) {
	f := setup(t, withProviders(t))
	unknown := `{"webhookId":"` + uuid.NewString() + `","status":"delivered"}`
	resp, _ := f.post("/v1/receipts/hook", unknown, signedReceipt(t, hookSecret, unknown)...)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = f.post("/v1/receipts/nobody", unknown, signedReceipt(t, hookSecret, unknown)...)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "an unknown provider")

	id := f.sent("push", "hook", "")
	_, err := store.SettleReceipt(context.Background(), f.pool, id, 1, "delivered", "", notification.StatusDelivered)
	require.NoError(t, err)
	late := `{"webhookId":"` + id.String() + `","status":"failed"}`
	resp, raw := f.post("/v1/receipts/hook", late, signedReceipt(t, hookSecret, late)...)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.Contains(t, string(raw), `"applied":false`)
	require.Empty(t, f.signals.Calls())

	bad := `{"webhookId":"` + id.String() + `","status":"maybe"}`
	resp, raw = f.post("/v1/receipts/hook", bad, signedReceipt(t, hookSecret, bad)...)
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, string(raw))
	require.Contains(t, string(raw), `"status"`)
}

func TestATwilioStatusCallbackIsAReceipt(t *testing.T) {
	f := setup(t, withProviders(t))
	const sid = "SM0123456789abcdef0123456789abcdef"
	id := f.sent("sms", "tw", sid)
	path := "/v1/receipts/tw?notification=" + id.String()
	form := url.Values{"MessageSid": {sid}, "MessageStatus": {"delivered"}, "AccountSid": {"AC0123"}}
	sig := provider.TwilioSignature(twilioToken, receiptsBase+path, form)

	resp, raw := f.post(path, form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Authorization", "", "X-Twilio-Signature", sig)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	require.Equal(t, workflows.Receipt{Provider: "tw", Status: "delivered", Reason: "delivered", Attempt: 1, MessageID: sid}, f.signals.Calls()[0].Arg)

	resp, _ = f.post(path, form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Authorization", "", "X-Twilio-Signature", "AAAA")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	form.Set("MessageStatus", "sent") // not final
	sig = provider.TwilioSignature(twilioToken, receiptsBase+path, form)
	resp, raw = f.post(path, form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Authorization", "", "X-Twilio-Signature", sig)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.Len(t, f.signals.Calls(), 1)
}
