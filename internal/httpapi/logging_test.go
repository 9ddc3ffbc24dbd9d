package httpapi_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

func TestEveryRequestIsLoggedOnceWithItsRequestID(t *testing.T) {
	f := setup(t)
	resp, _ := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi"}`, "X-Request-Id", "req-42")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	lines := f.logs.FilterMessage("request").FilterField(stringField("request_id", "req-42")).All()
	require.Len(t, lines, 1)
	ctx := lines[0].ContextMap()
	require.Equal(t, "/v1/notifications", ctx["route"])
	require.EqualValues(t, http.StatusAccepted, ctx["status"])

	accepted := f.logs.FilterMessage("notification accepted").FilterField(stringField("request_id", "req-42")).All()
	require.Len(t, accepted, 1)
	require.NotEmpty(t, accepted[0].ContextMap()["notification_id"])
	require.NotEmpty(t, accepted[0].ContextMap()["workflow_id"])
}

func TestRecipientsAndContentNeverAppearInLogs(t *testing.T) {
	f := setup(t)
	resp, _ := f.post("/v1/notifications", `{"channel":"email","recipient":"alice.secret@example.com","subject":"s","content":"the secret content"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, _ = f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155559876","content":"12"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	for _, e := range f.logs.All() {
		for k, v := range e.ContextMap() {
			s, _ := v.(string)
			require.NotContains(t, s, "alice.secret", "field %s of %q", k, e.Message)
			require.NotContains(t, s, "+14155559876", "field %s of %q", k, e.Message)
			require.NotContains(t, s, "the secret content", "field %s of %q", k, e.Message)
		}
	}
	masked := f.logs.FilterMessage("notification accepted").All()
	require.Len(t, masked, 2)
	require.Equal(t, "a•••@example.com", masked[0].ContextMap()["recipient"])
}

func TestAnAddressInASuppressionsPathNeverAppearsInLogs(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/suppressions/sms/%2B14155559876", `{"reason":"manual"}`)
	require.Less(t, resp.StatusCode, 300, string(raw))
	resp, _ = f.get("/v1/suppressions/sms/%2B14155559876")
	require.NotZero(t, resp.StatusCode)

	lines := f.logs.FilterMessage("request").All()
	require.NotEmpty(t, lines)
	for _, e := range f.logs.All() {
		for k, v := range e.ContextMap() {
			s, _ := v.(string)
			require.NotContains(t, s, "14155559876", "field %s of %q", k, e.Message)
		}
	}
	require.Equal(t, "/v1/suppressions/…", lines[0].ContextMap()["path"])
}

func TestAPIKeysNeverAppearInLogsOrAnswers(t *testing.T) {
	f := setup(t)
	const wrongKey = "wrong-key-0123456789abcdef"
	resp, raw := f.post("/v1/notifications", smsBody)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, raw2 := f.post("/v1/notifications", smsBody, "Authorization", "Bearer "+wrongKey)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, raw3 := f.get("/v1/notifications", "Authorization", "", "X-API-Key", wrongKey)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	for _, body := range [][]byte{raw, raw2, raw3} {
		require.NotContains(t, string(body), f.apiKey)
		require.NotContains(t, string(body), wrongKey)
	}
	require.NotEmpty(t, f.logs.All())
	for _, e := range f.logs.All() {
		require.NotContains(t, e.Message, f.apiKey)
		for k, v := range e.ContextMap() {
			s := fmt.Sprint(v)
			require.NotContains(t, s, f.apiKey, "field %s of %q", k, e.Message)
			require.NotContains(t, s, wrongKey, "field %s of %q", k, e.Message)
		}
	}
}

func stringField(key, value string) zap.Field { return zap.String(key, value) }

func TestAcceptingWakesTheOutboxRelay(t *testing.T) {
	var pokes atomic.Int32
	f := setup(t, withConfig(func(c *config) { c.Accepted = func() { pokes.Add(1) } }))

	resp, _ := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.EqualValues(t, 1, pokes.Load())

	resp, _ = f.post("/v1/notifications/batch", `{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"a"},{"channel":"push","recipient":"device-token-123","content":"b"}]}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.EqualValues(t, 2, pokes.Load(), "one wake-up per accepting request")

	resp, _ = f.post("/v1/notifications", `{"channel":"fax","recipient":"x","content":"y"}`)
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	require.EqualValues(t, 2, pokes.Load(), "nothing stored, nothing to wake")
}
