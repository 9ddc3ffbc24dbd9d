package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// attempted records attempt of id at providerName with outcome, its
// message id our per-attempt one unless messageID is given.
func (f *fixture) attempted(id uuid.UUID, attempt int, providerName string, outcome workflows.Outcome, status notification.Status, messageID ...string) {
	f.t.Helper()
	mid := notification.MessageID(id.String(), attempt)
	if len(messageID) > 0 {
		mid = messageID[0]
	}
	a := store.Attempt{NotificationID: id, Attempt: attempt, StartedAt: time.Now(), DurationMS: 3, Outcome: string(outcome),
		Provider: &providerName, ProviderMessageID: &mid}
	require.NoError(f.t, store.FinishAttempt(context.Background(), f.pool, a, store.Transition{Status: status}))
}

// timedOutThenSent is a push notification whose attempt 1 at hook timed
// out (the provider may have taken it all the same) and whose attempt 2 at
// hook was taken: it is SENT, awaiting attempt 2's receipt.
func (f *fixture) timedOutThenSent() uuid.UUID {
	f.t.Helper()
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"device-token-1","content":"hi"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeRetry, notification.StatusRetrying)
	f.attempted(id, 2, "hook", workflows.OutcomeSent, notification.StatusSent)
	return id
}

// hookReceipt posts a signed receipt to the webhook provider hook.
func (f *fixture) hookReceipt(receipt map[string]string) (*http.Response, map[string]any) {
	f.t.Helper()
	body, err := json.Marshal(receipt)
	require.NoError(f.t, err)
	resp, raw := f.post("/v1/receipts/hook", string(body), signedReceipt(f.t, hookSecret, string(body))...)
	var answer map[string]any
	require.NoError(f.t, json.Unmarshal(raw, &answer), string(raw))
	return resp, answer
}

func TestAReceiptForAnEarlierAttemptIsNotApplied(t *testing.T) {
	f := setup(t, withProviders(t))
	id := f.timedOutThenSent()
	for _, status := range []string{"failed", "delivered"} {
		resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "messageId": notification.MessageID(id.String(), 1), "status": status})
		require.Equal(t, http.StatusOK, resp.StatusCode, answer)
		require.Equal(t, false, answer["applied"], answer)
	}
	require.Empty(t, f.signals.Calls(), "a receipt about attempt 1 never reaches the workflow awaiting attempt 2's")

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "messageId": notification.MessageID(id.String(), 2), "status": "failed", "reason": "gone"})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, answer)
	require.Equal(t, true, answer["applied"])
	calls := f.signals.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, workflows.Receipt{Provider: "hook", Status: "failed", Reason: "gone", Attempt: 2, MessageID: notification.MessageID(id.String(), 2)},
		calls[0].Arg)
}

func TestAReceiptNamingNoMessageIsRefusedWhenTheGenerationMadeSeveralAttemptsThere(t *testing.T) {
	f := setup(t, withProviders(t))
	id := f.timedOutThenSent()

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "failed"})

	require.Equal(t, http.StatusConflict, resp.StatusCode, answer)
	require.Equal(t, "/problems/ambiguous-receipt", answer["type"])
	require.Equal(t, "messageId", answer["errors"].([]any)[0].(map[string]any)["field"], answer)
	require.Empty(t, f.signals.Calls())
	status, err := store.GetStatus(context.Background(), f.pool, id)
	require.NoError(t, err)
	require.Equal(t, notification.StatusSent, status)
}

func TestAReceiptForAnEarlierGenerationIsNotApplied(t *testing.T) {
	f := setup(t, withProviders(t))
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"device-token-1","content":"hi"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeSent, notification.StatusSent)
	_, err := f.pool.Exec(context.Background(), `UPDATE notifications SET status = 'FAILED', failure_reason = 'no-receipt' WHERE id = $1`, id)
	require.NoError(t, err)
	_, _, err = store.RetryNotification(context.Background(), f.pool, id, nil)
	require.NoError(t, err)
	f.attempted(id, 2, "hook", workflows.OutcomeSent, notification.StatusSent)

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "messageId": notification.MessageID(id.String(), 1), "status": "failed"})
	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, false, answer["applied"])
	require.Empty(t, f.signals.Calls())

	// The generation made one attempt at hook: a receipt naming no message
	// is about it.
	resp, answer = f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "delivered"})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, answer)
	require.Equal(t, workflows.Receipt{Provider: "hook", Status: "delivered", Attempt: 2}, f.signals.Calls()[0].Arg)
}

func TestAReceiptBeforeItsAttemptWasRecordedWaitsForThatAttempt(t *testing.T) {
	f := setup(t, withProviders(t))
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"device-token-1","content":"hi"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeRetry, notification.StatusRetrying)
	_, _, err := store.BeginAttempt(context.Background(), f.pool, id, 2, false)
	require.NoError(t, err)

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "delivered"})
	require.Equal(t, http.StatusConflict, resp.StatusCode, "attempt 1 or the one in flight: %v", answer)

	resp, answer = f.hookReceipt(map[string]string{"messageId": notification.MessageID(id.String(), 2), "status": "delivered"})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, answer)
	require.Equal(t, workflows.Receipt{Provider: "hook", Status: "delivered", Attempt: 2, MessageID: notification.MessageID(id.String(), 2)},
		f.signals.Calls()[0].Arg)

	resp, answer = f.hookReceipt(map[string]string{"messageId": notification.MessageID(id.String(), 3), "status": "delivered"})
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "no attempt 3 was begun: %v", answer)
	resp, answer = f.hookReceipt(map[string]string{"webhookId": uuid.NewString(), "messageId": notification.MessageID(id.String(), 2), "status": "delivered"})
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, answer)
	require.Equal(t, "messageId", answer["errors"].([]any)[0].(map[string]any)["field"], answer)
	require.Len(t, f.signals.Calls(), 1)
}

func TestATwilioCallbackForAnEarlierMessageIsNotApplied(t *testing.T) {
	f := setup(t, withProviders(t))
	const sid1, sid2 = "SM0123456789abcdef0123456789abcde1", "SM0123456789abcdef0123456789abcde2"
	id := uuid.MustParse(f.create(`{"channel":"sms","recipient":"+14155550123","content":"hi"}`))
	f.attempted(id, 1, "tw", workflows.OutcomeRetry, notification.StatusRetrying, sid1)
	f.attempted(id, 2, "tw", workflows.OutcomeSent, notification.StatusSent, sid2)
	callback := func(sid, attempt string) (*http.Response, []byte) {
		path := "/v1/receipts/tw?" + url.Values{provider.TwilioCallbackParam: {id.String()}, "attempt": {attempt}}.Encode()
		form := url.Values{"MessageSid": {sid}, "MessageStatus": {"undelivered"}, "AccountSid": {"AC0123"}}
		return f.post(path, form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Authorization", "",
			"X-Twilio-Signature", provider.TwilioSignature(twilioToken, receiptsBase+path, form))
	}

	resp, raw := callback(sid1, "1")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.Contains(t, string(raw), `"applied":false`)
	require.Empty(t, f.signals.Calls())

	resp, raw = callback(sid2, "2")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(raw))
	require.Equal(t, 2, f.signals.Calls()[0].Arg.(workflows.Receipt).Attempt)

	// Before its SID was recorded, the callback URL names the attempt.
	resp, raw = callback("SM0123456789abcdef0123456789abcde3", "1")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	require.Len(t, f.signals.Calls(), 1)
}
