package sink_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// The fake's batches verify under its public key, hold each message's
// events with our custom args, and bounce a bounce- address.
func TestSendGridFakePostsSignedEventBatches(t *testing.T) {
	batches := make(chan []provider.SendGridEvent, 4)
	var fake *sink.SendGridFake
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key, err := provider.ParseSendGridPublicKey(fake.PublicKey())
		if err != nil || provider.VerifySendGridSignature(key, body, r.Header.Get(provider.SendGridSignatureHeader),
			r.Header.Get(provider.SendGridTimestampHeader), time.Now()) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var events []provider.SendGridEvent
		_ = json.Unmarshal(body, &events)
		batches <- events
	}))
	t.Cleanup(receiver.Close)
	var err error
	fake, err = sink.NewSendGridFake(sink.SendGridFakeConfig{APIKey: "SG.k", EventsURL: receiver.URL, BatchWindow: 10 * time.Millisecond}, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	sg, err := provider.NewSendGrid(provider.SendGridConfig{BaseURL: srv.URL, APIKey: "SG.k", From: "noreply@example.com"})
	require.NoError(t, err)
	for i, to := range []string{"ada@example.com", "bounce-bob@example.com"} {
		r := sg.Send(context.Background(), provider.Message{NotificationID: "n" + string(rune('1'+i)), Attempt: 1, Recipient: to, Subject: "s", Content: "c"})
		require.Equal(t, workflows.OutcomeDelivered, r.Outcome, r.Error)
	}

	var events []provider.SendGridEvent
	require.Eventually(t, func() bool {
		select {
		case b := <-batches:
			events = append(events, b...)
		default:
		}
		return len(events) == 4
	}, 5*time.Second, 5*time.Millisecond)
	byKind := map[string]provider.SendGridEvent{}
	for _, e := range events {
		byKind[e.Event+":"+e.Notification] = e
		require.Equal(t, "1", e.Attempt)
	}
	require.Contains(t, byKind, "processed:n1")
	require.Equal(t, "ada@example.com", byKind["delivered:n1"].Email)
	require.Equal(t, "bounce", byKind["bounce:n2"].Type)
	require.True(t, strings.HasPrefix(byKind["bounce:n2"].Status, "5.1."))
	for _, b := range fake.Batches() {
		require.Equal(t, http.StatusOK, b.HTTPStatus)
	}
}

func TestSendGridFakeKeepsItsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	k1, err := sink.LoadSendGridKey(path)
	require.NoError(t, err)
	k2, err := sink.LoadSendGridKey(path)
	require.NoError(t, err)
	require.True(t, k1.Equal(k2))
}

// A fake holding events posts nothing until Flush, and Close does not
// wait on a batch that was never due.
func TestSendGridFakeHoldsEventsUntilFlushed(t *testing.T) {
	fake, err := sink.NewSendGridFake(sink.SendGridFakeConfig{APIKey: "SG.k", EventsURL: "http://127.0.0.1:9/none", Hold: true}, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v3/mail/send", strings.NewReader(
		`{"personalizations":[{"to":[{"email":"ada@example.com"}]}],"from":{"email":"a@example.com"},"subject":"s","content":[{"type":"text/plain","value":"c"}]}`))
	req.Header.Set("Authorization", "Bearer SG.k")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("X-Message-Id"))
	require.Equal(t, 2, fake.Pending())
	require.Empty(t, fake.Batches())
	fake.Close()
}
