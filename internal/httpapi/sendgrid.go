package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// sendgridBatchLimit bounds an Event Webhook batch: SendGrid posts one
// every 30 seconds or when it reaches 768 KB, whichever comes first.
const sendgridBatchLimit = 1 << 20

// receiptLimit is the body limit of POST /v1/receipts/{provider} at path:
// a sendgrid provider's batches are larger than one receipt.
func (s *Server) receiptLimit(path string) int {
	name := strings.TrimPrefix(path, "/v1/receipts/")
	if s.cfg.Providers != nil {
		if p, ok := s.cfg.Providers.Get(name); ok && p.Kind == provider.KindSendGrid {
			return sendgridBatchLimit
		}
	}
	return receiptBodyLimit
}

// SendGridEventsTaken is the answer to an Event Webhook batch: how many
// events it held, and what became of them.
type SendGridEventsTaken struct {
	// Events is the batch's length.
	Events int `json:"events"`
	// Applied events changed something: a receipt reached the workflow
	// awaiting it, or an address was suppressed or opted out.
	Applied int `json:"applied"`
	// Unchanged events are about one of our messages and changed nothing: a
	// soft bounce or deferral, a receipt for an attempt that has one, or a
	// notification no longer awaiting it.
	Unchanged int `json:"unchanged"`
	// Ignored events are of a kind we do not act on (processed, open,
	// click, ...).
	Ignored int `json:"ignored"`
	// Unknown events name no message sent through this provider (no or
	// another dispatch_id).
	Unknown int `json:"unknown"`
}

// sendgridEvents takes a sendgrid provider's Event Webhook batch as
// receipts. The batch is authenticated by its ECDSA signature over the
// timestamp and the raw body under the provider's eventPublicKey, and
// refused whole (401, nothing changed) when it does not verify or is more
// than 5 minutes from now. Its events, which come in any order, are taken
// in the order they happened (their timestamps); each names its
// notification and attempt in our custom_args. A delivered event, a hard
// bounce or a drop is a receipt for that attempt, and reaches the
// workflow only when the notification waits on it (as a webhook receipt
// does): a repeated, late or out-of-order one changes nothing once the
// notification is settled. A bounce or drop also suppresses the address
// ("bounced"), and a spam report suppresses it ("complained") and opts
// the person out of the notification's category, whatever the
// notification's state. Every event is counted in the answer (200); a
// failure to record one answers 503, and SendGrid sends the batch again,
// which is harmless.
func (s *Server) sendgridEvents(c *fiber.Ctx, p *provider.Provider) error {
	body := c.Body()
	err := provider.VerifySendGridSignature(p.EventKey, body, c.Get(provider.SendGridSignatureHeader),
		c.Get(provider.SendGridTimestampHeader), time.Now())
	if err != nil {
		return newProblem(fiber.StatusUnauthorized, typeUnauthorized, "Unauthorized", "the Event Webhook batch is refused: "+err.Error())
	}
	var events []provider.SendGridEvent
	if err := json.Unmarshal(body, &events); err != nil {
		return newProblem(fiber.StatusBadRequest, typeMalformed, "Malformed request", "the body must be a JSON array of SendGrid events")
	}
	slices.SortStableFunc(events, func(a, b provider.SendGridEvent) int {
		return int(min(max(a.Timestamp-b.Timestamp, -1), 1))
	})
	ctx := c.UserContext()
	taken := SendGridEventsTaken{Events: len(events)}
	// One receipt per attempt and batch: the workflow takes the first.
	type attemptKey struct {
		id      uuid.UUID
		attempt int
	}
	signalled := map[attemptKey]bool{}
	for _, e := range events {
		action, known := e.Action()
		if !known {
			taken.Ignored++
			continue
		}
		target, found, err := s.sendgridTarget(ctx, p, e)
		if err != nil {
			return s.unavailable(c, err, "the batch's events could not be read against the notifications; send it again")
		}
		if !found {
			taken.Unknown++
			continue
		}
		changed, err := s.sendgridAddress(ctx, target.NotificationID, e, action)
		if err != nil {
			return s.unavailable(c, err, "an address the batch suppresses could not be recorded; send it again")
		}
		key := attemptKey{target.NotificationID, target.Attempt}
		if action.Receipt != "" && target.Current() && !signalled[key] {
			applied, err := s.sendgridReceipt(ctx, c, p, target, e, action)
			if err != nil {
				return err
			}
			signalled[key] = true
			changed = changed || applied
		}
		if changed {
			taken.Applied++
		} else {
			taken.Unchanged++
		}
	}
	return c.JSON(taken)
}

