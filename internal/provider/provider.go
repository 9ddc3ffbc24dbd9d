// Package provider holds the senders a notification is delivered through
// (webhook, smtp, twilio), the providers file that declares them and each
// channel's route, and the classification of their answers. Which provider
// an attempt goes to is decided in the Deliver activity, from the routes
// and the cluster-wide breakers (internal/breaker).
package provider

import (
	"context"
	"time"

	"dispatch-engine/workflows"
)

// Kinds of provider.
const (
	KindWebhook = "webhook"
	KindSMTP    = "smtp"
	KindTwilio  = "twilio"
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
	// Payload is the JSON body a webhook provider receives
	// (notification.Payload).
	Payload []byte
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
}

// Sender sends one attempt to one provider. It honours ctx: a cancelled
// ctx aborts the call (the Result then says retry; the caller knows why).
type Sender interface {
	Send(ctx context.Context, m Message) Result
}
