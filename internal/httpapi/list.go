package httpapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// Page sizes of GET /v1/notifications.
const (
	defaultLimit = 50
	maxLimit     = 100
)

// listQuery names every query parameter GET /v1/notifications takes; any
// other is refused, so a misspelt filter never silently lists everything.
var listQuery = []string{"status", "channel", "priority", "batchId", "createdFrom", "createdTo", "limit", "cursor"}

// ListResponse is a page of notifications. NextCursor is null on the last page.
type ListResponse struct {
	Data       []Resource `json:"data"`
	NextCursor *string    `json:"nextCursor"`
}

// cursor is the position after a page, opaque to clients: base64url of this
// JSON. Filter binds it to the filters of the listing it came from.
type cursor struct {
	Version   int    `json:"v"`
	CreatedAt int64  `json:"t"` // Unix microseconds: PostgreSQL's precision, exactly
	ID        string `json:"i"`
	Filter    string `json:"f"`
}

const cursorVersion = 1

func (s *Server) listNotifications(c *fiber.Ctx) error {
	f, filterKey, err := parseListQuery(c)
	if err != nil {
		return err
	}
	// One row more than the page tells whether another page follows.
	limit := f.Limit
	f.Limit++
	rows, err := store.ListNotifications(c.UserContext(), s.pool, f)
	if err != nil {
		return err
	}
	data, err := s.views(c.UserContext(), rows[:min(limit, len(rows))])
	if err != nil {
		return err
	}
	resp := ListResponse{Data: data}
	if len(rows) > limit {
		last := rows[limit-1]
		next := encodeCursor(cursor{Version: cursorVersion, CreatedAt: last.CreatedAt.UnixMicro(), ID: last.ID.String(), Filter: filterKey})
		resp.NextCursor = &next
	}
	return c.JSON(resp)
}

// parseListQuery validates the query; every bad parameter is named in one
// 400 answer. filterKey identifies the filters, for binding cursors to them.
func parseListQuery(c *fiber.Ctx) (f store.ListFilter, filterKey string, err error) {
	ve := &ValidationError{}
	values := map[string]string{}
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		name := string(k)
		switch _, seen := values[name]; {
		case !slices.Contains(listQuery, name):
			ve.add(name, "unknown query parameter; known: status, channel, priority, batchId, createdFrom, createdTo, limit, cursor")
		case seen:
			ve.add(name, "given more than once")
		}
		values[name] = string(v)
	})
	get := func(name string) (string, bool) {
		v, ok := values[name]
		return v, ok && slices.Contains(listQuery, name)
	}

	if v, ok := get("status"); ok {
		if !notification.ValidStatus(v) {
			ve.add("status", "must be one of ACCEPTED, QUEUED, SCHEDULED, PROCESSING, RETRYING, SENT, DELIVERED, FAILED, CANCELLED, SKIPPED")
		}
		st := store.Status(v)
		f.Status = &st
	}
	if v, ok := get("channel"); ok {
		if !notification.ValidChannel(v) {
			ve.add("channel", "must be one of sms, email, push")
		}
		f.Channel = &v
	}
	if v, ok := get("priority"); ok {
		if !notification.ValidPriority(v) {
			ve.add("priority", "must be one of HIGH, NORMAL, LOW")
		}
		f.Priority = &v
	}
	if v, ok := get("batchId"); ok {
		id, err := uuid.Parse(v)
		if err != nil || len(v) != 36 {
			ve.add("batchId", "must be a UUID")
		}
		f.BatchID = &id
	}
	for _, p := range []struct {
		name string
		dst  **time.Time
	}{{"createdFrom", &f.CreatedFrom}, {"createdTo", &f.CreatedTo}} {
		if v, ok := get(p.name); ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				ve.add(p.name, "must be an RFC 3339 date-time, e.g. 2026-01-02T15:04:05Z (URL-encode a + offset as %%2B)")
				continue
			}
			*p.dst = &t
		}
	}
	if f.CreatedFrom != nil && f.CreatedTo != nil && !f.CreatedTo.After(*f.CreatedFrom) {
		ve.add("createdTo", "must be after createdFrom")
	}
	f.Limit = defaultLimit
	if v, ok := get("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			ve.add("limit", "must be an integer from 1 to %d", maxLimit)
		}
		f.Limit = n
	}
	// The tenant is part of the filters: a cursor never crosses tenants.
	tid := tenant(c).ID
	f.Tenant = &tid
	filterKey = listFilterKey(f)
	if v, ok := get("cursor"); ok {
		cur, okCur := decodeCursor(v)
		switch {
		case !okCur:
			ve.add("cursor", "is not a cursor this API returned; pass nextCursor as it came")
		case cur.Filter != filterKey:
			ve.add("cursor", "belongs to a listing with other filters; keep the first page's filters while paging")
		default:
			id, _ := uuid.Parse(cur.ID)
			f.After = &store.Keyset{CreatedAt: time.UnixMicro(cur.CreatedAt), ID: id}
		}
	}
	if len(ve.Fields) > 0 {
		return store.ListFilter{}, "", newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	return f, filterKey, nil
}

// listFilterKey is a short hash of the filters (not the page size).
func listFilterKey(f store.ListFilter) string {
	key := struct {
		Status, Channel, Priority *string
		BatchID, Tenant           *uuid.UUID
		From, To                  *int64
	}{Channel: f.Channel, Priority: f.Priority, BatchID: f.BatchID, Tenant: f.Tenant}
	if f.Status != nil {
		s := string(*f.Status)
		key.Status = &s
	}
	if f.CreatedFrom != nil {
		t := f.CreatedFrom.UnixMicro()
		key.From = &t
	}
	if f.CreatedTo != nil {
		t := f.CreatedTo.UnixMicro()
		key.To = &t
	}
	raw, _ := json.Marshal(key)
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

func encodeCursor(c cursor) string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCursor(s string) (cursor, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false
	}
	var c cursor
	if err := json.Unmarshal(raw, &c); err != nil || c.Version != cursorVersion {
		return cursor{}, false
	}
	if _, err := uuid.Parse(c.ID); err != nil {
		return cursor{}, false
	}
	return c, true
}
