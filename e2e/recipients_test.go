package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// put sends body as JSON to path with PUT and decodes the answer.
func (s *stack) put(path string, body any) (int, map[string]any) {
	s.t.Helper()
	raw, err := json.Marshal(body)
	require.NoError(s.t, err)
	code, _, answer := s.request(http.MethodPut, path, raw, "Content-Type", "application/json")
	return code, decodeJSON(s.t, answer)
}

// accepted posts a notification and answers its id.
func (s *stack) accepted(body map[string]any) string {
	s.t.Helper()
	code, _, n := s.post("/v1/notifications", body)
	require.Equal(s.t, http.StatusAccepted, code, n)
	return n["id"].(string)
}

// channelAttempt is what a test of channels weighs of an attempt.
type channelAttempt struct {
	Attempt  int
	Channel  string
	Outcome  string
	Provider string
}

// channelAttempts is the attempt log (providerAttempts) as channelAttempts.
func (s *stack) channelAttempts(id string) []channelAttempt {
	s.t.Helper()
	var out []channelAttempt
	for _, a := range s.providerAttempts(id) {
		out = append(out, channelAttempt{Attempt: a.Attempt, Channel: a.Channel, Outcome: a.Outcome, Provider: a.Provider})
	}
	return out
}

// skipped waits until the notification is SKIPPED for reason, and checks
// that nothing was attempted and that its run completed, its search
// attribute saying SKIPPED.
func (s *stack) skipped(id, reason string) {
	s.t.Helper()
	n := s.waitStatus(id, "SKIPPED", 30*time.Second)
	require.Equal(s.t, reason, n["skipReason"], n)
	require.EqualValues(s.t, 0, n["attempts"], n)
	require.Empty(s.t, s.channelAttempts(id))
	status, _ := s.closedRun(id)
	require.Equal(s.t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, status)
	desc, err := s.temporal.DescribeWorkflow(context.Background(), "notification-"+id, "")
	require.NoError(s.t, err)
	attr := desc.RawResponse.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()["NotificationStatus"]
	require.Contains(s.t, string(attr.GetData()), "SKIPPED")
}

const fallbackProviders = `
providers:
  - name: push-hook
    kind: webhook
    url: {sink}/push
  - name: sms-hook
    kind: webhook
    url: {sink}/sms
routes:
  push: [push-hook]
  sms: [sms-hook]
  email: [sms-hook]
`

// A profile's notification on ["push","sms"] whose push is refused for
// good falls back to sms in the same notification and run; each attempt
// names its channel, and the push went to each of the profile's tokens.
func TestAProfilesPushFailsOverToSMS(t *testing.T) {
	s := setupWith(t, withProviders(fallbackProviders))
	s.sink.SetPathConfig("/push", sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
	code, p := s.put("/v1/recipients/ada", map[string]any{
		"addresses": map[string]any{"sms": "+14155550123", "push": []string{"tok-1", "tok-2"}},
		"timezone":  "Europe/Istanbul",
	})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, p)

	id := s.accepted(map[string]any{"recipientId": "ada", "channels": []string{"push", "sms"}, "content": "Your code is 1234"})
	n := s.waitStatus(id, "DELIVERED", 30*time.Second)

	require.Equal(t, "sms", n["channel"])
	require.Equal(t, "+14155550123", n["recipient"])
	require.Equal(t, "ada", n["recipientId"])
	log := s.channelAttempts(id)
	require.Len(t, log, 2, "one attempt on push (permanent), one on sms")
	require.Equal(t, channelAttempt{Attempt: 1, Channel: "push", Outcome: "permanent", Provider: "push-hook"}, log[0])
	require.Equal(t, channelAttempt{Attempt: 2, Channel: "sms", Outcome: "delivered", Provider: "sms-hook"}, log[1])
	require.Equal(t, 2, s.sink.PathStats("/push").Requests, "the push went to both tokens")
	require.Equal(t, 1, s.sink.PathStats("/sms").Requests)
	status, _ := s.closedRun(id)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, status)
}

