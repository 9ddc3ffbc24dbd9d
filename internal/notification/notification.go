// Package notification holds the product's vocabulary shared by every
// process: channels, priorities, statuses and the broker message that
// carries a notification from the outbox to the workflow starter.
package notification

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Channel is a delivery channel.
type Channel string

// The delivery channels.
const (
	SMS   Channel = "sms"
	Email Channel = "email"
	Push  Channel = "push"
)

// Channels lists every channel, in a stable order.
var Channels = []Channel{SMS, Email, Push}

// ValidChannel reports whether c is a known channel.
func ValidChannel(c string) bool { return slices.Contains(Channels, Channel(c)) }

// Priority is a notification's priority.
type Priority string

// The priorities, most urgent first.
const (
	High   Priority = "HIGH"
	Normal Priority = "NORMAL"
	Low    Priority = "LOW"
)

// ValidPriority reports whether p is a known priority.
func ValidPriority(p string) bool {
	switch Priority(p) {
	case High, Normal, Low:
		return true
	}
	return false
}

// BrokerPriority maps a priority to the AMQP message priority (queues are
// declared with x-max-priority = MaxBrokerPriority; larger runs first).
func BrokerPriority(p Priority) uint8 {
	switch p {
	case High:
		return 3
	case Low:
		return 1
	default:
		return 2
	}
}

// MaxBrokerPriority is the queues' x-max-priority.
const MaxBrokerPriority = 3

// TemporalPriorityKey maps a priority to Temporal's PriorityKey (smaller runs first).
func TemporalPriorityKey(p Priority) int {
	switch p {
	case High:
		return 1
	case Low:
		return 5
	default:
		return 3
	}
}

// Status is a notification's place in its lifecycle:
// ACCEPTED → QUEUED → PROCESSING → [SENT →] DELIVERED | FAILED | CANCELLED,
// with SCHEDULED and RETRYING while the workflow waits, and SENT while a
// provider's receipt is awaited.
type Status string

// The statuses of a notification.
const (
	StatusAccepted   Status = "ACCEPTED"
	StatusQueued     Status = "QUEUED"
	StatusScheduled  Status = "SCHEDULED"
	StatusProcessing Status = "PROCESSING"
	StatusRetrying   Status = "RETRYING"
	// StatusSent: the provider took it and its receipt is awaited.
	StatusSent      Status = "SENT"
	StatusDelivered Status = "DELIVERED"
	StatusFailed    Status = "FAILED"
	StatusCancelled Status = "CANCELLED"
	// StatusSkipped: not sent, because the address is suppressed, the
	// person opted out of the category, or no requested channel had an
	// address (the notification's skip reason says which).
	StatusSkipped Status = "SKIPPED"
)

