package sink_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

const receiptSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiptsTo starts an API stand-in that verifies each receipt's signature
// and hands its path and body over.
func receiptsTo(t *testing.T) (string, <-chan map[string]string) {
	t.Helper()
	got := make(chan map[string]string, 4)
	wh, err := standardwebhooks.NewWebhook(receiptSecret)
	require.NoError(t, err)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if wh.Verify(body, r.Header) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var receipt map[string]string
		_ = json.Unmarshal(body, &receipt)
		receipt["path"] = r.URL.Path
		got <- receipt
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(api.Close)
	return api.URL + "/v1/receipts/", got
}

func sendWithMessageID(t *testing.T, url, webhookID, messageID string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"id":"`+webhookID+`"}`))
	require.NoError(t, err)
	req.Header.Set("webhook-id", webhookID)
	req.Header.Set("X-Dispatch-Message-Id", messageID)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestSinkReceiptsNameTheMessageTheyReportOn(t *testing.T) {
	base, got := receiptsTo(t)
	s := sink.New(sink.Config{}, nil)
	s.SetPathConfig("/push-primary", sink.Config{Receipts: &sink.Receipts{URL: base, Secret: receiptSecret, Status: "failed", Reason: "gone"}})
	srv := httptest.NewServer(s)
	defer srv.Close()

	sendWithMessageID(t, srv.URL+"/push-primary", "n-1", "n-1.2")

	select {
	case r := <-got:
		require.Equal(t, map[string]string{"path": "/v1/receipts/push-primary", "webhookId": "n-1", "messageId": "n-1.2",
			"status": "failed", "reason": "gone"}, r)
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt was sent")
	}
}

func TestSinkSendsUnnamedReceiptsWhenToldTo(t *testing.T) {
	base, got := receiptsTo(t)
	s := sink.New(sink.Config{Receipts: &sink.Receipts{URL: base, Secret: receiptSecret, Unnamed: true}}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()

	sendWithMessageID(t, srv.URL+"/push-primary", "n-1", "n-1.1")

	select {
	case r := <-got:
		require.NotContains(t, r, "messageId")
		require.Equal(t, "delivered", r["status"])
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt was sent")
	}
}