// A profile with no push token goes straight to sms: nothing is spent on
// push; one with no address on any requested channel is SKIPPED.
func TestAProfileWithoutTheFirstChannelGoesOnTheNext(t *testing.T) {
	s := setupWith(t, withProviders(fallbackProviders))
	code, p := s.put("/v1/recipients/grace", map[string]any{"addresses": map[string]any{"sms": "+14155550124"}})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, p)

	id := s.accepted(map[string]any{"recipientId": "grace", "channels": []string{"push", "sms"}, "content": "hello"})
	s.waitStatus(id, "DELIVERED", 30*time.Second)
	log := s.channelAttempts(id)
	require.Len(t, log, 1)
	require.Equal(t, channelAttempt{Attempt: 1, Channel: "sms", Outcome: "delivered", Provider: "sms-hook"}, log[0])
	require.Zero(t, s.sink.PathStats("/push").Requests)

	none := s.accepted(map[string]any{"recipientId": "grace", "channel": "push", "content": "hello"})
	s.skipped(none, "no-address")
	unknown := s.accepted(map[string]any{"recipientId": "nobody", "channels": []string{"push", "sms"}, "content": "hello"})
	s.skipped(unknown, "no-address")
}

// An address the mail server refuses at RCPT (5.1.1) is suppressed with
// its source notification; the next email to it is SKIPPED without a
// provider call, and GET /v1/suppressions shows why.
func TestAPermanentRefusalSuppressesTheAddress(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	s := setupWith(t, withProviders(mailProviders(port)))
	email := map[string]any{"channel": "email", "recipient": "bounce-ada@example.com", "subject": "Hi", "content": "hello"}
	first := s.accepted(email)
	n := s.waitStatus(first, "FAILED", 30*time.Second)
	require.Equal(t, "permanent", n["failureReason"])

	code, page := s.get("/v1/suppressions?channel=email")
	require.Equal(t, http.StatusOK, code, page)
	data := page["data"].([]any)
	require.Len(t, data, 1, page)
	entry := data[0].(map[string]any)
	require.Equal(t, "bounce-ada@example.com", entry["recipient"])
	require.Equal(t, "refused", entry["reason"])
	require.Equal(t, first, entry["notificationId"])

	before := len(mail.Messages())
	second := s.accepted(email)
	s.skipped(second, "suppressed")
	require.Len(t, mail.Messages(), before, "no provider call")
}

// A manual suppression skips the address's next notification; removed,
// the address gets notifications again.
func TestAManualSuppressionAndItsRemoval(t *testing.T) {
	s := setup(t)
	path := "/v1/suppressions/sms/" + url.PathEscape("+15550100")
	code, entry := s.put(path, map[string]any{"reason": "manual", "note": "asked by phone"})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, entry)

	skipped := s.send("sms", "not to be sent")
	s.skipped(skipped, "suppressed")
	require.Zero(t, s.sink.Stats().Requests, "no provider call")
	resp, err := http.Get("http://127.0.0.1:" + s.envValue("WORKER_METRICS_PORT") + "/metrics")
	require.NoError(t, err)
	metrics, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(metrics),
		`dispatch_notifications_terminal_total{channel="sms",priority="NORMAL",reason="suppressed",status="skipped"} 1`)

	code, _, raw := s.request(http.MethodDelete, path, nil)
	require.Equal(t, http.StatusNoContent, code, string(raw))
	sent := s.send("sms", "sent again")
	s.waitStatus(sent, "DELIVERED", 30*time.Second)
}

