package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// The actions of an operation.
const (
	ActionRetry  = "retry"
	ActionCancel = "cancel"
	ActionErase  = "erase"
)

// The statuses of an operation.
const (
	OperationRunning   = "RUNNING"
	OperationCompleted = "COMPLETED"
	OperationCancelled = "CANCELLED"
	OperationFailed    = "FAILED"
)

// Erased is what an erased notification's recipient, content and subject
// become.
const Erased = "[erased]"

// SkipNoLongerMatching counts, when an operation completes, the rows it
// matched at the start that no longer matched its filter when their page
// was read (another request changed them meanwhile).
const SkipNoLongerMatching = "no-longer-matching"

// OperationFilter selects the notifications an operation acts on: the list
// endpoint's filters, plus failureReason and recipient. A nil field does not
// filter.
type OperationFilter struct {
	Status        *Status    `json:"status,omitempty"`
	Channel       *string    `json:"channel,omitempty"`
	Priority      *string    `json:"priority,omitempty"`
	BatchID       *uuid.UUID `json:"batchId,omitempty"`
	CreatedFrom   *time.Time `json:"createdFrom,omitempty"`
	CreatedTo     *time.Time `json:"createdTo,omitempty"`
	FailureReason *string    `json:"failureReason,omitempty"`
	Recipient     *string    `json:"recipient,omitempty"`
	// Tenant confines the filter to one tenant's notifications. It is not
	// part of the stored filter: an operation's comes from its row.
	Tenant *uuid.UUID `json:"-"`
}

// where writes f as SQL predicates over notifications, adding its values
// to args; only the predicates in use are written (ListNotifications uses
// it too).
func (f OperationFilter) where(args *[]any) []string {
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	var where []string
	if f.Tenant != nil {
		where = append(where, "tenant_id = "+arg(*f.Tenant))
	}
	if f.Status != nil {
		where = append(where, "status = "+arg(string(*f.Status)))
	}
	if f.Channel != nil {
		where = append(where, "channel = "+arg(*f.Channel))
	}
	if f.Priority != nil {
		where = append(where, "priority = "+arg(*f.Priority))
	}
	if f.BatchID != nil {
		where = append(where, "batch_id = "+arg(*f.BatchID))
	}
	if f.CreatedFrom != nil {
		where = append(where, "created_at >= "+arg(*f.CreatedFrom))
	}
	if f.CreatedTo != nil {
		where = append(where, "created_at < "+arg(*f.CreatedTo))
	}
	if f.FailureReason != nil {
		where = append(where, "failure_reason = "+arg(*f.FailureReason))
	}
	if f.Recipient != nil {
		where = append(where, "recipient = "+arg(*f.Recipient))
	}
	return where
}

// Operation is one row of operations.
type Operation struct {
	ID                 uuid.UUID        `db:"id"`
	Action             string           `db:"action"`
	Filter             OperationFilter  `db:"filter"`
	MaxPerSecond       int              `db:"max_per_second"`
	Status             string           `db:"status"`
	Matched            int64            `db:"matched"`
	Processed          int64            `db:"processed"`
	Succeeded          int64            `db:"succeeded"`
	Skipped            map[string]int64 `db:"skipped"`
	CursorCreatedAt    *time.Time       `db:"cursor_created_at"`
	CursorID           *uuid.UUID       `db:"cursor_id"`
	Error              *string          `db:"error"`
	IdempotencyKey     *string          `db:"idempotency_key"`
	RequestFingerprint *string          `db:"request_fingerprint"`
	CancelRequestedAt  *time.Time       `db:"cancel_requested_at"`
	CreatedAt          time.Time        `db:"created_at"`
	UpdatedAt          time.Time        `db:"updated_at"`
	FinishedAt         *time.Time       `db:"finished_at"`
	// TenantID owns the operation; its filter reads only this tenant's
	// notifications.
	TenantID uuid.UUID `db:"tenant_id"`
}

