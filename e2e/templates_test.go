package e2e

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// TestATemplateRendersInTheRecipientsLocaleAndSendsHTMLEmail: a template
// in en and tr; a notification asking for tr-TR is rendered from tr at
// acceptance (GET shows its content, template, version and locale) and
// arrives over SMTP as multipart/alternative, its HTML escaped; a missing
// variable is a 422 naming it, and nothing is stored.
func TestATemplateRendersInTheRecipientsLocaleAndSendsHTMLEmail(t *testing.T) {
	mailSrv, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mailSrv.Arrivals(4)
	s := setupWith(t, withProviders(mailProviders(port)))

	code, tpl := s.put("/v1/templates/welcome", map[string]any{
		"channel": "email", "defaultLocale": "en",
		"locales": map[string]any{
			"en": map[string]any{"subject": "Welcome, {{ name }}", "text": "Hello {{ name }}", "html": "<p>Hello {{ name }}</p>"},
			"tr": map[string]any{"subject": "Hoş geldin, {{ name }}", "text": "Merhaba {{ name }}",
				"html": "<p>Merhaba <b>{{ name }}</b></p>"},
		},
	})
	require.Equal(t, http.StatusCreated, code, tpl)
	require.EqualValues(t, 1, tpl["version"])

	code, bad := s.put("/v1/templates/broken", map[string]any{"channel": "email", "defaultLocale": "en",
		"locales": map[string]any{"en": map[string]any{"subject": "Hi", "text": "{% if x %}never closed"}}})
	require.Equal(t, http.StatusUnprocessableEntity, code, bad)
	require.Contains(t, fieldsOf(bad), "locales.en.text")

	id := s.accepted(map[string]any{"channel": "email", "recipient": "ada@example.com",
		"template": "welcome", "locale": "tr-TR", "data": map[string]any{"name": "Ada <script>"}})
	n := s.waitStatus(id, "DELIVERED", 30*time.Second)
	require.Equal(t, "Merhaba Ada <script>", n["content"])
	require.Equal(t, "Hoş geldin, Ada <script>", n["subject"])
	require.Equal(t, "welcome", n["template"])
	require.EqualValues(t, 1, n["templateVersion"])
	require.Equal(t, "tr", n["locale"])
	require.Equal(t, "<p>Merhaba <b>Ada &lt;script&gt;</b></p>", n["html"])

	select {
	case <-arrivals:
	case <-time.After(10 * time.Second):
		t.Fatal("no email arrived")
	}
	msgs := mailSrv.ByMessageID("<" + id + "@example.com>")
	require.Len(t, msgs, 1)
	text, html := alternatives(t, msgs[0].Data)
	require.Contains(t, text, "Merhaba Ada <script>")
	require.Contains(t, html, "<p>Merhaba <b>Ada &lt;script&gt;</b></p>")

	before := s.queryInt(`SELECT count(*) FROM notifications`)
	code, _, problem := s.post("/v1/notifications", map[string]any{
		"channel": "email", "recipient": "ada@example.com", "template": "welcome", "data": map[string]any{}})
	require.Equal(t, http.StatusUnprocessableEntity, code, problem)
	require.Equal(t, []string{"data.name"}, fieldsOf(problem))
	msg := problem["errors"].([]any)[0].(map[string]any)["message"]
	require.Contains(t, msg, "template welcome (version 1, locale en)")
	require.Equal(t, before, s.queryInt(`SELECT count(*) FROM notifications`), "nothing stored")
}

// fieldsOf lists the fields a 422 names.
func fieldsOf(problem map[string]any) []string {
	var out []string
	errs, _ := problem["errors"].([]any)
	for _, e := range errs {
		if f, ok := e.(map[string]any)["field"].(string); ok {
			out = append(out, f)
		}
	}
	return out
}

// alternatives parses a multipart/alternative message into its text/plain
// and text/html parts, decoded.
func alternatives(t *testing.T, data []byte) (text, html string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	require.NoError(t, err)
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mediaType)
	r := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		body, err := io.ReadAll(p) // quoted-printable is decoded by NextPart
		require.NoError(t, err)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch ct {
		case "text/plain":
			text = string(body)
		case "text/html":
			html = string(body)
		}
	}
	require.NotEmpty(t, text, "a text/plain part")
	require.NotEmpty(t, html, "a text/html part")
	return strings.TrimSpace(text), strings.TrimSpace(html)
}
