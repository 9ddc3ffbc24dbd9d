package httpapi

import (
	"context"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// DeadLetterQueues reads the channels' dead-letter queues and purges their
// poison messages; a *deadletter.Queues is one.
type DeadLetterQueues interface {
	// Peek returns the first limit messages of the channel's DLQ, oldest
	// first, and how many it holds, removing nothing.
	Peek(ctx context.Context, channel string, limit int) ([]queue.DeadLetterInfo, int, error)
	// PurgePoison removes the channel's poison messages and returns how
	// many, and how many messages the purge has still to visit: 0 when it
	// is done; otherwise it goes on without the caller.
	PurgePoison(ctx context.Context, channel string) (purged, remaining int, err error)
}

// Page sizes of GET /v1/dead-letters/{channel}.
const (
	defaultDeadLetterLimit = 50
	maxDeadLetterLimit     = 500
)

// DeadLetterView is one dead-letter message as the API shows it: its
// headers, never its body (the notification's recipient and content).
type DeadLetterView struct {
	MessageID string `json:"messageId"`
	// NotificationID is the notification the message is of; absent for a
	// poison message, whose id names none.
	NotificationID *string    `json:"notificationId,omitempty"`
	Reason         string     `json:"reason"`
	Source         string     `json:"source"`
	Attempts       int        `json:"attempts"`
	Generation     int        `json:"generation"`
	LastStatus     *int       `json:"lastStatus,omitempty"`
	LastError      *string    `json:"lastError,omitempty"`
	FailedAt       *time.Time `json:"failedAt,omitempty"`
	Poison         bool       `json:"poison"`
}

// DeadLetterPage is the start of a dead-letter queue and how many
// messages it holds.
type DeadLetterPage struct {
	Data  []DeadLetterView `json:"data"`
	Total int              `json:"total"`
}

func deadLetterView(d queue.DeadLetterInfo) DeadLetterView {
	v := DeadLetterView{MessageID: d.MessageID, Reason: d.Reason, Source: d.Source, Attempts: d.Attempts,
		Generation: d.Generation, Poison: d.Poison}
	if d.NotificationID != "" {
		v.NotificationID = &d.NotificationID
	}
	if d.LastStatus != 0 {
		v.LastStatus = &d.LastStatus
	}
	if d.LastError != "" {
		v.LastError = &d.LastError
	}
	if !d.FailedAt.IsZero() {
		v.FailedAt = &d.FailedAt
	}
	return v
}

// listDeadLetters shows the start of a channel's dead-letter queue. Reading
// a message takes it from the queue and puts it back in its place, so the
// messages shown are marked redelivered.
func (s *Server) listDeadLetters(c *fiber.Ctx) error {
	dlq, channel, err := s.deadLetterQueue(c)
	if err != nil {
		return err
	}
	limit, err := deadLetterLimit(c)
	if err != nil {
		return err
	}
	msgs, total, err := dlq.Peek(c.UserContext(), channel, limit)
	if err != nil {
		return s.unavailable(c, err, "the dead-letter queue (RabbitMQ) cannot be read now")
	}
	views := make([]DeadLetterView, len(msgs))
	for i, m := range msgs {
		views[i] = deadLetterView(m)
	}
	return c.JSON(DeadLetterPage{Data: views, Total: total})
}

// purgeDeadLetters removes a channel's poison messages, which name no
// notification: 200 when the purge is done, 202 when it goes on (a deep
// queue: the request steps it for a few seconds, the workers finish it). A notification's own dead letters leave the queue only
// when it is retried or erased (the worker's pruner), so they stay the
// record of its failure until then.
func (s *Server) purgeDeadLetters(c *fiber.Ctx) error {
	dlq, channel, err := s.deadLetterQueue(c)
	if err != nil {
		return err
	}
	purged, remaining, err := dlq.PurgePoison(c.UserContext(), channel)
	if err != nil {
		return s.unavailable(c, err, "the dead-letter queue (RabbitMQ) cannot be purged now; what was purged stays purged, purge again")
	}
	if remaining > 0 {
		// A deep queue: the pass goes on in the workers, and a repeated
		// request steps it further.
		s.log.Info("poison dead letters being purged", append(requestFields(c, nil), zap.String("channel", channel),
			zap.Int("purged", purged), zap.Int("remaining", remaining))...)
		return c.Status(fiber.StatusAccepted).JSON(DeadLetterPurge{Purged: purged, Remaining: remaining})
	}
	s.log.Info("poison dead letters purged", append(requestFields(c, nil), zap.String("channel", channel), zap.Int("purged", purged))...)
	return c.JSON(DeadLetterPurge{Purged: purged})
}

// DeadLetterPurge is what a purge removed and, while it goes on, what it
// has still to visit.
type DeadLetterPurge struct {
	Purged    int `json:"purged"`
	Remaining int `json:"remaining,omitempty"`
}

// deadLetterQueue returns the dead-letter queues and the path's channel
// (as the notification.Channels constant, which outlives the request).
func (s *Server) deadLetterQueue(c *fiber.Ctx) (DeadLetterQueues, string, error) {
	// The dead-letter queues hold every tenant's failures: they are the
	// operator's, reached with a key of the default tenant (API_KEYS).
	// Another tenant finds no such resource.
	if tenant(c).ID != store.DefaultTenantID {
		return nil, "", newProblem(fiber.StatusNotFound, typeNotFound, "Not found",
			"the dead-letter queues are the operator's: use a key of the default tenant")
	}
	if s.cfg.DeadLetters == nil {
		return nil, "", newProblem(fiber.StatusServiceUnavailable, typeUnavailable, "Service unavailable",
			"this server has no access to the dead-letter queues")
	}
	name := c.Params("channel")
	for _, channel := range notification.Channels {
		if string(channel) == name {
			return s.cfg.DeadLetters, string(channel), nil
		}
	}
	return nil, "", newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "no channel "+name+"; the channels are sms, email and push")
}

// deadLetterLimit reads the only query parameter, limit; any other is
// refused, as GET /v1/notifications refuses one it does not know.
func deadLetterLimit(c *fiber.Ctx) (int, error) {
	ve := &ValidationError{}
	limit, seen := defaultDeadLetterLimit, false
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		switch name := string(k); {
		case name != "limit":
			ve.add(name, "unknown query parameter; known: limit")
		case seen:
			ve.add(name, "given more than once")
		default:
			seen = true
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 || n > maxDeadLetterLimit {
				ve.add("limit", "must be an integer from 1 to %d", maxDeadLetterLimit)
			}
			limit = n
		}
	})
	if len(ve.Fields) > 0 {
		return 0, newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	return limit, nil
}