const operationColumns = `id, action, filter, max_per_second, status, matched, processed, succeeded, skipped,
	cursor_created_at, cursor_id, error, idempotency_key, request_fingerprint, cancel_requested_at,
	created_at, updated_at, finished_at, tenant_id`

func scanOperation(row pgx.CollectableRow) (Operation, error) {
	op, err := pgx.RowToStructByName[Operation](row)
	op.Filter.Tenant = &op.TenantID
	return op, err
}

// CountMatching counts the notifications f matches (an operation's dry run).
func CountMatching(ctx context.Context, q Querier, f OperationFilter) (int64, error) {
	var args []any
	sql := `SELECT count(*) FROM notifications`
	if where := f.where(&args); len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	var n int64
	if err := q.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting matching notifications: %w", err)
	}
	return n, nil
}

// NewOperation is an operation a client asked for, validated.
type NewOperation struct {
	ID uuid.UUID
	// TenantID owns the operation; the filter is confined to it.
	TenantID           uuid.UUID
	Action             string
	Filter             OperationFilter
	MaxPerSecond       int
	IdempotencyKey     *string
	RequestFingerprint *string
}

// CreateOperation stores a RUNNING operation with the count of the
// notifications its filter matches now (matched), in one statement. A key
// taken by an operation with the same fingerprint returns that one with
// replayed true; with another fingerprint it is ErrConflict.
func CreateOperation(ctx context.Context, q Querier, o NewOperation) (op Operation, replayed bool, err error) {
	filter, err := json.Marshal(o.Filter)
	if err != nil {
		return Operation{}, false, fmt.Errorf("encoding the operation's filter: %w", err)
	}
	tenant := TenantOrDefault(o.TenantID)
	o.Filter.Tenant = &tenant
	args := []any{o.ID, o.Action, filter, o.MaxPerSecond, o.IdempotencyKey, o.RequestFingerprint, tenant}
	count := `SELECT count(*) FROM notifications WHERE ` + strings.Join(o.Filter.where(&args), " AND ")
	rows, err := q.Query(ctx, `
		INSERT INTO operations (id, action, filter, max_per_second, idempotency_key, request_fingerprint, tenant_id, matched)
		VALUES ($1, $2, $3, $4, $5, $6, $7, (`+count+`))
		ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
		RETURNING `+operationColumns, args...)
	if err != nil {
		return Operation{}, false, fmt.Errorf("creating operation: %w", err)
	}
	created, err := pgx.CollectRows(rows, scanOperation)
	if err != nil {
		return Operation{}, false, fmt.Errorf("creating operation: %w", err)
	}
	if len(created) == 1 {
		return created[0], false, nil
	}
	if o.IdempotencyKey == nil {
		return Operation{}, false, errors.New("creating operation: no row inserted")
	}
	rows, err = q.Query(ctx, `SELECT `+operationColumns+` FROM operations WHERE tenant_id = $1 AND idempotency_key = $2`,
		tenant, *o.IdempotencyKey)
	if err != nil {
		return Operation{}, false, fmt.Errorf("loading operation by idempotency key: %w", err)
	}
	existing, err := pgx.CollectExactlyOneRow(rows, scanOperation)
	if err != nil {
		return Operation{}, false, fmt.Errorf("loading operation by idempotency key: %w", err)
	}
	if !sameFingerprint(existing.RequestFingerprint, o.RequestFingerprint) {
		return Operation{}, false, fmt.Errorf("idempotency key used by operation %s for another request: %w", existing.ID, ErrConflict)
	}
	return existing, true, nil
}

