package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// retryNotification gives a FAILED, CANCELLED or SKIPPED notification a fresh
// attempt budget: its next generation is accepted again and handed to the
// broker through the outbox, and a new run of its workflow delivers it.
func (s *Server) retryNotification(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	ve := &ValidationError{}
	key := idempotencyHeader(c, ve)
	if err := ve.orNil(); err != nil {
		return err
	}
	own, err := s.ownNotification(c, id)
	if err != nil {
		return err
	}
	// A retry accepts the notification again: it counts against the
	// tenant's acceptance quota, like a new one, unless it is refused.
	refund := func() {}
	if own.Status == notification.StatusFailed || own.Status == notification.StatusCancelled || own.Status == notification.StatusSkipped {
		if refund, err = s.takeQuota(c, 1); err != nil {
			return err
		}
	}
	var (
		n        store.Notification
		replayed bool
	)
	err = s.withKey(c, "retry", key, func(db store.DB) (err error) {
		n, replayed, err = store.RetryNotification(c.UserContext(), db, id, key)
		return err
	})
	if err != nil || replayed {
		refund() // nothing retried
	}
	var notRetryable *store.NotRetryableError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return explain(err, typeNotFound, "no notification "+id.String())
	case errors.As(err, &notRetryable):
		return explain(err, typeNotRetryable, notRetryable.Error())
	case errors.Is(err, store.ErrConflict):
		return explain(err, typeIdempotencyConflict,
			"the idempotency key was already used to retry another notification; send a new key for a new retry")
	case err != nil:
		return err
	}
	if replayed {
		c.Set(headerReplayed, "true")
		return s.answer(c, fiber.StatusOK, n)
	}
	s.accepted()
	s.log.Info("notification retried", append(requestFields(c, nil),
		zap.String("notification_id", n.ID.String()), zap.String("workflow_id", notification.WorkflowID(n.ID.String())),
		zap.String("channel", string(n.Channel)), zap.Int("retries", n.Generation))...)
	return s.answer(c, fiber.StatusAccepted, n)
}

// Operation paces: the default moves a 10,000-notification batch in 20 s.
const (
	defaultOperationPace = 500
	maxOperationPace     = 5000
)

// failureReasons are the values failureReason takes.
var failureReasons = []string{workflows.ReasonExhausted, workflows.ReasonPermanent, workflows.ReasonExpired,
	workflows.ReasonUndelivered, workflows.ReasonNoReceipt, "abandoned"}

// OperationRequest is the body of POST /v1/operations.
type OperationRequest struct {
	Action       string         `json:"action"`
	Filter       *FilterRequest `json:"filter"`
	DryRun       bool           `json:"dryRun"`
	MaxPerSecond *int           `json:"maxPerSecond"`
}

// FilterRequest selects the notifications of an operation.
type FilterRequest struct {
	Status        *string `json:"status"`
	Channel       *string `json:"channel"`
	Priority      *string `json:"priority"`
	BatchID       *string `json:"batchId"`
	CreatedFrom   *string `json:"createdFrom"`
	CreatedTo     *string `json:"createdTo"`
	FailureReason *string `json:"failureReason"`
	Recipient     *string `json:"recipient"`
}

// validate checks the request; every bad field is named in ve.
func (r OperationRequest) validate(ve *ValidationError) (store.OperationFilter, int) {
	if !slices.Contains([]string{store.ActionRetry, store.ActionCancel, store.ActionErase}, r.Action) {
		ve.add("action", "must be one of retry, cancel, erase")
	}
	pace := defaultOperationPace
	if r.MaxPerSecond != nil {
		if *r.MaxPerSecond < 1 || *r.MaxPerSecond > maxOperationPace {
			ve.add("maxPerSecond", "must be an integer from 1 to %d", maxOperationPace)
		}
		pace = *r.MaxPerSecond
	}
	var f store.OperationFilter
	if r.Filter == nil {
		ve.add("filter", "is required: an operation acts on the notifications its filter matches")
		return f, pace
	}
	in := *r.Filter
	if in == (FilterRequest{}) {
		ve.add("filter", "must hold at least one condition (to act on everything up to now, give createdTo)")
	}
	if in.Status != nil {
		if !notification.ValidStatus(*in.Status) {
			ve.add("filter.status", "must be one of ACCEPTED, QUEUED, SCHEDULED, PROCESSING, RETRYING, SENT, DELIVERED, FAILED, CANCELLED, SKIPPED")
		}
		st := store.Status(*in.Status)
		f.Status = &st
	}
	if in.Channel != nil && !notification.ValidChannel(*in.Channel) {
		ve.add("filter.channel", "must be one of sms, email, push")
	}
	if in.Priority != nil && !notification.ValidPriority(*in.Priority) {
		ve.add("filter.priority", "must be one of HIGH, NORMAL, LOW")
	}
	f.Channel, f.Priority = in.Channel, in.Priority
	if in.BatchID != nil {
		id, err := uuid.Parse(*in.BatchID)
		if err != nil || len(*in.BatchID) != 36 {
			ve.add("filter.batchId", "must be a UUID")
		}
		f.BatchID = &id
	}
	for _, p := range []struct {
		name string
		src  *string
		dst  **time.Time
	}{{"filter.createdFrom", in.CreatedFrom, &f.CreatedFrom}, {"filter.createdTo", in.CreatedTo, &f.CreatedTo}} {
		if p.src == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, *p.src)
		if err != nil {
			ve.add(p.name, "must be an RFC 3339 date-time, e.g. 2026-01-02T15:04:05Z")
			continue
		}
		// In UTC: one instant, however it was spelled, has one fingerprint.
		t = t.UTC()
		*p.dst = &t
	}
	if f.CreatedFrom != nil && f.CreatedTo != nil && !f.CreatedTo.After(*f.CreatedFrom) {
		ve.add("filter.createdTo", "must be after createdFrom")
	}
	if in.FailureReason != nil && !slices.Contains(failureReasons, *in.FailureReason) {
		ve.add("filter.failureReason", "must be one of exhausted, permanent, expired, undelivered, no-receipt, abandoned")
	}
	f.FailureReason = in.FailureReason
	if in.Recipient != nil && (*in.Recipient == "" || len(*in.Recipient) > maxRecipient || !validText(*in.Recipient)) {
		ve.add("filter.recipient", "must be 1 to %d bytes of UTF-8 without NUL characters", maxRecipient)
	}
	f.Recipient = in.Recipient
	return f, pace
}

