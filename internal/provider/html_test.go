package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// An email with an HTML part (a template's) goes as multipart/alternative:
// the text first, the HTML after it.
func TestSMTPSendsHTMLAsMultipartAlternative(t *testing.T) {
	mailSrv, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mailSrv.Arrivals(1)
	m := smtpMessage("5d0c7d8e-1c2b-4a3f-9e8d-7c6b5a4f3e2d", 1)
	m.HTML = "<p>It left the <b>warehouse</b> today.</p>"

	res := smtpNew(t, provider.SMTPConfig{Port: port}).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	got := mailSrv.ByMessageID(smtpArrival(t, arrivals))
	require.Len(t, got, 1)

	msg, err := mail.ReadMessage(bytes.NewReader(got[0].Data))
	require.NoError(t, err)
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mediaType)
	r := multipart.NewReader(msg.Body, params["boundary"])
	var types, bodies []string
	for {
		p, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		body, err := io.ReadAll(p)
		require.NoError(t, err)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types, bodies = append(types, ct), append(bodies, strings.TrimSpace(string(body)))
	}
	require.Equal(t, []string{"text/plain", "text/html"}, types)
	require.Equal(t, []string{m.Content, m.HTML}, bodies)
}

// SendGrid takes the HTML part as content text/html after text/plain.
func TestSendGridSendsHTMLAfterText(t *testing.T) {
	fake, _ := newSendGridFake(t, sink.SendGridFakeConfig{})
	var body []byte
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		body = raw
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(raw))
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	m := email("ada@example.com")
	m.HTML = "<p>It is <b>123456</b>.</p>"

	res := newSendGrid(t, front.URL).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	mu.Lock()
	defer mu.Unlock()
	var sent map[string]any
	require.NoError(t, json.Unmarshal(body, &sent))
	require.Equal(t, []any{
		map[string]any{"type": "text/plain", "value": "It is 123456."},
		map[string]any{"type": "text/html", "value": "<p>It is <b>123456</b>.</p>"},
	}, sent["content"])
}