// GetOperation loads one operation; ErrNotFound when there is none.
func GetOperation(ctx context.Context, q Querier, id uuid.UUID) (Operation, error) {
	rows, err := q.Query(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = $1`, id)
	if err != nil {
		return Operation{}, fmt.Errorf("loading operation: %w", err)
	}
	op, err := pgx.CollectExactlyOneRow(rows, scanOperation)
	if errors.Is(err, pgx.ErrNoRows) {
		return Operation{}, ErrNotFound
	}
	if err != nil {
		return Operation{}, fmt.Errorf("loading operation: %w", err)
	}
	return op, nil
}

// ListOperations returns up to limit of the tenant's operations, newest
// first, after the keyset position after (nil for the first page).
func ListOperations(ctx context.Context, q Querier, tenant uuid.UUID, after *Keyset, limit int) ([]Operation, error) {
	args := []any{limit, TenantOrDefault(tenant)}
	sql := `SELECT ` + operationColumns + ` FROM operations WHERE tenant_id = $2`
	if after != nil {
		args = append(args, after.CreatedAt, after.ID)
		sql += ` AND (created_at, id) < ($3, $4)`
	}
	rows, err := q.Query(ctx, sql+` ORDER BY created_at DESC, id DESC LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	ops, err := pgx.CollectRows(rows, scanOperation)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	return ops, nil
}

// RequestOperationCancel records a cancel request on a RUNNING operation
// (its next page ends it CANCELLED) and returns it. An operation already
// finished is returned unchanged with requested false.
func RequestOperationCancel(ctx context.Context, q Querier, id uuid.UUID) (op Operation, requested bool, err error) {
	rows, err := q.Query(ctx, `
		UPDATE operations SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now()
		WHERE id = $1 AND status = 'RUNNING'
		RETURNING `+operationColumns, id)
	if err != nil {
		return Operation{}, false, fmt.Errorf("cancelling operation: %w", err)
	}
	op, err = pgx.CollectExactlyOneRow(rows, scanOperation)
	if err == nil {
		return op, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Operation{}, false, fmt.Errorf("cancelling operation: %w", err)
	}
	op, err = GetOperation(ctx, q, id)
	return op, false, err
}

// FailOperation ends a RUNNING operation FAILED with why (a page the
// database refuses, which no retry mends); like a finished one, it forgets
// the recipient it was given (finishedRecipient).
func FailOperation(ctx context.Context, q Querier, id uuid.UUID, why string) error {
	var (
		action    string
		recipient *string
	)
	err := q.QueryRow(ctx, `SELECT action, filter->>'recipient' FROM operations WHERE id = $1`, id).Scan(&action, &recipient)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failing operation: %w", err)
	}
	kept := ""
	if recipient != nil {
		kept = finishedRecipient(action, *recipient)
	}
	_, err = q.Exec(ctx, `
		UPDATE operations SET status = 'FAILED', error = $2, finished_at = now(), updated_at = now(),
			filter = CASE WHEN filter ? 'recipient' THEN jsonb_set(filter, '{recipient}', to_jsonb($3::text)) ELSE filter END
		WHERE id = $1 AND status = 'RUNNING'`, id, SafeText(why), kept)
	if err != nil {
		return fmt.Errorf("failing operation: %w", err)
	}
	return nil
}

// finishedRecipient is what a finished operation's filter keeps of the
// recipient it named: the address is forgotten, and the filter shows what
// the operation did to that person: Erased after an erase, and the mask
// its answers showed while it ran after anything else (a cancel or a retry
// erased nothing, so its filter must not say [erased]).
func finishedRecipient(action, recipient string) string {
	if action == ActionErase || recipient == Erased {
		return Erased
	}
	return notification.MaskRecipient("", recipient)
}

