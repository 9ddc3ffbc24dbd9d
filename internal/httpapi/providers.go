package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.temporal.io/api/serviceerror"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// ProviderView is one provider as GET /v1/providers shows it: never a
// credential, and of a URL only its scheme and host.
type ProviderView struct {
	Name           string       `json:"name"`
	Kind           string       `json:"kind"`
	Target         string       `json:"target"`
	Channels       []string     `json:"channels"`
	TimeoutMS      int64        `json:"timeoutMs"`
	RatePerSec     *int         `json:"ratePerSec,omitempty"`
	AwaitReceiptMS *int64       `json:"awaitReceiptMs,omitempty"`
	Breaker        *BreakerView `json:"breaker"`
}

// BreakerView is a provider's breaker and, for the operator, its recent
// record: the figures count every tenant's sends, so another tenant sees
// the state alone.
type BreakerView struct {
	State     string     `json:"state"`
	OpenUntil *time.Time `json:"openUntil,omitempty"`
	ChangedAt *time.Time `json:"changedAt,omitempty"`
	*BreakerFigures
}

// BreakerFigures are a breaker's recent record, shown to the operator only.
type BreakerFigures struct {
	ConsecutiveFailures int      `json:"consecutiveFailures"`
	RecentRequests      int      `json:"recentRequests"`
	SuccessRatio        *float64 `json:"successRatio"`
	AverageLatencyMS    *int64   `json:"averageLatencyMs"`
}

func (s *Server) listProviders(c *fiber.Ctx) error {
	views := []ProviderView{}
	for _, p := range s.cfg.Providers.All() {
		v := ProviderView{Name: p.Name, Kind: p.Kind, Target: p.Target, Channels: s.cfg.Providers.Channels(p.Name),
			TimeoutMS: p.Timeout.Milliseconds()}
		if v.Channels == nil {
			v.Channels = []string{}
		}
		if p.RatePerSec > 0 {
			v.RatePerSec = &p.RatePerSec
		}
		if p.AwaitReceipt > 0 {
			ms := p.AwaitReceipt.Milliseconds()
			v.AwaitReceiptMS = &ms
		}
		if s.cfg.Breakers != nil {
			st, err := s.cfg.Breakers.Status(c.UserContext(), p.Name)
			if err != nil {
				return s.unavailable(c, err, "the breakers' state (Redis) cannot be read")
			}
			v.Breaker = breakerView(st, isOperator(tenant(c)))
		}
		views = append(views, v)
	}
	return c.JSON(fiber.Map{"data": views})
}

// breakerView is a breaker as GET /v1/providers shows it, with its
// figures when withFigures (the operator).
func breakerView(st breaker.Status, withFigures bool) *BreakerView {
	v := &BreakerView{State: st.State.String(), OpenUntil: st.OpenUntil, ChangedAt: st.ChangedAt}
	if !withFigures {
		return v
	}
	v.BreakerFigures = &BreakerFigures{ConsecutiveFailures: st.ConsecutiveFailures, RecentRequests: st.Requests,
		SuccessRatio: st.SuccessRatio()}
	if st.Requests > 0 {
		ms := st.AverageLatency.Milliseconds()
		v.AverageLatencyMS = &ms
	}
	return v
}

// ReceiptRequest is a webhook provider's receipt.
type ReceiptRequest struct {
	// WebhookID is the delivery's webhook-id (the notification id).
	WebhookID string `json:"webhookId,omitempty"`
	// MessageID names the message the receipt reports on: the delivery's
	// X-Dispatch-Message-Id (its payload's messageId), one per attempt.
	// Without it the receipt applies only where the notification's current
	// generation made a single attempt at the provider.
	MessageID string `json:"messageId,omitempty"`
	Status    string `json:"status"`
	Reason    string `json:"reason,omitempty"`
}

// typeAmbiguousReceipt: a receipt naming no message, for a notification
// whose current generation made several attempts at the provider.
const typeAmbiguousReceipt = "/problems/ambiguous-receipt"