// The reasons a notification is SKIPPED.
const (
	SkipSuppressed = "suppressed"
	SkipOptedOut   = "opted-out"
	SkipNoAddress  = "no-address"
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{
	StatusAccepted, StatusQueued, StatusScheduled, StatusProcessing, StatusRetrying,
	StatusSent, StatusDelivered, StatusFailed, StatusCancelled, StatusSkipped,
}

// ValidStatus reports whether s is a known status.
func ValidStatus(s string) bool {
	for _, st := range Statuses {
		if string(st) == s {
			return true
		}
	}
	return false
}

// Terminal reports whether s never changes again.
func (s Status) Terminal() bool {
	return s == StatusDelivered || s == StatusFailed || s == StatusCancelled || s == StatusSkipped
}

// Message is the broker message body for one notification. It carries the
// id only; the workflow's activities read the rest from Postgres, so large
// content never enters Temporal's history.
type Message struct {
	ID       string   `json:"id"`
	Channel  Channel  `json:"channel"`
	Priority Priority `json:"priority"`
}

// WorkflowID is the Temporal workflow id of a notification: starting it is
// idempotent because Temporal rejects a second workflow with the same id.
func WorkflowID(id string) string { return "notification-" + id }

// MessageID is our id for one attempt's message: the notification's id and
// the attempt's number ("<id>.<attempt>"). A webhook delivery carries it
// (the X-Dispatch-Message-Id header and the payload's messageId), beside the
// webhook-id that is the same on every attempt, and a receipt names it to
// say which message it reports on. It is derived, not drawn: attempt
// numbers are unique across a notification's generations, a receipt that
// arrives before its attempt's answer was recorded still names its attempt,
// and it carries nothing of the recipient.
func MessageID(id string, attempt int) string { return id + "." + strconv.Itoa(attempt) }

// ParseMessageID reads a MessageID; ok is false when s is not one.
func ParseMessageID(s string) (id uuid.UUID, attempt int, ok bool) {
	head, tail, found := strings.Cut(s, ".")
	if !found {
		return uuid.UUID{}, 0, false
	}
	id, err := uuid.Parse(head)
	if err != nil || len(head) != 36 {
		return uuid.UUID{}, 0, false
	}
	attempt, err = strconv.Atoi(tail)
	if err != nil || attempt < 1 || strconv.Itoa(attempt) != tail {
		return uuid.UUID{}, 0, false
	}
	return id, attempt, true
}

// MaskRecipient hides most of a recipient for logs and the Temporal UI:
// "+14•••••••23", "a•••@example.com", "abcd…wxyz".
func MaskRecipient(channel Channel, recipient string) string {
	r := []rune(recipient)
	switch channel {
	case Email:
		at := strings.LastIndexByte(recipient, '@')
		if at <= 0 {
			return "•••"
		}
		return string([]rune(recipient[:at])[:1]) + "•••" + recipient[at:]
	case SMS:
		if len(r) <= 5 {
			return "•••"
		}
		return string(r[:3]) + strings.Repeat("•", len(r)-5) + string(r[len(r)-2:])
	default:
		if len(r) <= 8 {
			return "•••"
		}
		return string(r[:4]) + "…" + string(r[len(r)-4:])
	}
}

// Payload is the JSON body a provider receives for one attempt, and the
// body of a notification's dead-letter message.
type Payload struct {
	ID        string          `json:"id"`
	Channel   Channel         `json:"channel"`
	Priority  Priority        `json:"priority"`
	Recipient string          `json:"recipient"`
	Subject   *string         `json:"subject,omitempty"`
	Content   string          `json:"content"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	BatchID   *uuid.UUID      `json:"batchId,omitempty"`
	CreatedAt time.Time       `json:"createdAt"`
	Attempt   int             `json:"attempt"`
	// MessageID is the attempt's MessageID, which a receipt names; set on
	// what a webhook provider receives (not on a dead-letter message).
	MessageID string `json:"messageId,omitempty"`
	// Items are the members a digest's message carries (their ids,
	// subjects, contents and metadata), absent on any other notification.
	Items json.RawMessage `json:"items,omitempty"`
}

// DeadLetter is why a notification (or a message naming none) was given
// up: what every dead-letter message says, whoever wrote it. The broker
// headers it becomes are queue.Header* (queue.Topology.DeadLetterMessage).
type DeadLetter struct {
	// Reason is exhausted, permanent, expired (the workflow), abandoned
	// (the reconciler), unparseable or unknown-id (the consumer).
	Reason string `json:"reason"`
	// Source is who gave up: workflow, reconciler or consumer.
	Source string `json:"source"`
	// Attempts is how many delivery attempts were made.
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"lastStatus,omitempty"`
	LastError  string `json:"lastError,omitempty"`
	// FailedAt is when it was given up.
	FailedAt time.Time `json:"failedAt"`
	// Generation is the notification's generation (notifications.generation,
	// raised by each retry) when it failed: a retry or an erasure retires
	// the dead-letter messages of the generations before it. 0 for a
	// message naming no notification.
	Generation int `json:"generation,omitempty"`
}

// The writers of dead-letter messages (DeadLetter.Source).
const (
	SourceWorkflow   = "workflow"
	SourceReconciler = "reconciler"
	SourceConsumer   = "consumer"
)
