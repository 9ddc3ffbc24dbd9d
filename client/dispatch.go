package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Dispatch is the hand-written face of the API over the generated
// ClientWithResponses: it sends the API key with every request, answers the
// resource a call is about, and turns every non-2xx answer into a *Problem.
// Calls it does not wrap (providers, dead letters, receipts, probes) are on
// Raw. A Dispatch is safe for concurrent use.
type Dispatch struct {
	raw *ClientWithResponses
}

// New returns a Dispatch for the API at baseURL (http://127.0.0.1:8080)
// that sends apiKey as `Authorization: Bearer <apiKey>` with every request
// (none when apiKey is empty). opts are the generated client's options:
// WithHTTPClient for timeouts and transports, WithRequestEditorFn for more
// headers.
func New(baseURL, apiKey string, opts ...ClientOption) (*Dispatch, error) {
	if apiKey != "" {
		bearer := "Bearer " + apiKey
		opts = append([]ClientOption{WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", bearer)
			return nil
		})}, opts...)
	}
	raw, err := NewClientWithResponses(baseURL, opts...)
	if err != nil {
		return nil, err
	}
	return &Dispatch{raw: raw}, nil
}

// Raw is the generated client underneath, with the same API key and options,
// for the calls Dispatch does not wrap and for status codes and headers.
func (d *Dispatch) Raw() *ClientWithResponses { return d.raw }

// WithIdempotencyKey sends key as the request's Idempotency-Key header
// (POST /v1/notifications, the batch, a retry and an operation take one).
func WithIdempotencyKey(key string) RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Idempotency-Key", key)
		return nil
	}
}

// WithRequestID sends id as the request's X-Request-Id, which the server logs
// and echoes.
func WithRequestID(id string) RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("X-Request-Id", id)
		return nil
	}
}

// Error makes a problem answer (RFC 9457) a Go error: its status and title,
// then each bad field, or else the detail:
//
//	422 Validation failed: recipient: must be an E.164 phone number; content: is required
//	404 Not found: notification 0190… does not exist
func (p *Problem) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", p.Status)
	if p.Title != "" {
		b.WriteString(" " + p.Title)
	}
	switch {
	case len(p.Errors) > 0:
		for i, fe := range p.Errors {
			if i == 0 {
				b.WriteString(": ")
			} else {
				b.WriteString("; ")
			}
			if fe.Field != "" {
				b.WriteString(fe.Field + ": ")
			}
			b.WriteString(fe.Message)
		}
	case p.Detail != "" && p.Detail != p.Title:
		b.WriteString(": " + p.Detail)
	}
	return b.String()
}

// Terminal reports whether s never changes again: DELIVERED, FAILED,
// CANCELLED or SKIPPED.
func (s Status) Terminal() bool {
	return s == StatusDELIVERED || s == StatusFAILED || s == StatusCANCELLED || s == StatusSKIPPED
}

// answer is what every generated response type offers.
type answer interface {
	StatusCode() int
	ContentType() string
	GetBody() []byte
}

// result returns v for a 2xx answer that carried it, and the answer as a
// *Problem otherwise.
func result[T any](r answer, v *T) (*T, error) {
	if r.StatusCode()/100 == 2 && v != nil {
		return v, nil
	}
	return nil, problemOf(r)
}

// problemOf reads a non-2xx answer as a *Problem. An answer that is not a
// problem document (a proxy's HTML page, an empty body) becomes one with the
// status, its standard text as the title and the start of the body as the
// detail, so callers handle a single error type.
func problemOf(r answer) *Problem {
	status, body := r.StatusCode(), r.GetBody()
	mt, _, _ := mime.ParseMediaType(r.ContentType())
	if mt == "application/problem+json" || mt == "application/json" {
		var p Problem
		if json.Unmarshal(body, &p) == nil && p.Status != 0 {
			return &p
		}
	}
	p := &Problem{Type: "about:blank", Status: status, Title: http.StatusText(status)}
	if status/100 == 2 {
		p.Title = "unexpected answer"
		p.Detail = fmt.Sprintf("a %d answer with Content-Type %q", status, r.ContentType())
		return p
	}
	detail := strings.TrimSpace(string(body))
	if len(detail) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut] + "…"
	}
	p.Detail = detail
	return p
}

// Send creates one notification (POST /v1/notifications). A replay of an
// earlier request with the same idempotency key (WithIdempotencyKey, or
// n.IdempotencyKey) answers the stored notification.
func (d *Dispatch) Send(ctx context.Context, n CreateNotification, editors ...RequestEditorFn) (*Notification, error) {
	r, err := d.raw.CreateNotificationWithResponse(ctx, nil, n, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON202, r.JSON200))
}

// SendBatch creates 1 to 1,000 notifications at once, all or none
// (POST /v1/notifications/batch); WithIdempotencyKey keys the batch request.
func (d *Dispatch) SendBatch(ctx context.Context, items []CreateNotification, editors ...RequestEditorFn) (*BatchAccepted, error) {
	r, err := d.raw.CreateBatchWithResponse(ctx, nil, CreateBatch{Notifications: items}, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON202, r.JSON200))
}