// receipt takes a provider's report on a message it took. The provider
// authenticates with its own scheme, not an API key: a webhook provider
// signs with Standard Webhooks headers under its secret, Twilio with
// X-Twilio-Signature under its auth token. A receipt is about one attempt's
// message (our message id, a Twilio SID): it reaches the notification's
// workflow, as a signal naming that attempt, only when that is the attempt
// the notification is on (SENT, or its answer still being recorded: a
// provider may report at once), and the workflow takes it when it waits
// for that attempt's receipt (202, applied true). A receipt about an
// earlier attempt or generation, a repeated one, or one for a terminal
// notification changes nothing (200, applied false). A receipt naming no
// message is about the current generation's one attempt at the provider,
// and refused (409) when it made several.
func (s *Server) receipt(c *fiber.Ctx) (err error) {
	ctx, span := startRequestSpan(c, "POST /v1/receipts/{provider}")
	defer func() { endRequestSpan(c, span, err) }()
	name := c.Params("provider")
	p, ok := s.cfg.Providers.Get(name)
	if !ok {
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "no provider "+name)
	}
	var (
		target  store.ReceiptTarget
		receipt workflows.Receipt
	)
	switch {
	case p.Kind == provider.KindWebhook && p.ReceiptKey != nil:
		target, receipt, err = s.webhookReceipt(c, p)
	case p.Kind == provider.KindSendGrid && p.EventKey != nil:
		// A batch of events, each about its own message: answered apart.
		return s.sendgridEvents(c, p)
	case p.Kind == provider.KindTwilio:
		var final bool
		target, receipt, final, err = s.twilioReceipt(c, p)
		if err == nil && !final {
			return c.JSON(fiber.Map{"applied": false, "detail": "not a final status"})
		}
	default:
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "provider "+name+" takes no receipts")
	}
	if err != nil {
		return err
	}
	receipt.Provider, receipt.Attempt = p.Name, target.Attempt
	id := target.NotificationID.String()
	traceReceipt(span, target, receipt)
	notApplied := func(detail string) error {
		answer := fiber.Map{"applied": false, "notificationId": id, "status": target.Status, "detail": detail + "; nothing changed"}
		if target.Attempt > 0 {
			answer["attempt"] = target.Attempt
		}
		return c.JSON(answer)
	}
	switch {
	case target.Status.Terminal():
		return notApplied("the notification awaits no receipt")
	case target.Ambiguous > 0:
		pe := newProblem(fiber.StatusConflict, typeAmbiguousReceipt, "Ambiguous receipt",
			fmt.Sprintf("the notification's current generation made %d attempts at provider %s; the receipt must name the message it reports on", target.Ambiguous, p.Name))
		pe.Errors = []FieldError{{Field: "messageId", Message: "is required: the X-Dispatch-Message-Id (messageId) of the delivery the receipt reports on"}}
		return pe
	case !target.Current():
		return notApplied(receiptNotCurrent(target, p.Name))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SignalTimeout)
	defer cancel()
	err = s.signaler.SignalWorkflow(ctx, notification.WorkflowID(id), "", workflows.ReceiptSignal, receipt)
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return notApplied("the notification's workflow is not running")
	case err != nil:
		return s.unavailable(c, err, "the receipt could not reach the notification's workflow; send it again")
	}
	s.log.Info("receipt taken", append(requestFields(c, nil), zap.String("notification_id", id),
		zap.String("provider", p.Name), zap.String("receipt", receipt.Status), zap.Int("attempt", target.Attempt))...)
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"applied": true, "notificationId": id, "status": target.Status,
		"attempt": target.Attempt})
}

// receiptNotCurrent says why a receipt about t is not about the attempt
// the notification waits on.
func receiptNotCurrent(t store.ReceiptTarget, provider string) string {
	switch {
	case t.Attempt == 0:
		return "no attempt of the notification's current generation went to provider " + provider
	case t.Attempt <= t.AttemptBase:
		return fmt.Sprintf("the receipt is about attempt %d, of an earlier generation (the notification was retried since)", t.Attempt)
	case t.Attempt < t.Latest:
		return fmt.Sprintf("the receipt is about attempt %d; the notification is on attempt %d", t.Attempt, t.Latest)
	case t.Settled:
		return fmt.Sprintf("attempt %d has its receipt already", t.Attempt)
	default:
		return fmt.Sprintf("attempt %d was not taken by the provider (outcome %s)", t.Attempt, t.Outcome)
	}
}