// maxRecipient bounds a recipient in a filter (an email address at most).
const maxRecipient = 320

// OperationView is an operation as the API shows it.
type OperationView struct {
	ID           string                `json:"id"`
	Action       string                `json:"action"`
	Filter       store.OperationFilter `json:"filter"`
	MaxPerSecond int                   `json:"maxPerSecond"`
	Status       string                `json:"status"`
	Matched      int64                 `json:"matched"`
	Processed    int64                 `json:"processed"`
	Succeeded    int64                 `json:"succeeded"`
	// Skipped counts the notifications left alone; SkippedReasons says why.
	Skipped           int64            `json:"skipped"`
	SkippedReasons    map[string]int64 `json:"skippedReasons"`
	Error             *string          `json:"error,omitempty"`
	CancelRequestedAt *time.Time       `json:"cancelRequestedAt,omitempty"`
	CreatedAt         time.Time        `json:"createdAt"`
	UpdatedAt         time.Time        `json:"updatedAt"`
	FinishedAt        *time.Time       `json:"finishedAt,omitempty"`
	WorkflowID        string           `json:"workflowId"`
	Links             OperationLinks   `json:"links"`
}

// OperationLinks point at the operation's pages.
type OperationLinks struct {
	Self     string `json:"self"`
	Temporal string `json:"temporal"`
}

func (s *Server) operationView(op store.Operation) OperationView {
	id := op.ID.String()
	wfID := wfclient.OperationWorkflowID(op.ID)
	f := op.Filter
	if f.Recipient != nil && op.Status == store.OperationRunning {
		// A person's address is not repeated in answers; the filter holds
		// it only while the operation runs, and then keeps its mask, or
		// [erased] after an erase (store.FailOperation).
		masked := notification.MaskRecipient("", *f.Recipient)
		f.Recipient = &masked
	}
	v := OperationView{
		ID: id, Action: op.Action, Filter: f, MaxPerSecond: op.MaxPerSecond, Status: op.Status,
		Matched: op.Matched, Processed: op.Processed, Succeeded: op.Succeeded, SkippedReasons: op.Skipped,
		Error: op.Error, CancelRequestedAt: op.CancelRequestedAt, CreatedAt: op.CreatedAt, UpdatedAt: op.UpdatedAt,
		FinishedAt: op.FinishedAt, WorkflowID: wfID,
		Links: OperationLinks{
			Self:     "/v1/operations/" + id,
			Temporal: s.cfg.TemporalUIURL + "/namespaces/" + url.PathEscape(s.cfg.TemporalNamespace) + "/workflows/" + url.PathEscape(wfID),
		},
	}
	if v.SkippedReasons == nil {
		v.SkippedReasons = map[string]int64{}
	}
	for _, n := range v.SkippedReasons {
		v.Skipped += n
	}
	return v
}

// DryRunView answers an operation's dry run: what it would act on.
type DryRunView struct {
	DryRun  bool                  `json:"dryRun"`
	Action  string                `json:"action"`
	Filter  store.OperationFilter `json:"filter"`
	Matched int64                 `json:"matched"`
}

