// Package provider holds the senders a notification is delivered through
// (webhook, smtp, twilio, apns, fcm, sendgrid), the providers file that
// declares them and each channel's route, and the classification of their
// answers. Which provider
// an attempt goes to is decided in the Deliver activity, from the routes
// and the cluster-wide breakers (internal/breaker). A call to a provider is
// a span of the notification's trace (trace.go), and a webhook carries its
// traceparent.
package provider

import (
	"context"
	"net/mail"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Kinds of provider.
const (
	KindWebhook  = "webhook"
	KindSMTP     = "smtp"
	KindTwilio   = "twilio"
	KindAPNs     = "apns"
	KindFCM      = "fcm"
	KindSendGrid = "sendgrid"
)

// Message is one attempt of one notification, as a sender needs it.
type Message struct {
	// NotificationID is the notification's id: the webhook-id of a webhook,
	// the local part of an email's Message-ID, the same on every attempt.
	NotificationID string
	Attempt        int
	Channel        string
	Recipient      string
	Subject        string
	Content        string
	// HTML is an email's HTML part (rendered from a template), "" for
	// none; an email with one goes as multipart/alternative, Content its
	// text/plain part. Other channels ignore it.
	HTML string
	// Payload is the JSON body a webhook provider receives
	// (notification.Payload).
	Payload []byte
	// Headers are extra header fields of an email (List-Unsubscribe and
	// List-Unsubscribe-Post, RFC 2369 and RFC 8058); other senders ignore
	// them. The smtp sender refuses a name or value that could inject a
	// header (CR, LF) and a name it sets itself.
	Headers map[string]string
}

// Result is what one send found. A sender never returns an error: every
// failure is a classified Result.
type Result struct {
	// Outcome is delivered (the provider took it), retry or permanent.
	Outcome workflows.Outcome
	// StatusCode is the provider's HTTP status or SMTP reply code; zero when
	// no answer came.
	StatusCode int
	// RetryAfter is how long the provider asked to wait, zero when it did not.
	RetryAfter time.Duration
	// Error says what went wrong, for the attempt log; empty on success.
	Error string
	// Excerpt is the start of the provider's reply, kept with the attempt.
	Excerpt string
	// MessageID is the provider's id for the message (a Twilio SID, the
	// email's Message-ID), stored with the attempt so a receipt can find it.
	MessageID string
	// ProviderFault marks a failure that is the provider's, not the
	// message's: it counts against the provider's breaker, and the next
	// attempt goes to the next provider on the route. Timeouts, connection
	// errors, 5xx and the provider's refusal of our credentials are; a
	// message the provider refuses as bad is not.
	ProviderFault bool
	// Suppress, when set, is why the address itself must not be sent to
	// again (a suppressions.reason: SuppressRefused, SuppressUnsubscribed,
	// SuppressInvalid): the provider said the mailbox or number is dead or
	// refuses us, not merely this message. Empty for every other answer.
	Suppress string
}

// Suppression reasons a sender reports in Result.Suppress, the values of
// the suppressions table's reason column.
const (
	// SuppressRefused: the mail server refused the address at RCPT TO with
	// a permanent 5.1.x (no such mailbox, bad address syntax or domain).
	SuppressRefused = "refused"
	// SuppressUnsubscribed: the person replied STOP (Twilio 21610).
	SuppressUnsubscribed = "unsubscribed"
	// SuppressInvalid: the number is not a number, or not a mobile one
	// (Twilio 21211, 21614).
	SuppressInvalid = "invalid"
	// SuppressUnregistered: the push service says the device token is no
	// longer valid for the app (APNs 410 Unregistered, 400
	// BadDeviceToken; FCM UNREGISTERED, or INVALID_ARGUMENT about the
	// registration token).
	SuppressUnregistered = "unregistered"
	// SuppressBounced: the mailbox hard-bounced, or the provider dropped
	// mail to it (SendGrid's bounce and dropped events).
	SuppressBounced = "bounced"
	// SuppressComplained: the person marked the email as spam (SendGrid's
	// spamreport event).
	SuppressComplained = "complained"
)

// Sender sends one attempt to one provider. It honours ctx: a cancelled
// ctx aborts the call (the Result then says retry; the caller knows why).
type Sender interface {
	Send(ctx context.Context, m Message) Result
}

// Origin is the scheme and host of a provider's URL, all of it that is
// shown anywhere (an attempt's error, GET /v1/providers, a log line): its
// path and query may carry tokens (a Slack-style path, ?api_key=). It is
// "" for a URL that does not parse or has no host.
func Origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// HideURL replaces, in text, endpoint (and any URL under its origin, as
// Go's *url.Error quotes the URL it called) by endpoint's origin.
func HideURL(text, endpoint string) string {
	origin := Origin(endpoint)
	if origin == "" {
		if endpoint != "" {
			text = strings.ReplaceAll(text, endpoint, "[url]")
		}
		return text
	}
	// The origin followed by a path, query or fragment, up to the quote or
	// space that ends a URL in an error's text.
	under := regexp.MustCompile(regexp.QuoteMeta(origin) + `[/?#][^"\s]*`)
	text = under.ReplaceAllLiteralString(text, origin)
	if u, err := url.Parse(endpoint); err == nil {
		// The path or query quoted on its own (a proxy's or a server's
		// text), when it says anything.
		for _, part := range []string{u.RequestURI(), u.EscapedPath(), u.RawQuery} {
			if len(part) > 1 && part != "/" {
				text = strings.ReplaceAll(text, part, "")
			}
		}
	}
	return text
}

// ScrubRecipient returns r with every form of recipient a provider echoes
// (the address in any case, a phone number with or without its +, either
// URL-encoded) replaced by "[recipient]" in Error and Excerpt: what a sender
// returns reaches the attempt log, the notification's lastError, the
// dead-letter headers and the workflow's history, and an erased person
// must not stay there. Every sender's Send applies it.
func ScrubRecipient(r Result, recipient string) Result {
	forms := recipientForms(recipient)
	if len(forms) == 0 {
		return r
	}
	r.Error = replaceForms(r.Error, forms)
	r.Excerpt = replaceForms(r.Excerpt, forms)
	return r
}

// RecipientPlaceholder stands for the recipient in what a sender returns.
const RecipientPlaceholder = "[recipient]"

func recipientForms(recipient string) []string {
	recipient = strings.TrimSpace(recipient)
	seen := map[string]bool{}
	add := func(f string) {
		if len(f) >= 3 {
			seen[f] = true
		}
	}
	add(recipient)
	if a, err := mail.ParseAddress(recipient); err == nil {
		add(a.Address)
	}
	if digits, ok := strings.CutPrefix(recipient, "+"); ok {
		add(digits)
		add("%2B" + digits)
	}
	plain := make([]string, 0, len(seen))
	for f := range seen {
		plain = append(plain, f)
	}
	for _, f := range plain {
		add(url.QueryEscape(f))
		add(url.PathEscape(f))
	}
	forms := make([]string, 0, len(seen))
	for f := range seen {
		forms = append(forms, f)
	}
	// Longest first: "%2B1555…" goes whole before "1555…" is looked for.
	sort.Slice(forms, func(i, j int) bool {
		if len(forms[i]) != len(forms[j]) {
			return len(forms[i]) > len(forms[j])
		}
		return forms[i] < forms[j]
	})
	return forms
}

func replaceForms(text string, forms []string) string {
	if text == "" {
		return text
	}
	for _, f := range forms {
		text = regexp.MustCompile("(?i)"+regexp.QuoteMeta(f)).ReplaceAllLiteralString(text, RecipientPlaceholder)
	}
	return text
}