// sendgridTarget finds the attempt an event reports on: the one its
// custom_args name, or the one attempt the notification's current
// generation made at the provider when they name none.
func (s *Server) sendgridTarget(ctx context.Context, p *provider.Provider, e provider.SendGridEvent) (store.ReceiptTarget, bool, error) {
	raw, attempt := e.NotificationAttempt()
	id, err := uuid.Parse(raw)
	if err != nil {
		return store.ReceiptTarget{}, false, nil
	}
	var target store.ReceiptTarget
	if attempt > 0 {
		target, err = store.FindReceiptAttempt(ctx, s.pool, p.Name, id, attempt)
	} else {
		target, err = store.FindUnnamedReceiptTarget(ctx, s.pool, p.Name, id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return target, false, nil
	}
	if err == nil && target.Attempt == 0 && target.Ambiguous == 0 {
		// The notification made no attempt at this provider: not ours to act on.
		return target, false, nil
	}
	return target, err == nil, err
}

// sendgridAddress suppresses the address an event says refuses mail, and
// opts the person out of the category on a spam report. It reports
// whether it acted. An erased notification's address is not recorded.
func (s *Server) sendgridAddress(ctx context.Context, id uuid.UUID, e provider.SendGridEvent, action provider.SendGridAction) (bool, error) {
	if action.Suppress == "" {
		return false, nil
	}
	n, err := store.GetNotification(ctx, s.pool, id)
	if err != nil || n.ErasedAt != nil {
		return false, err
	}
	// The address the message went to: the notification's, or for a
	// profile's (whose address was looked up at delivery) the one SendGrid
	// names, which the batch's signature vouches for. A sendgrid provider
	// sends email only, whichever channel a profile's notification began on.
	address, channel := n.Recipient, string(notification.Email)
	if n.RecipientID != nil || address == "" {
		address = strings.TrimSpace(e.Email)
	}
	if address == "" {
		return false, nil
	}
	if err := store.Suppress(ctx, s.pool, n.TenantID, channel, address, action.Suppress, &id); err != nil {
		return false, err
	}
	if action.OptOut && n.Category != nil {
		if err := store.RecordOptOut(ctx, s.pool, n.TenantID, channel, address, n.RecipientID, *n.Category, "complaint"); err != nil {
			return false, err
		}
	}
	return true, nil
}

// sendgridReceipt signals the receipt an event is to the workflow awaiting
// it; applied is false when the workflow is not running.
func (s *Server) sendgridReceipt(ctx context.Context, c *fiber.Ctx, p *provider.Provider, target store.ReceiptTarget,
	e provider.SendGridEvent, action provider.SendGridAction) (bool, error) {
	id := target.NotificationID.String()
	receipt := workflows.Receipt{Provider: p.Name, Status: action.Receipt, Reason: action.Reason, Attempt: target.Attempt,
		MessageID: store.SafeText(e.MessageID)}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SignalTimeout)
	defer cancel()
	err := s.signaler.SignalWorkflow(ctx, notification.WorkflowID(id), "", workflows.ReceiptSignal, receipt)
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return false, nil
	case err != nil:
		return false, s.unavailable(c, err, fmt.Sprintf("a receipt of the batch could not reach notification %s's workflow; send it again", id))
	}
	s.log.Info("receipt taken", append(requestFields(c, nil), zap.String("notification_id", id),
		zap.String("provider", p.Name), zap.String("receipt", receipt.Status), zap.Int("attempt", target.Attempt))...)
	return true, nil
}