func (s *Server) webhookReceipt(c *fiber.Ctx, p *provider.Provider) (store.ReceiptTarget, workflows.Receipt, error) {
	wh, err := standardwebhooks.NewWebhookRaw(p.ReceiptKey)
	if err != nil {
		return store.ReceiptTarget{}, workflows.Receipt{}, err
	}
	h := http.Header{}
	for _, k := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		h.Set(k, c.Get(k))
	}
	if err := wh.Verify(c.Body(), h); err != nil {
		return store.ReceiptTarget{}, workflows.Receipt{}, newProblem(fiber.StatusUnauthorized, typeUnauthorized, "Unauthorized",
			"the receipt's Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature under the provider's secret) does not verify")
	}
	var req ReceiptRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return store.ReceiptTarget{}, workflows.Receipt{}, err
	}
	ve := &ValidationError{}
	id, perr := uuid.Parse(req.WebhookID)
	switch {
	case req.WebhookID == "" && req.MessageID == "":
		ve.add("webhookId", "is required (the webhook-id of the delivery, the notification id), unless messageId is given")
	case req.WebhookID != "" && perr != nil:
		ve.add("webhookId", "must be the webhook-id of the delivery (the notification id)")
	}
	msgNotification, attempt, named := notification.ParseMessageID(req.MessageID)
	switch {
	case req.MessageID != "" && !named:
		ve.add("messageId", "must be the X-Dispatch-Message-Id (messageId) of the delivery the receipt reports on")
	case named && req.WebhookID != "" && perr == nil && msgNotification != id:
		ve.add("messageId", "names a message of another notification than webhookId")
	}
	status := receiptStatus(req.Status)
	if status == "" {
		ve.add("status", `must be "delivered" or "failed" (also "undelivered", "bounced", "rejected", "complained")`)
	}
	if !validText(req.Reason) { // stored on the attempt by the workflow
		ve.add("reason", "must be UTF-8 text without NUL characters")
	}
	if err := ve.orNil(); err != nil {
		return store.ReceiptTarget{}, workflows.Receipt{}, err
	}
	receipt := workflows.Receipt{Status: status, Reason: req.Reason, MessageID: req.MessageID}
	var target store.ReceiptTarget
	if named {
		target, err = store.FindReceiptAttempt(c.UserContext(), s.pool, p.Name, msgNotification, attempt)
		if errors.Is(err, store.ErrNotFound) {
			return target, receipt, explain(err, typeNotFound, "no message "+req.MessageID+" was sent through provider "+p.Name)
		}
	} else {
		target, err = store.FindUnnamedReceiptTarget(c.UserContext(), s.pool, p.Name, id)
		if errors.Is(err, store.ErrNotFound) {
			return target, receipt, explain(err, typeNotFound, "no notification "+id.String())
		}
	}
	if err == nil {
		err = s.refusedByReceipt(c.UserContext(), target.NotificationID, req.Status)
	}
	return target, receipt, err
}

// refusedByReceipt acts on a receipt that says the address refuses mail:
// bounced (the mailbox is dead) or complained (the person marked it as
// spam) put the address on the tenant's suppression list, and a complaint
// also opts the person out of the notification's category. It acts
// whatever the notification's state: a complaint comes long after the
// delivery it is about.
func (s *Server) refusedByReceipt(ctx context.Context, id uuid.UUID, said string) error {
	if said != receiptBounced && said != receiptComplained {
		return nil
	}
	n, err := store.GetNotification(ctx, s.pool, id)
	if err != nil || n.ErasedAt != nil || n.Recipient == "" {
		return err
	}
	if err := store.Suppress(ctx, s.pool, n.TenantID, string(n.Channel), n.Recipient, said, &id); err != nil {
		return err
	}
	if said == receiptComplained && n.Category != nil {
		return store.RecordOptOut(ctx, s.pool, n.TenantID, string(n.Channel), n.Recipient, n.RecipientID, *n.Category, "complaint")
	}
	return nil
}