func (s *Server) createOperation(c *fiber.Ctx) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	var req OperationRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ve := &ValidationError{}
	key := idempotencyHeader(c, ve)
	filter, pace := req.validate(ve)
	if err := ve.orNil(); err != nil {
		return err
	}
	tid := tenant(c).ID
	filter.Tenant = &tid
	if req.DryRun {
		matched, err := store.CountMatching(c.UserContext(), s.pool, filter)
		if err != nil {
			return err
		}
		if filter.Recipient != nil {
			masked := notification.MaskRecipient("", *filter.Recipient)
			filter.Recipient = &masked
		}
		return c.JSON(DryRunView{DryRun: true, Action: req.Action, Filter: filter, Matched: matched})
	}
	if s.cfg.Operations == nil {
		return newProblem(fiber.StatusServiceUnavailable, typeUnavailable, "Service unavailable", "operations are not enabled on this server")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	no := store.NewOperation{ID: id, TenantID: tid, Action: req.Action, Filter: filter, MaxPerSecond: pace, IdempotencyKey: key}
	if key != nil {
		fp := hash(struct {
			Action string
			Filter store.OperationFilter
			Pace   int
		}{req.Action, filter, pace})
		no.RequestFingerprint = &fp
	}
	var (
		op       store.Operation
		replayed bool
	)
	err = s.withKey(c, "operation", key, func(db store.DB) (err error) {
		op, replayed, err = store.CreateOperation(c.UserContext(), db, no)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return explain(err, typeIdempotencyConflict,
			"the idempotency key was already used for a different operation; send a new key for a new operation")
	}
	if err != nil {
		return err
	}
	c.Location("/v1/operations/" + op.ID.String())
	if replayed {
		c.Set(headerReplayed, "true")
		return c.Status(fiber.StatusOK).JSON(s.operationView(op))
	}
	summary := fmt.Sprintf("%s of %d notifications", op.Action, op.Matched)
	sctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.SignalTimeout)
	defer cancel()
	if err := s.cfg.Operations(sctx, op.ID, summary); err != nil {
		s.log.Warn("operation stored but its workflow not started; a worker starts it", append(requestFields(c, err),
			zap.String("operation_id", op.ID.String()))...)
	}
	s.log.Info("operation started", append(requestFields(c, nil), zap.String("operation_id", op.ID.String()),
		zap.String("action", op.Action), zap.Int64("matched", op.Matched), zap.Int("max_per_second", pace))...)
	return c.Status(fiber.StatusAccepted).JSON(s.operationView(op))
}

func (s *Server) getOperation(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	op, err := s.ownOperation(c, id)
	if err != nil {
		return err
	}
	return c.JSON(s.operationView(op))
}

// ownOperation loads the caller's operation id: another tenant's is not
// found, exactly like one that does not exist.
func (s *Server) ownOperation(c *fiber.Ctx, id uuid.UUID) (store.Operation, error) {
	op, err := store.GetOperation(c.UserContext(), s.pool, id)
	if err == nil && op.TenantID != store.TenantOrDefault(tenant(c).ID) {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Operation{}, explain(err, typeNotFound, "no operation "+id.String())
	}
	return op, err
}

// OperationList is a page of operations. NextCursor is null on the last page.
type OperationList struct {
	Data       []OperationView `json:"data"`
	NextCursor *string         `json:"nextCursor"`
}

// operationsCursorFilter binds the operations listing's cursors to it.
const operationsCursorFilter = "operations"

func (s *Server) listOperations(c *fiber.Ctx) error {
	ve := &ValidationError{}
	limit := defaultLimit
	var after *store.Keyset
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		switch name, value := string(k), string(v); name {
		case "limit":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > maxLimit {
				ve.add("limit", "must be an integer from 1 to %d", maxLimit)
			}
			limit = n
		case "cursor":
			cur, ok := decodeCursor(value)
			if !ok || cur.Filter != operationsCursorFilter+":"+tenant(c).ID.String() {
				ve.add("cursor", "is not a cursor this listing returned; pass nextCursor as it came")
				return
			}
			id, _ := uuid.Parse(cur.ID)
			after = &store.Keyset{CreatedAt: time.UnixMicro(cur.CreatedAt), ID: id}
		default:
			ve.add(name, "unknown query parameter; known: limit, cursor")
		}
	})
	if len(ve.Fields) > 0 {
		return newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	ops, err := store.ListOperations(c.UserContext(), s.pool, tenant(c).ID, after, limit+1)
	if err != nil {
		return err
	}
	resp := OperationList{Data: make([]OperationView, 0, min(limit, len(ops)))}
	for _, op := range ops[:min(limit, len(ops))] {
		resp.Data = append(resp.Data, s.operationView(op))
	}
	if len(ops) > limit {
		last := ops[limit-1]
		next := encodeCursor(cursor{Version: cursorVersion, CreatedAt: last.CreatedAt.UnixMicro(), ID: last.ID.String(), Filter: operationsCursorFilter + ":" + tenant(c).ID.String()})
		resp.NextCursor = &next
	}
	return c.JSON(resp)
}

// cancelOperation stops a running operation after the page it is on; what
// it did so far stays done.
func (s *Server) cancelOperation(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	if _, err := s.ownOperation(c, id); err != nil {
		return err
	}
	op, requested, err := store.RequestOperationCancel(c.UserContext(), s.pool, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return explain(err, typeNotFound, "no operation "+id.String())
	case err != nil:
		return err
	case requested:
		return c.Status(fiber.StatusAccepted).JSON(s.operationView(op))
	case op.Status == store.OperationCancelled:
		return c.JSON(s.operationView(op))
	}
	return explain(fmt.Errorf("operation is %s: %w", op.Status, store.ErrConflict), typeNotCancellable,
		"the operation is "+op.Status+"; only a RUNNING operation can be cancelled")
}
