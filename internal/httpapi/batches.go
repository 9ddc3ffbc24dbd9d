package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// maxBatch bounds the notifications of one batch request.
const maxBatch = 1000

// BatchRequest is the body of POST /v1/notifications/batch. Items stay raw
// until each is decoded on its own, so every bad item is reported.
type BatchRequest struct {
	Notifications []json.RawMessage `json:"notifications"`
}

// BatchResponse answers a batch request.
type BatchResponse struct {
	BatchID       string     `json:"batchId"`
	Count         int        `json:"count"`
	Notifications []Resource `json:"notifications"`
}

// createBatch validates every item before anything is stored: one bad item
// refuses the whole batch with every bad field named. Otherwise the batch,
// its notifications and their outbox rows are stored in one transaction.
//
// Idempotency: the Idempotency-Key header names the batch request as a
// whole (a retry replays the first answer). Items may carry their own
// idempotencyKey; when any of them is already taken, the whole batch is
// refused with 409 naming each such item, and nothing is stored.
func (s *Server) createBatch(c *fiber.Ctx) (err error) {
	ctx, span := startRequestSpan(c, "POST /v1/notifications/batch")
	defer func() { endRequestSpan(c, span, err) }()
	if err := requireJSON(c); err != nil {
		return err
	}
	var req BatchRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ve := &ValidationError{}
	key := idempotencyHeader(c, ve)
	switch n := len(req.Notifications); {
	case n == 0:
		ve.add("notifications", "must hold 1 to %d notifications", maxBatch)
	case n > maxBatch:
		ve.add("notifications", "must hold at most %d notifications (got %d); split the batch", maxBatch, n)
	}
	if err := ve.orNil(); err != nil {
		return err
	}

	now := time.Now()
	items := make([]store.NewNotification, len(req.Notifications))
	firstWithKey := make(map[string]int)
	templates := map[string]store.Template{}
	for i, raw := range req.Notifications {
		prefix := fmt.Sprintf("notifications[%d]", i)
		var item CreateRequest
		if fe := decodeItem(raw, &item, prefix); fe != nil {
			ve.Fields = append(ve.Fields, fe.Fields...)
			continue
		}
		nn, fe := item.validate(prefix+".", now)
		if fe != nil {
			ve.Fields = append(ve.Fields, fe.Fields...)
			continue
		}
		if k := nn.IdempotencyKey; k != nil {
			if j, dup := firstWithKey[*k]; dup {
				ve.add(prefix+".idempotencyKey", "repeats the key of notifications[%d]; each notification needs its own key", j)
				continue
			}
			firstWithKey[*k] = i
			fp := fingerprint(nn)
			nn.RequestFingerprint = &fp
		}
		if err := s.applyTemplate(c, &nn, prefix+".", templates); err != nil {
			var fe *ValidationError
			if !errors.As(err, &fe) {
				return err
			}
			ve.Fields = append(ve.Fields, fe.Fields...)
			continue
		}
		items[i] = nn
	}
	if err := ve.orNil(); err != nil {
		return err
	}

	tid := tenant(c).ID
	for i := range items {
		items[i].TenantID = tid
	}
	nb := store.NewBatch{ID: uuid.Must(uuid.NewV7()), TenantID: tid, IdempotencyKey: key, Notifications: items}
	if key != nil {
		fp := batchFingerprint(items)
		nb.RequestFingerprint = &fp
	}
	nb.TraceParent = traceBatch(ctx, span, nb)
	var (
		batch    store.Batch
		notes    []store.Notification
		replayed bool
	)
	refund, err := s.takeQuota(c, len(items))
	if err != nil {
		return err
	}
	err = s.withKey(c, "batch", key, func(db store.DB) (err error) {
		batch, notes, replayed, err = store.CreateBatch(c.UserContext(), db, nb)
		return err
	})
	if err != nil || replayed {
		refund() // nothing stored
	}
	var taken *store.KeysTakenError
	switch {
	case errors.As(err, &taken):
		return explain(err, typeIdempotencyConflict,
			fmt.Sprintf("%d notification(s) carry an idempotency key already used; nothing was stored", len(taken.Taken)),
			takenFields(taken)...)
	case errors.Is(err, store.ErrConflict):
		return explain(err, typeIdempotencyConflict,
			"the Idempotency-Key was already used for a different batch; send a new key for a new batch")
	case err != nil:
		return err
	}

	c.Location("/v1/batches/" + batch.ID.String())
	views, err := s.views(c.UserContext(), notes)
	if err != nil {
		return err
	}
	resp := BatchResponse{BatchID: batch.ID.String(), Count: len(notes), Notifications: views}
	if replayed {
		c.Set(headerReplayed, "true")
		return c.Status(fiber.StatusOK).JSON(resp)
	}
	for _, n := range notes {
		s.metrics.Accepted.WithLabelValues(string(n.Channel), string(n.Priority)).Inc()
	}
	s.metrics.TenantAccepted.WithLabelValues(s.metrics.Tenants.Label(tenant(c).Name)).Add(float64(len(notes)))
	s.accepted()
	s.log.Info("batch accepted", append(requestFields(c, nil), zap.String("batch_id", resp.BatchID), zap.Int("count", len(notes)))...)
	return c.Status(fiber.StatusAccepted).JSON(resp)
}

func takenFields(e *store.KeysTakenError) []FieldError {
	idx := e.Items()
	fields := make([]FieldError, len(idx))
	for k, i := range idx {
		fields[k] = FieldError{
			Field:   fmt.Sprintf("notifications[%d].idempotencyKey", i),
			Message: "is already used by notification " + e.Taken[i].String(),
		}
	}
	return fields
}

// BatchSummary is a batch as GET /v1/batches/{batchId} shows it.
type BatchSummary struct {
	BatchID   string         `json:"batchId"`
	Total     int            `json:"total"`
	CreatedAt time.Time      `json:"createdAt"`
	ByStatus  map[string]int `json:"byStatus"`
	ByChannel map[string]int `json:"byChannel"`
	Links     BatchLinks     `json:"links"`
}

// BatchLinks point at a batch's related pages.
type BatchLinks struct {
	Self string `json:"self"`
	// Notifications lists the batch's notifications.
	Notifications string `json:"notifications"`
}

func (s *Server) getBatch(c *fiber.Ctx) error {
	id, err := pathUUID(c, "batchId")
	if err != nil {
		return err
	}
	sum, err := store.GetBatchSummary(c.UserContext(), s.pool, tenant(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return explain(err, typeNotFound, "no batch "+id.String())
	}
	if err != nil {
		return err
	}
	byStatus := make(map[string]int, len(sum.ByStatus))
	for st, n := range sum.ByStatus {
		byStatus[string(st)] = n
	}
	return c.JSON(BatchSummary{
		BatchID: sum.ID.String(), Total: sum.Total, CreatedAt: sum.CreatedAt,
		ByStatus: byStatus, ByChannel: sum.ByChannel,
		Links: BatchLinks{
			Self:          "/v1/batches/" + sum.ID.String(),
			Notifications: "/v1/notifications?batchId=" + sum.ID.String(),
		},
	})
}
