package httpapi

import (
	"bytes"
	"errors"
	"html/template"

	"github.com/gofiber/fiber/v2"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
)

// unsubscribeRoutes serves the links of the List-Unsubscribe header
// (RFC 2369, RFC 8058) outside /v1, without an API key: the sealed token
// in the path is the authority. GET shows a page whose button posts, and
// never unsubscribes by itself, since mail scanners and link previews
// follow links; POST, the mail client's one-click request or the page's
// button, records the opt-out. Without a Signer (no PUBLIC_BASE_URL, so
// no email carries a link) the paths are unknown: 404.
func (s *Server) unsubscribeRoutes() {
	if s.cfg.Unsubscribe == nil {
		return
	}
	s.app.Get("/u/:token", s.admit, s.unsubscribePage)
	s.app.Post("/u/:token", s.admit, s.unsubscribe)
}

// unsubscribeToken opens the request's token: a forged, altered, cut or
// expired one is a 404 problem (no link we will act on), and nothing
// changes.
func (s *Server) unsubscribeToken(c *fiber.Ctx) (unsubscribe.Token, error) {
	t, err := s.cfg.Unsubscribe.Verify(c.Params("token"))
	switch {
	case errors.Is(err, unsubscribe.ErrExpired):
		return t, newProblem(fiber.StatusNotFound, typeNotFound, "Not found",
			"this unsubscribe link has expired; use the one in a more recent message")
	case err != nil:
		return t, newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "this is not a valid unsubscribe link")
	}
	return t, nil
}

// unsubscribePage answers GET /u/{token}: what the button will stop, and
// the button.
func (s *Server) unsubscribePage(c *fiber.Ctx) error {
	t, err := s.unsubscribeToken(c)
	if err != nil {
		return err
	}
	return sendUnsubscribePage(c, unsubscribeView{
		Title: "Unsubscribe", Category: t.Category, Channel: channelNoun(t.Channel),
		Address: notification.MaskRecipient(notification.Channel(t.Channel), t.Address), Ask: true,
	})
}

// unsubscribe answers POST /u/{token}, whose body must be RFC 8058's
// List-Unsubscribe=One-Click (form-urlencoded or multipart, as a mail
// client sends it; the page's form sends the same). It records the
// opt-out (store.RecordOptOut) and confirms; a repeated POST confirms again
// and changes nothing.
func (s *Server) unsubscribe(c *fiber.Ctx) (err error) {
	ctx, span := startRequestSpan(c, "POST /u/{token}")
	defer func() { endRequestSpan(c, span, err) }()
	t, err := s.unsubscribeToken(c)
	if err != nil {
		return err
	}
	if c.FormValue("List-Unsubscribe") != "One-Click" {
		return malformed("the body must be the form " + unsubscribe.OneClick + " (RFC 8058)")
	}
	err = store.RecordOptOut(ctx, s.pool, t.TenantID, t.Channel, t.Address, nil, t.Category, store.OptOutUnsubscribe)
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "this unsubscribe link no longer applies")
	}
	if err != nil {
		return err
	}
	// Never the address: the tenant, channel and category say what changed.
	s.log.Info("unsubscribed", zap.String("tenant_id", t.TenantID.String()),
		zap.String("channel", t.Channel), zap.String("category", t.Category))
	return sendUnsubscribePage(c, unsubscribeView{
		Title: "Unsubscribed", Category: t.Category, Channel: channelNoun(t.Channel),
		Address: notification.MaskRecipient(notification.Channel(t.Channel), t.Address),
	})
}

// unsubscribeView is what the page shows; html/template escapes each field.
type unsubscribeView struct {
	Title, Category, Channel, Address string
	// Ask shows the question and its button; without it, the confirmation.
	Ask bool
}

func channelNoun(channel string) string {
	switch notification.Channel(channel) {
	case notification.Email:
		return "emails"
	case notification.SMS:
		return "text messages"
	default:
		return "notifications"
	}
}

// unsubscribePageHTML is self-contained: no script, image, font or
// stylesheet from anywhere, so opening it tells no third party anything.
// The form posts to the page's own URL.
var unsubscribePageHTML = template.Must(template.New("unsubscribe").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2328;line-height:1.5}
h1{font-size:1.5rem}
button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:.4rem;background:#1f6feb;color:#fff;cursor:pointer}
.muted{color:#59636e}
</style>
</head>
<body>
<main>
{{if .Ask -}}
<h1>Unsubscribe from “{{.Category}}” {{.Channel}}?</h1>
<p>You will stop receiving “{{.Category}}” {{.Channel}} at <strong>{{.Address}}</strong>. Other messages from this sender are not affected.</p>
<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
{{- else -}}
<h1>You are unsubscribed</h1>
<p>You will no longer receive “{{.Category}}” {{.Channel}} at <strong>{{.Address}}</strong>.</p>
<p class="muted">It may take a moment for messages already on their way to stop.</p>
{{- end}}
</main>
</body>
</html>
`))

// sendUnsubscribePage writes the page with headers that keep it to itself:
// no resource from elsewhere, no framing, no Referer carrying the token,
// not cached or indexed.
func sendUnsubscribePage(c *fiber.Ctx, v unsubscribeView) error {
	var buf bytes.Buffer
	if err := unsubscribePageHTML.Execute(&buf, v); err != nil {
		return err
	}
	c.Set(fiber.HeaderContentSecurityPolicy, "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set("X-Robots-Tag", "noindex, nofollow")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(fiber.StatusOK).Send(buf.Bytes())
}