// An opt-out on a profile applies to notifications naming its address as
// well as to those naming the profile, for a category that is not
// critical; a critical category ignores it.
func TestAnOptOutIsHonouredUnlessTheCategoryIsCritical(t *testing.T) {
	s := setup(t)
	code, p := s.put("/v1/recipients/ada", map[string]any{
		"addresses":   map[string]any{"sms": "+15550100"},
		"preferences": map[string]any{"marketing": map[string]any{"sms": false}, "security": map[string]any{"sms": false}},
	})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, p)
	code, c := s.put("/v1/categories/security", map[string]any{"critical": true, "description": "sign-in codes"})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, c)

	byAddress := s.accepted(map[string]any{"channel": "sms", "recipient": "+15550100", "category": "marketing", "content": "sale"})
	s.skipped(byAddress, "opted-out")
	byProfile := s.accepted(map[string]any{"recipientId": "ada", "channel": "sms", "category": "marketing", "content": "sale"})
	s.skipped(byProfile, "opted-out")
	require.Zero(t, s.sink.Stats().Requests)

	critical := s.accepted(map[string]any{"channel": "sms", "recipient": "+15550100", "category": "security", "content": "code 1"})
	s.waitStatus(critical, "DELIVERED", 30*time.Second)
	other := s.accepted(map[string]any{"channel": "sms", "recipient": "+15550100", "category": "receipts", "content": "thanks"})
	s.waitStatus(other, "DELIVERED", 30*time.Second)

	code, list := s.get("/v1/notifications?status=SKIPPED")
	require.Equal(t, http.StatusOK, code, list)
	require.Len(t, list["data"], 2)
}

// An email in a category that is not critical carries RFC 8058's headers;
// GET on its link only shows a page, the one-click POST opts the address
// out, and the next email of that category is SKIPPED; a forged link
// changes nothing.
func TestOneClickUnsubscribe(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	s := setupWith(t, func(s *stack) {
		withProviders(mailProviders(port))(s)
		s.env = append(s.env, "PUBLIC_BASE_URL="+s.apiURL, "UNSUBSCRIBE_MAILTO=unsubscribe@example.com")
	})
	email := map[string]any{"channel": "email", "recipient": "ada@example.com", "subject": "News", "content": "news", "category": "newsletter"}
	first := s.accepted(email)
	s.waitStatus(first, "DELIVERED", 30*time.Second)
	msgs := mail.ByMessageID("<" + first + "@example.com>")
	require.Len(t, msgs, 1)
	list := msgs[0].Header.Get("List-Unsubscribe")
	require.Equal(t, "List-Unsubscribe=One-Click", msgs[0].Header.Get("List-Unsubscribe-Post"))
	require.True(t, strings.HasPrefix(list, "<"+s.apiURL+"/u/"), list)
	require.Contains(t, list, "<mailto:unsubscribe@example.com?subject=unsubscribe-")
	link := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(list, ",", 2)[0], "<"), ">")
	path := strings.TrimPrefix(link, s.apiURL)

	transactional := s.accepted(map[string]any{"channel": "email", "recipient": "ada@example.com", "subject": "Receipt", "content": "paid"})
	s.waitStatus(transactional, "DELIVERED", 30*time.Second)
	require.Empty(t, mail.ByMessageID("<" + transactional + "@example.com>")[0].Header.Get("List-Unsubscribe"), "no category: no link")

	code, hdr, page := s.request(http.MethodGet, path, nil, "Authorization", "")
	require.Equal(t, http.StatusOK, code, string(page))
	require.Contains(t, hdr.Get("Content-Type"), "text/html")
	require.Contains(t, string(page), "<form")
	afterGet := s.accepted(email)
	s.waitStatus(afterGet, "DELIVERED", 30*time.Second)

	forged := path[:len(path)-2] + flip(path[len(path)-2:])
	oneClick := []byte("List-Unsubscribe=One-Click")
	code, _, _ = s.request(http.MethodPost, forged, oneClick, "Authorization", "", "Content-Type", "application/x-www-form-urlencoded")
	require.GreaterOrEqual(t, code, 400)
	stillSent := s.accepted(email)
	s.waitStatus(stillSent, "DELIVERED", 30*time.Second)

	for range 2 { // a repeated one-click POST is harmless
		code, _, body := s.request(http.MethodPost, path, oneClick, "Authorization", "", "Content-Type", "application/x-www-form-urlencoded")
		require.Equal(t, http.StatusOK, code, string(body))
	}
	s.skipped(s.accepted(email), "opted-out")
	other := s.accepted(map[string]any{"channel": "email", "recipient": "ada@example.com", "subject": "Alert", "content": "x", "category": "alerts"})
	s.waitStatus(other, "DELIVERED", 30*time.Second)
}

// flip changes each character of s to another base64url character.
func flip(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}