// Get reads one notification in its current state.
func (d *Dispatch) Get(ctx context.Context, id NotificationID, editors ...RequestEditorFn) (*Notification, error) {
	r, err := d.raw.GetNotificationWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// List reads one page of notifications, newest first, matching params'
// filters (nil: all). Pass the page's NextCursor as params.Cursor, with the
// same filters, for the next page; it is nil on the last.
func (d *Dispatch) List(ctx context.Context, params *ListNotificationsParams, editors ...RequestEditorFn) (*NotificationPage, error) {
	r, err := d.raw.ListNotificationsWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// ListAll pages through every notification params' filters match (params'
// Cursor is where it starts), fetching pages as the loop needs them. It
// yields the first error and stops.
func (d *Dispatch) ListAll(ctx context.Context, params *ListNotificationsParams, editors ...RequestEditorFn) iter.Seq2[Notification, error] {
	return func(yield func(Notification, error) bool) {
		var p ListNotificationsParams
		if params != nil {
			p = *params
		}
		for {
			page, err := d.List(ctx, &p, editors...)
			if err != nil {
				yield(Notification{}, err)
				return
			}
			for _, n := range page.Data {
				if !yield(n, nil) {
					return
				}
			}
			if page.NextCursor == nil {
				return
			}
			p.Cursor = page.NextCursor
		}
	}
}

// Attempts lists a notification's delivery attempts, in order.
func (d *Dispatch) Attempts(ctx context.Context, id NotificationID, editors ...RequestEditorFn) ([]Attempt, error) {
	r, err := d.raw.ListAttemptsWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	list, err := result(r, r.JSON200)
	if err != nil {
		return nil, err
	}
	return list.Data, nil
}

// Cancel cancels a notification not yet terminal; one already CANCELLED is
// answered as it is. A DELIVERED or FAILED one is a 409 Problem.
func (d *Dispatch) Cancel(ctx context.Context, id NotificationID, editors ...RequestEditorFn) (*Notification, error) {
	r, err := d.raw.CancelNotificationWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON202, r.JSON200))
}

// Retry delivers a FAILED or CANCELLED notification again; WithIdempotencyKey
// makes it safe to repeat.
func (d *Dispatch) Retry(ctx context.Context, id NotificationID, editors ...RequestEditorFn) (*Notification, error) {
	r, err := d.raw.RetryNotificationWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON202, r.JSON200))
}

// Batch reads a batch's progress: its notifications counted by status and
// channel.
func (d *Dispatch) Batch(ctx context.Context, batchID uuid.UUID, editors ...RequestEditorFn) (*BatchSummary, error) {
	r, err := d.raw.GetBatchWithResponse(ctx, batchID, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// CreateOperation starts a bulk retry, cancel or erase of the notifications
// op.Filter matches; a repeat with the same WithIdempotencyKey answers the
// operation as it is now. A dry run answers a count, not an operation: use
// DryRunOperation for it.
func (d *Dispatch) CreateOperation(ctx context.Context, op CreateOperation, editors ...RequestEditorFn) (*Operation, error) {
	if op.DryRun != nil && *op.DryRun {
		return nil, errors.New("client: CreateOperation with DryRun set: use DryRunOperation")
	}
	r, err := d.raw.CreateOperationWithResponse(ctx, nil, op, editors...)
	if err != nil {
		return nil, err
	}
	if r.JSON202 == nil && r.JSON200 != nil {
		o, err := r.JSON200.AsOperation()
		if err != nil {
			return nil, err
		}
		return &o, nil
	}
	return result(r, r.JSON202)
}

// DryRunOperation counts the notifications op would act on, changing
// nothing (op.DryRun is set).
func (d *Dispatch) DryRunOperation(ctx context.Context, op CreateOperation, editors ...RequestEditorFn) (*DryRun, error) {
	yes := true
	op.DryRun = &yes
	r, err := d.raw.CreateOperationWithResponse(ctx, nil, op, editors...)
	if err != nil {
		return nil, err
	}
	if r.StatusCode() == http.StatusOK && r.JSON200 != nil {
		dr, err := r.JSON200.AsDryRun()
		if err != nil {
			return nil, err
		}
		return &dr, nil
	}
	return result[DryRun](r, nil)
}

// GetOperation reads an operation and its progress.
func (d *Dispatch) GetOperation(ctx context.Context, id OperationID, editors ...RequestEditorFn) (*Operation, error) {
	r, err := d.raw.GetOperationWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// ListOperations reads one page of operations, newest first; pass the page's
// NextCursor as params.Cursor for the next.
func (d *Dispatch) ListOperations(ctx context.Context, params *ListOperationsParams, editors ...RequestEditorFn) (*OperationPage, error) {
	r, err := d.raw.ListOperationsWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// CancelOperation stops a running operation; one already CANCELLED is
// answered as it is.
func (d *Dispatch) CancelOperation(ctx context.Context, id OperationID, editors ...RequestEditorFn) (*Operation, error) {
	r, err := d.raw.CancelOperationWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON202, r.JSON200))
}

// DefaultPoll is how often Wait reads the notification when poll is not
// positive.
const DefaultPoll = 250 * time.Millisecond

// Wait reads the notification every poll until it is terminal (DELIVERED,
// FAILED, CANCELLED or SKIPPED) and returns it. It returns early with the error of a
// read that failed, or with ctx's error (and the last state read) when ctx
// ends first.
func (d *Dispatch) Wait(ctx context.Context, id NotificationID, poll time.Duration) (*Notification, error) {
	if poll <= 0 {
		poll = DefaultPoll
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var last *Notification
	for {
		select {
		case <-ctx.Done():
			if last != nil {
				return last, fmt.Errorf("waiting for notification %s, still %s: %w", id, last.Status, ctx.Err())
			}
			return nil, fmt.Errorf("waiting for notification %s: %w", id, ctx.Err())
		case <-t.C:
		}
		n, err := d.Get(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				continue // report the end of ctx, above
			}
			return last, err
		}
		if n.Status.Terminal() {
			return n, nil
		}
		last = n
		t.Reset(poll)
	}
}

// firstOf returns the first of its arguments that is not nil.
func firstOf[T any](vs ...*T) *T {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}
