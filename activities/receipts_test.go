package activities_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// TestEveryAttemptCarriesAMessageIDOfItsOwn: a webhook delivery carries the
// same webhook-id on every attempt and, in the X-Dispatch-Message-Id header
// and the payload's messageId, the attempt's own message id, which its
// record keeps whatever the answer, so a receipt names the attempt it
// reports on.
func TestEveryAttemptCarriesAMessageIDOfItsOwn(t *testing.T) {
	type seen struct{ webhookID, header, body string }
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var payload struct {
			MessageID string `json:"messageId"`
		}
		_ = json.Unmarshal(raw, &payload)
		mu.Lock()
		got = append(got, seen{r.Header.Get("webhook-id"), r.Header.Get("X-Dispatch-Message-Id"), payload.MessageID})
		first := len(got) == 1
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	acts := newActivities(t, srv.URL)
	n := createNotification(t, acts.Pool)
	id := n.ID.String()

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: id, Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	res = deliver(t, acts, workflows.DeliverInput{NotificationID: id, Attempt: 2, Retry: deliverPolicy, Channel: string(n.Channel)})
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)

	first, second := notification.MessageID(id, 1), notification.MessageID(id, 2)
	require.Equal(t, []seen{{id, first, first}, {id, second, second}}, got)
	log := attempts(t, acts.Pool, n.ID)
	require.Len(t, log, 2)
	require.Equal(t, first, *log[0].ProviderMessageID, "kept with a failed attempt too")
	require.Equal(t, second, *log[1].ProviderMessageID)
}
