package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Keyset is a position in the listing order (created_at DESC, id DESC): the
// last row of a page. The next page starts strictly after it.
type Keyset struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// ListFilter selects notifications; a nil field does not filter.
type ListFilter struct {
	// Tenant confines the list to one tenant's notifications (nil: all).
	Tenant   *uuid.UUID
	Status   *Status
	Channel  *string
	Priority *string
	BatchID  *uuid.UUID
	// CreatedFrom is inclusive, CreatedTo exclusive.
	CreatedFrom *time.Time
	CreatedTo   *time.Time
	// After is the last row of the previous page; nil for the first page.
	After *Keyset
	// Limit bounds the page; it must be positive.
	Limit int
}

// ListNotifications returns up to f.Limit notifications matching f, newest
// first (created_at DESC, id DESC), after f.After.
//
// Pages are cut by keyset, not offset, on the indexes that hold this order
// (notifications_created_idx, and the status and batch ones), so a page
// costs the same at any depth, and rows added while a client pages (which
// are newer than its position) neither shift nor repeat the rows it has
// yet to see.
func ListNotifications(ctx context.Context, q Querier, f ListFilter) ([]Notification, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("listing notifications: limit %d must be positive", f.Limit)
	}
	// Only the predicates in use are written, so each combination gets its
	// own plan and the planner can pick the index that matches it.
	var args []any
	where := OperationFilter{Tenant: f.Tenant, Status: f.Status, Channel: f.Channel, Priority: f.Priority, BatchID: f.BatchID,
		CreatedFrom: f.CreatedFrom, CreatedTo: f.CreatedTo}.where(&args)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.After != nil {
		where = append(where, "(created_at, id) < ("+arg(f.After.CreatedAt)+", "+arg(f.After.ID)+")")
	}
	sql := `SELECT ` + notificationColumns + ` FROM notifications`
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(f.Limit)

	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("listing notifications: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return nil, fmt.Errorf("listing notifications: %w", err)
	}
	return list, nil
}
