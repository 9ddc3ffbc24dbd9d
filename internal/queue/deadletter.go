package queue

import (
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// The headers of every dead-letter message (docs/DEAD_LETTERS.md).
const (
	HeaderReason     = "x-reason"
	HeaderSource     = "x-source"
	HeaderAttempts   = "x-attempts"
	HeaderLastStatus = "x-last-status"
	HeaderLastError  = "x-last-error"
	HeaderFailedAt   = "x-failed-at"
	// HeaderGeneration is the notification's generation (int32) when it
	// failed, on the messages that name a notification; a message without
	// it (written before it existed) is of generation 0.
	HeaderGeneration = "x-generation"
)

// maxHeaderError bounds the error text carried in a header.
const maxHeaderError = 512

// DeadLetterMessage is the one way a dead-letter message is made: body (the
// notification's payload, or a poison message as it came) routed to the
// channel's dead-letter queue, with d as headers and messageID as the
// message id (the notification's id when there is one).
func (t Topology) DeadLetterMessage(channel, messageID string, body []byte, d notification.DeadLetter) Outgoing {
	headers := amqp.Table{
		HeaderReason:   d.Reason,
		HeaderSource:   d.Source,
		HeaderAttempts: int32(d.Attempts),
		HeaderFailedAt: d.FailedAt.UTC().Format(time.RFC3339Nano),
	}
	if d.LastStatus != 0 {
		headers[HeaderLastStatus] = int32(d.LastStatus)
	}
	if d.LastError != "" {
		headers[HeaderLastError] = truncate(d.LastError, maxHeaderError)
	}
	if d.Source != notification.SourceConsumer {
		headers[HeaderGeneration] = int32(d.Generation)
	}
	return Outgoing{Exchange: t.DeadLetterExchange(), RoutingKey: channel, Body: body, MessageID: messageID, Headers: headers}
}