// What a webhook receipt may say of the address beyond delivered or
// failed: the mailbox bounced, or the person complained.
const (
	receiptBounced    = "bounced"
	receiptComplained = "complained"
)

// receiptStatus maps what a receipt says to delivered or failed; "" when
// it says neither.
func receiptStatus(s string) string {
	switch s {
	case provider.ReceiptDelivered, receiptComplained:
		// A complaint says the person got it.
		return provider.ReceiptDelivered
	case provider.ReceiptFailed, "undelivered", receiptBounced, "rejected":
		return provider.ReceiptFailed
	}
	return ""
}

func (s *Server) twilioReceipt(c *fiber.Ctx, p *provider.Provider) (store.ReceiptTarget, workflows.Receipt, bool, error) {
	form := url.Values{}
	c.Request().PostArgs().VisitAll(func(k, v []byte) { form.Add(string(k), string(v)) })
	// Twilio signs the URL it was given: the public base, not this host.
	fullURL := s.cfg.ReceiptsBaseURL + c.OriginalURL()
	if !provider.ValidTwilioSignature(p.ReceiptToken, fullURL, form, c.Get("X-Twilio-Signature")) {
		return store.ReceiptTarget{}, workflows.Receipt{}, false, newProblem(fiber.StatusUnauthorized, typeUnauthorized, "Unauthorized",
			"the X-Twilio-Signature does not verify under the provider's auth token")
	}
	sid, status, reason, final := provider.TwilioReceipt(form)
	// The SID is looked up and the reason stored: text PostgreSQL cannot
	// hold is refused here, not there.
	if ve := twilioTextErrors(form, sid); ve != nil {
		return store.ReceiptTarget{}, workflows.Receipt{}, false, newProblemFromValidation(fiber.StatusUnprocessableEntity, ve)
	}
	if sid == "" {
		ve := &ValidationError{}
		ve.add("MessageSid", "is required")
		return store.ReceiptTarget{}, workflows.Receipt{}, false, newProblemFromValidation(fiber.StatusUnprocessableEntity, ve)
	}
	if !final {
		return store.ReceiptTarget{}, workflows.Receipt{}, false, nil
	}
	receipt := workflows.Receipt{Status: status, Reason: reason, MessageID: sid}
	target, err := store.FindReceiptMessage(c.UserContext(), s.pool, p.Name, sid)
	if errors.Is(err, store.ErrNotFound) {
		// Before the attempt's SID was recorded: the callback URL names
		// the notification and the attempt (signed with the rest); one from
		// a worker of before names only the notification.
		if id, perr := uuid.Parse(c.Query(provider.TwilioCallbackParam)); perr == nil {
			if attempt, aerr := strconv.Atoi(c.Query(provider.TwilioCallbackAttemptParam)); aerr == nil {
				target, err = store.FindReceiptAttempt(c.UserContext(), s.pool, p.Name, id, attempt)
			} else {
				target, err = store.FindUnnamedReceiptTarget(c.UserContext(), s.pool, p.Name, id)
			}
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return target, receipt, true, explain(err, typeNotFound, "no message "+sid+" was sent through provider "+p.Name)
	}
	return target, receipt, true, err
}

// twilioTextErrors names the status callback's fields that PostgreSQL
// could not store (NUL, invalid UTF-8): the SID it names and what goes
// into the receipt's reason.
func twilioTextErrors(form url.Values, sid string) *ValidationError {
	ve := &ValidationError{}
	if !validText(sid) {
		ve.add("MessageSid", "must be UTF-8 text without NUL characters")
	}
	for _, name := range []string{"MessageStatus", "SmsStatus", "ErrorCode"} {
		if !validText(form.Get(name)) {
			ve.add(name, "must be UTF-8 text without NUL characters")
		}
	}
	if len(ve.Fields) == 0 {
		return nil
	}
	return ve
}

// unavailable logs err and answers 503 with Retry-After.
func (s *Server) unavailable(c *fiber.Ctx, err error, detail string) error {
	s.log.Warn("dependency unavailable", requestFields(c, err)...)
	return newProblem(fiber.StatusServiceUnavailable, typeUnavailable, "Service unavailable", detail)
}
