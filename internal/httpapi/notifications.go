package httpapi

import (
	"context"
	"errors"
	"mime"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func (s *Server) createNotification(c *fiber.Ctx) (err error) {
	ctx, span := startRequestSpan(c, "POST /v1/notifications")
	defer func() { endRequestSpan(c, span, err) }()
	if err := requireJSON(c); err != nil {
		return err
	}
	var req CreateRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ve := &ValidationError{}
	header := idempotencyHeader(c, ve)
	key := resolveKey(req.IdempotencyKey, header, "idempotencyKey", ve)
	nn, fieldErr := req.validate("", time.Now())
	if fieldErr != nil {
		ve.Fields = append(fieldErr.Fields, ve.Fields...)
	}
	if err := ve.orNil(); err != nil {
		return err
	}
	nn.IdempotencyKey = key
	nn.TenantID = tenant(c).ID
	nn.TraceParent = traceNotification(ctx, span, nn)
	if key != nil {
		fp := fingerprint(nn)
		nn.RequestFingerprint = &fp
	}
	if err := s.applyTemplate(c, &nn, "", map[string]store.Template{}); err != nil {
		return err
	}

	refund, err := s.takeQuota(c, 1)
	if err != nil {
		return err
	}
	var (
		n        store.Notification
		replayed bool
	)
	err = s.withKey(c, "notification", key, func(db store.DB) (err error) {
		n, replayed, err = store.AcceptNotification(c.UserContext(), db, nn)
		return err
	})
	if err != nil || replayed {
		refund() // nothing stored
	}
	if errors.Is(err, store.ErrConflict) {
		return explain(err, typeIdempotencyConflict,
			"the idempotency key was already used for a different notification; send a new key for a new notification")
	}
	if err != nil {
		return err
	}
	c.Location("/v1/notifications/" + n.ID.String())
	if replayed {
		c.Set(headerReplayed, "true")
		return s.answer(c, fiber.StatusOK, n)
	}
	s.metrics.Accepted.WithLabelValues(string(n.Channel), string(n.Priority)).Inc()
	s.metrics.TenantAccepted.WithLabelValues(s.metrics.Tenants.Label(tenant(c).Name)).Inc()
	s.accepted()
	s.log.Info("notification accepted", append(requestFields(c, nil),
		zap.String("notification_id", n.ID.String()), zap.String("workflow_id", notification.WorkflowID(n.ID.String())),
		zap.String("channel", string(n.Channel)), zap.String("priority", string(n.Priority)),
		zap.String("recipient", notification.MaskRecipient(n.Channel, n.Recipient)))...)
	return s.answer(c, fiber.StatusAccepted, n)
}

// ownNotification loads the caller's notification id: another tenant's is
// not found, exactly like one that does not exist.
func (s *Server) ownNotification(c *fiber.Ctx, id uuid.UUID) (store.Notification, error) {
	n, err := store.GetTenantNotification(c.UserContext(), s.pool, tenant(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Notification{}, explain(err, typeNotFound, "no notification "+id.String())
	}
	return n, err
}

func (s *Server) getNotification(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	n, err := s.ownNotification(c, id)
	if err != nil {
		return err
	}
	r, err := s.view(c.UserContext(), n)
	if err != nil {
		return err
	}
	// The HTML part can be as large as the content: only this one
	// notification's page shows it, never a list.
	r.HTML = n.HTML
	return c.JSON(r)
}

// AttemptView is one delivery attempt as the API shows it.
type AttemptView struct {
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"startedAt"`
	DurationMS int       `json:"durationMs"`
	// StatusCode is the provider's HTTP status; absent when no answer came.
	StatusCode      *int    `json:"statusCode,omitempty"`
	Outcome         string  `json:"outcome"`
	Error           *string `json:"error,omitempty"`
	ResponseExcerpt *string `json:"responseExcerpt,omitempty"`
	// Provider is who the attempt went to; ProviderMessageID its id for
	// the message there; Receipt, ReceiptReason and ReceiptAt what it
	// reported later.
	Provider          *string    `json:"provider,omitempty"`
	ProviderMessageID *string    `json:"providerMessageId,omitempty"`
	Receipt           *string    `json:"receipt,omitempty"`
	ReceiptReason     *string    `json:"receiptReason,omitempty"`
	ReceiptAt         *time.Time `json:"receiptAt,omitempty"`
	// Channel is the channel the attempt went on (a profile's notification
	// may fall back from one to the next).
	Channel *string `json:"channel,omitempty"`
}

func (s *Server) listAttempts(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	n, err := s.ownNotification(c, id)
	if err != nil {
		return err
	}
	log, err := s.attemptLog(c, n)
	if err != nil {
		return err
	}
	attempts, err := store.ListAttempts(c.UserContext(), s.pool, log)
	if err != nil {
		return err
	}
	views := make([]AttemptView, len(attempts))
	for i, a := range attempts {
		views[i] = AttemptView{
			Attempt: a.Attempt, StartedAt: a.StartedAt, DurationMS: a.DurationMS, StatusCode: a.StatusCode,
			Outcome: a.Outcome, Error: a.Error, ResponseExcerpt: a.ResponseExcerpt,
			Provider: a.Provider, ProviderMessageID: a.ProviderMessageID, Receipt: a.Receipt, ReceiptReason: a.ReceiptReason,
			ReceiptAt: a.ReceiptAt, Channel: a.Channel,
		}
	}
	return c.JSON(fiber.Map{"data": views})
}

// attemptLog is whose attempts n's are: a digest member's are its
// digest's message's (the notification whose id is the digest's), for
// that message is what went to the provider; any other's are its own. The
// digest is checked to be the caller's tenant's, like the member.
func (s *Server) attemptLog(c *fiber.Ctx, n store.Notification) (uuid.UUID, error) {
	d := digestOf(n)
	if d == nil {
		return n.ID, nil
	}
	dg, err := store.GetDigest(c.UserContext(), s.pool, *d)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return n.ID, nil
	case err != nil:
		return uuid.UUID{}, err
	case dg.TenantID != tenant(c).ID:
		return n.ID, nil
	}
	return dg.ID, nil
}

// cancelNotification records the cancel on the row first (which alone makes
// it win: no attempt starts once it is set), then signals the workflow so a
// wait or an in-flight call ends at once.
func (s *Server) cancelNotification(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	if _, err := s.ownNotification(c, id); err != nil {
		return err
	}
	n, requested, err := store.RequestCancel(c.UserContext(), s.pool, id)
	var notCancellable *store.NotCancellableError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return explain(err, typeNotFound, "no notification "+id.String())
	case errors.As(err, &notCancellable):
		return explain(err, typeNotCancellable,
			"the notification is "+string(notCancellable.Status)+"; only a notification not yet delivered or failed can be cancelled")
	case err != nil:
		return err
	}
	if !requested {
		return s.answer(c, fiber.StatusOK, n)
	}
	if n.Status == notification.StatusCancelled {
		// Cancelled here, before any attempt: the worker will only skip it,
		// so this process counts the terminal state.
		s.metrics.Cancelled.WithLabelValues(string(n.Channel), string(n.Priority)).Inc()
	}
	s.signalCancel(c, n.ID)
	return s.answer(c, fiber.StatusAccepted, n)
}

// signalCancel sends the cancel signal. A workflow not started yet is no
// error: it will read the row's flag and never start an attempt. Any other
// failure is logged and the answer stays 202, for the flag holds.
func (s *Server) signalCancel(c *fiber.Ctx, id uuid.UUID) {
	wfID := notification.WorkflowID(id.String())
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.SignalTimeout)
	defer cancel()
	err := s.signaler.SignalWorkflow(ctx, wfID, "", workflows.CancelSignal, nil)
	var notFound *serviceerror.NotFound
	if err == nil || errors.As(err, &notFound) {
		return
	}
	s.log.Warn("cancel signal not delivered; the notification's cancel flag still stops it",
		append(requestFields(c, err), zap.String("notification_id", id.String()), zap.String("workflow_id", wfID))...)
}

// pathUUID parses the path parameter name as a UUID in its canonical
// 36-character form; anything else is a 400 naming the parameter.
func pathUUID(c *fiber.Ctx, name string) (uuid.UUID, error) {
	raw := c.Params(name)
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		ve := &ValidationError{}
		ve.add(name, "must be a UUID, e.g. 0195b5f2-7f00-7000-8000-000000000000")
		return uuid.UUID{}, newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	return id, nil
}

func newProblemFromValidation(status int, ve *ValidationError) error {
	p := newProblem(status, typeValidation, "Invalid request", ve.Error())
	p.Errors = ve.Fields
	return p
}

// requireJSON answers 415 unless the body is declared application/json
// (UTF-8, the only charset JSON has).
func requireJSON(c *fiber.Ctx) error {
	mt, params, err := mime.ParseMediaType(string(c.Request().Header.ContentType()))
	if err == nil && mt == fiber.MIMEApplicationJSON && (params["charset"] == "" || strings.EqualFold(params["charset"], "utf-8")) {
		return nil
	}
	return newProblem(fiber.StatusUnsupportedMediaType, typeUnsupported, "Unsupported media type",
		"send the body as application/json (UTF-8)")
}