// StaleOperations lists the RUNNING operations untouched for longer than
// idle: their workflow may be gone (a crash between the row and its start,
// an operator's terminate), so the worker starts it again.
func StaleOperations(ctx context.Context, q Querier, idle time.Duration) ([]uuid.UUID, error) {
	rows, err := q.Query(ctx, `
		SELECT id FROM operations WHERE status = 'RUNNING' AND updated_at < now() - make_interval(secs => $1)
		ORDER BY created_at LIMIT 100`, idle.Seconds())
	if err != nil {
		return nil, fmt.Errorf("listing stale operations: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("listing stale operations: %w", err)
	}
	return ids, nil
}

// PageItem is a notification of an operation's page, as it was when the
// page locked it.
type PageItem struct {
	ID       uuid.UUID             `db:"id"`
	Channel  notification.Channel  `db:"channel"`
	Priority notification.Priority `db:"priority"`
	Status   Status                `db:"status"`
	Erased   bool                  `db:"erased"`
}

// PageResult is what one page of an operation did.
type PageResult struct {
	// Done: the operation is no longer RUNNING (completed, cancelled);
	// Status says how it ended.
	Done   bool
	Status string
	// Items is how many notifications the page visited, Succeeded how many
	// it acted on.
	Items, Succeeded int
	// Signal lists the notifications whose workflows should hear the
	// cancel signal (the operation cancelled or erased them while a
	// workflow waited or delivered).
	Signal []uuid.UUID
	// Cancelled lists the notifications the page moved to CANCELLED itself.
	Cancelled []PageItem
}

// RunPage does one page of operation id: in one transaction it locks the
// operation, then the next limit notifications its filter matches (newest
// first, created no later than the operation, after its cursor), acts on
// them, and moves the cursor and the counts. A crash before the commit
// undoes the page, after it the page is done once: an operation resumes
// without doing an item twice. A RUNNING operation whose cancel was
// requested ends CANCELLED; one with no notifications left ends COMPLETED.
func RunPage(ctx context.Context, db TxStarter, id uuid.UUID, limit int) (res PageResult, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return PageResult{}, fmt.Errorf("running operation page: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = $1 FOR UPDATE`, id)
	if err != nil {
		return PageResult{}, fmt.Errorf("locking operation: %w", err)
	}
	op, err := pgx.CollectExactlyOneRow(rows, scanOperation)
	if errors.Is(err, pgx.ErrNoRows) {
		return PageResult{}, ErrNotFound
	}
	if err != nil {
		return PageResult{}, fmt.Errorf("locking operation: %w", err)
	}
	switch {
	case op.Status != OperationRunning:
		return PageResult{Done: true, Status: op.Status}, nil
	case op.CancelRequestedAt != nil:
		return finishOperation(ctx, tx, op, OperationCancelled)
	}

	args := []any{op.CreatedAt}
	where := append(op.Filter.where(&args), "created_at <= $1")
	if op.CursorCreatedAt != nil && op.CursorID != nil {
		args = append(args, *op.CursorCreatedAt, *op.CursorID)
		where = append(where, fmt.Sprintf("(created_at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	args = append(args, limit)
	rows, err = tx.Query(ctx, `
		SELECT id, channel, priority, status, erased_at IS NOT NULL AS erased, created_at FROM notifications
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY created_at DESC, id DESC LIMIT $`+strconv.Itoa(len(args))+` FOR UPDATE`, args...)
	if err != nil {
		return PageResult{}, fmt.Errorf("reading operation page: %w", err)
	}
	type row struct {
		PageItem
		CreatedAt time.Time `db:"created_at"`
	}
	page, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return PageResult{}, fmt.Errorf("reading operation page: %w", err)
	}
	if len(page) == 0 {
		return finishOperation(ctx, tx, op, OperationCompleted)
	}
	items := make([]PageItem, len(page))
	for i, r := range page {
		items[i] = r.PageItem
	}
	skipped := map[string]int64{}
	switch op.Action {
	case ActionRetry:
		res, err = retryPage(ctx, tx, items, skipped)
	case ActionCancel:
		res, err = cancelPage(ctx, tx, items, skipped)
	case ActionErase:
		res, err = erasePage(ctx, tx, items, skipped)
	default:
		err = fmt.Errorf("operation %s: unknown action %q", op.ID, op.Action)
	}
	if err != nil {
		return PageResult{}, err
	}
	res.Items = len(items)
	if op.Skipped == nil {
		op.Skipped = map[string]int64{}
	}
	for why, n := range skipped {
		op.Skipped[why] += n
	}
	last := page[len(page)-1]
	_, err = tx.Exec(ctx, `
		UPDATE operations SET cursor_created_at = $2, cursor_id = $3, processed = processed + $4,
			succeeded = succeeded + $5, skipped = $6, updated_at = now()
		WHERE id = $1`, op.ID, last.CreatedAt, last.ID, len(items), res.Succeeded, op.Skipped)
	if err != nil {
		return PageResult{}, fmt.Errorf("recording operation progress: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return PageResult{}, fmt.Errorf("committing operation page: %w", err)
	}
	return res, nil
}

// finishOperation ends op with status: the rows matched at the start and
// not visited (they left the filter meanwhile) count as skipped, so a
// completed operation processed what it matched; it forgets the recipient
// it was given (finishedRecipient). A completed erase also erases that
// address's suppressions, opt-outs and profile address rows (eraseAddress);
// the profiles stay, with their other addresses.
func finishOperation(ctx context.Context, tx pgx.Tx, op Operation, status string) (PageResult, error) {
	if op.Skipped == nil {
		op.Skipped = map[string]int64{}
	}
	if status == OperationCompleted {
		if gone := op.Matched - op.Processed; gone > 0 {
			op.Skipped[SkipNoLongerMatching] += gone
			op.Processed = op.Matched
		}
		op.Matched = max(op.Matched, op.Processed)
	}
	if r := op.Filter.Recipient; r != nil {
		if op.Action == ActionErase && status == OperationCompleted && *r != Erased {
			// The person's address goes from the recipient side too: its
			// suppressions, opt-outs and the profile rows holding it.
			if err := eraseAddress(ctx, tx, op.TenantID, op.Filter.Channel, *r); err != nil {
				return PageResult{}, fmt.Errorf("finishing operation: %w", err)
			}
		}
		kept := finishedRecipient(op.Action, *r)
		op.Filter.Recipient = &kept
		if op.Action == ActionErase && *r != Erased {
			// The tenant's finished operations that named this person
			// keep its mask: after the erasure they say [erased] too.
			// (A running one still matches on the address itself.)
			if _, err := tx.Exec(ctx, `
				UPDATE operations SET filter = jsonb_set(filter, '{recipient}', to_jsonb($3::text)), updated_at = now()
				WHERE tenant_id = $1 AND id <> $2 AND status <> 'RUNNING' AND filter->>'recipient' = $4`,
				op.TenantID, op.ID, Erased, notification.MaskRecipient("", *r)); err != nil {
				return PageResult{}, fmt.Errorf("finishing operation: %w", err)
			}
		}
	}
	_, err := tx.Exec(ctx, `
		UPDATE operations SET status = $2, matched = $3, processed = $4, skipped = $5, filter = $6,
			finished_at = now(), updated_at = now()
		WHERE id = $1`, op.ID, status, op.Matched, op.Processed, op.Skipped, op.Filter)
	if err != nil {
		return PageResult{}, fmt.Errorf("finishing operation: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return PageResult{}, fmt.Errorf("finishing operation: %w", err)
	}
	return PageResult{Done: true, Status: status}, nil
}

// skipReason names why an operation left a notification in status s alone.
func skipReason(s Status) string {
	if s.Terminal() {
		return strings.ToLower(string(s))
	}
	return "in-flight"
}

func ids(items []PageItem, keep func(PageItem) bool) []uuid.UUID {
	var out []uuid.UUID
	for _, it := range items {
		if keep(it) {
			out = append(out, it.ID)
		}
	}
	return out
}

func retryPage(ctx context.Context, tx pgx.Tx, items []PageItem, skipped map[string]int64) (PageResult, error) {
	var res PageResult
	for _, it := range items {
		switch {
		case it.Erased:
			skipped["erased"]++
		case !retryable(it.Status):
			skipped[skipReason(it.Status)]++
		}
	}
	todo := ids(items, func(it PageItem) bool { return !it.Erased && retryable(it.Status) })
	if len(todo) == 0 {
		return res, nil
	}
	if _, err := tx.Exec(ctx, retryStatement+` SELECT count(*) FROM u`, todo); err != nil {
		return res, fmt.Errorf("retrying notifications: %w", err)
	}
	res.Succeeded = len(todo) // the rows are locked: each was retried
	return res, nil
}

// eraseKeys are the CTEs of erasePage's statement that forget the keys of
// the erased notifications (e: id, batch_id, tenant_id, and address, the
// recipient in lower case without a leading +) and the keys and filters of
// the tenant's batches and operations that name an address (an operation's
// request fingerprint, a hash of a request naming it, goes with its
// filter's recipient). $2 is Erased.
const eraseKeys = `r AS (
			DELETE FROM notification_retries WHERE notification_id IN (SELECT id FROM e)
		), b AS (
			UPDATE batches SET idempotency_key = NULL
			WHERE id IN (SELECT batch_id FROM e) AND idempotency_key IS NOT NULL
				AND EXISTS (SELECT 1 FROM e WHERE e.batch_id = batches.id AND length(e.address) >= 3
					AND strpos(lower(batches.idempotency_key), e.address) > 0)
		), o AS (
			UPDATE operations op
			SET filter = CASE WHEN (op.action <> 'erase' OR op.status <> 'RUNNING')
					AND lower(ltrim(op.filter->>'recipient', '+')) IN (SELECT address FROM e WHERE e.tenant_id = op.tenant_id)
				THEN jsonb_set(op.filter, '{recipient}', to_jsonb($2::text)) ELSE op.filter END,
				request_fingerprint = CASE WHEN (op.action <> 'erase' OR op.status <> 'RUNNING')
					AND lower(ltrim(op.filter->>'recipient', '+')) IN (SELECT address FROM e WHERE e.tenant_id = op.tenant_id)
				THEN NULL ELSE op.request_fingerprint END,
				idempotency_key = CASE WHEN EXISTS (SELECT 1 FROM e WHERE e.tenant_id = op.tenant_id AND length(e.address) >= 3
					AND strpos(lower(op.idempotency_key), e.address) > 0)
				THEN NULL ELSE op.idempotency_key END
			WHERE op.tenant_id IN (SELECT tenant_id FROM e)
				AND EXISTS (SELECT 1 FROM e WHERE e.tenant_id = op.tenant_id AND length(e.address) >= 3
					AND (lower(ltrim(op.filter->>'recipient', '+')) = e.address
						OR strpos(lower(op.idempotency_key), e.address) > 0))
		)`

// cancelPage cancels the page's notifications that are not terminal: each
// gets the cancel flag, which alone stops it (no attempt starts once it is
// set); one no attempt is running for (ACCEPTED, QUEUED, SCHEDULED) becomes
// CANCELLED at once, and the workflows that wait or deliver are to hear the
// signal, which ends a wait or an attempt at once.
func cancelPage(ctx context.Context, tx pgx.Tx, items []PageItem, skipped map[string]int64) (PageResult, error) {
	var res PageResult
	todo := ids(items, func(it PageItem) bool { return !it.Status.Terminal() })
	for _, it := range items {
		if it.Status.Terminal() {
			skipped[skipReason(it.Status)]++
		}
	}
	if err := requestCancels(ctx, tx, todo); err != nil {
		return res, err
	}
	for _, it := range items {
		switch it.Status {
		case notification.StatusAccepted, notification.StatusQueued, notification.StatusScheduled:
			res.Cancelled = append(res.Cancelled, it)
		}
		if it.Status != notification.StatusAccepted && it.Status != notification.StatusQueued && !it.Status.Terminal() {
			res.Signal = append(res.Signal, it.ID)
		}
	}
	res.Succeeded = len(todo)
	return res, nil
}

func requestCancels(ctx context.Context, tx pgx.Tx, todo []uuid.UUID) error {
	if len(todo) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		UPDATE notifications
		SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
			status = CASE WHEN status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED') THEN 'CANCELLED' ELSE status END,
			next_attempt_at = CASE WHEN status IN ('ACCEPTED', 'QUEUED', 'SCHEDULED') THEN NULL ELSE next_attempt_at END,
			updated_at = now()
		WHERE id = ANY($1) AND status IN `+nonTerminal, todo)
	if err != nil {
		return fmt.Errorf("cancelling notifications: %w", err)
	}
	return nil
}

// erasePage erases the page's notifications: one still in flight is
// cancelled first (as cancelPage does); then recipient, content and subject
// become Erased, metadata and the request fingerprint (a hash of them) go,
// as do a digest message's items and the ordering and digest keys,
// and so do the attempts' errors, response excerpts, receipt reasons and
// provider message ids; a FAILED one's dead-letter messages are retired and
// its record not yet relayed dropped. The row stays, marked erased.
//
// Keys often carry the address, so they go too (eraseKeys): the
// notification's idempotency key and its retries' keys are forgotten, and
// so are the keys of the tenant's batches and operations that name an
// erased address, and an operation's filter naming one becomes Erased (but
// a running erasure's, which it still needs and forgets when it ends).
// A forgotten key is as one retention deleted: the same key again is a new
// request.
func erasePage(ctx context.Context, tx pgx.Tx, items []PageItem, skipped map[string]int64) (PageResult, error) {
	res, err := cancelPage(ctx, tx, items, map[string]int64{})
	if err != nil {
		return res, err
	}
	res.Succeeded = 0
	for _, it := range items {
		if it.Erased {
			skipped["already-erased"]++
		}
	}
	todo := ids(items, func(it PageItem) bool { return !it.Erased })
	if len(todo) == 0 {
		return res, nil
	}
	_, err = tx.Exec(ctx, `
		WITH old AS (
			SELECT id, recipient FROM notifications WHERE id = ANY($1)
		), e AS (
			UPDATE notifications n
			SET recipient = $2, content = $2, subject = CASE WHEN n.subject IS NULL THEN NULL ELSE $2 END,
				metadata = NULL, request_fingerprint = NULL, idempotency_key = NULL, last_error = NULL,
				-- A digest's message lists its members' words; ordering and
				-- digest keys, like idempotency keys, may name the person.
				digest_items = NULL, ordering_key = NULL, digest_key = NULL,
				-- A template's rendered HTML holds the same words as its content.
				html = NULL,
				erased_at = now(), updated_at = now()
			FROM old WHERE n.id = old.id
			RETURNING n.id, n.channel, n.status, n.generation, n.batch_id, n.tenant_id,
				lower(ltrim(old.recipient, '+')) AS address
		), a AS (
			UPDATE delivery_attempts SET error = NULL, response_excerpt = NULL, receipt_reason = NULL, provider_message_id = NULL
			WHERE notification_id IN (SELECT id FROM e)
		), t AS (
			DELETE FROM throttle_slots WHERE notification_id IN (SELECT id FROM e)
		), `+eraseKeys+`, d AS (
			DELETE FROM outbox WHERE dead_letter IS NOT NULL AND notification_id IN (SELECT id FROM e)
		)
		INSERT INTO dead_letter_retirements (notification_id, channel, below_generation)
		SELECT id, channel, generation + 1 FROM e WHERE status = 'FAILED'
		ON CONFLICT DO NOTHING`, todo, Erased)
	if err != nil {
		return res, fmt.Errorf("erasing notifications: %w", err)
	}
	res.Succeeded = len(todo)
	return res, nil
}
