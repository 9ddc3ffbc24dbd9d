package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
)

const testKey = "test-key"

// fakeAPI answers a few of the API's routes the way the API does: resources
// as application/json, refusals as application/problem+json.
type fakeAPI struct {
	t   *testing.T
	url string

	mu       sync.Mutex
	headers  []http.Header                  // of every request, in order
	stored   []client.Notification          // newest first, for the list
	statuses map[uuid.UUID][]client.Status  // what the next GETs answer, the last repeated
	polled   chan uuid.UUID                 // a GET of one notification happened
	ops      map[string]client.Operation    // by idempotency key
	opsByID  map[uuid.UUID]client.Operation // every operation created
	batches  map[uuid.UUID]client.BatchSummary
}

// behindAProxy is the notification a proxy in front of the fake API answers
// for, with an HTML 502.
var behindAProxy = uuid.MustParse("01a22001-0000-7000-8000-000000000502")

func newFakeAPI(t *testing.T) (*fakeAPI, *client.Dispatch) {
	f := &fakeAPI{
		t:        t,
		statuses: map[uuid.UUID][]client.Status{},
		polled:   make(chan uuid.UUID, 100),
		ops:      map[string]client.Operation{},
		opsByID:  map[uuid.UUID]client.Operation{},
		batches:  map[uuid.UUID]client.BatchSummary{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/notifications", f.create)
	mux.HandleFunc("POST /v1/notifications/batch", f.createBatch)
	mux.HandleFunc("GET /v1/notifications", f.list)
	mux.HandleFunc("GET /v1/notifications/{id}", f.get)
	mux.HandleFunc("GET /v1/notifications/{id}/attempts", f.attempts)
	mux.HandleFunc("POST /v1/notifications/{id}/cancel", f.cancel)
	mux.HandleFunc("POST /v1/notifications/{id}/retry", f.retry)
	mux.HandleFunc("GET /v1/batches/{id}", f.batch)
	mux.HandleFunc("POST /v1/operations", f.createOperation)
	mux.HandleFunc("GET /v1/operations", f.listOperations)
	mux.HandleFunc("GET /v1/operations/{id}", f.getOperation)
	mux.HandleFunc("POST /v1/operations/{id}/cancel", f.cancelOperation)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.headers = append(f.headers, r.Header.Clone())
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dispatch-engine"`)
			f.problem(w, r, http.StatusUnauthorized, "/problems/unauthorized", "Unauthorized", "a valid API key is required", nil)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	d, err := client.New(srv.URL, testKey)
	require.NoError(t, err)
	return f, d
}

func (f *fakeAPI) lastHeader() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.headers[len(f.headers)-1]
}

func (f *fakeAPI) json(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	assert.NoError(f.t, json.NewEncoder(w).Encode(v))
}

func (f *fakeAPI) problem(w http.ResponseWriter, r *http.Request, status int, typ, title, detail string, errs []client.FieldError) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	instance := r.URL.Path
	assert.NoError(f.t, json.NewEncoder(w).Encode(client.Problem{
		Type: typ, Title: title, Status: status, Detail: detail, Instance: &instance, Errors: errs,
	}))
}

func notification(id uuid.UUID, status client.Status, createdAt time.Time) client.Notification {
	return client.Notification{
		ID: id, Status: status, Channel: client.ChannelSms, Priority: client.PriorityNORMAL,
		Recipient: "+14155550123", Content: "hi", CreatedAt: createdAt, UpdatedAt: createdAt,
		WorkflowID: "notification-" + id.String(),
		Links: client.Notification_Links{
			Self: "/v1/notifications/" + id.String(), Attempts: "/v1/notifications/" + id.String() + "/attempts",
			Temporal: "http://127.0.0.1:8233/namespaces/default/workflows/notification-" + id.String(),
		},
	}
}

func (f *fakeAPI) create(w http.ResponseWriter, r *http.Request) {
	var body client.CreateNotification
	assert.NoError(f.t, json.NewDecoder(r.Body).Decode(&body))
	if body.Recipient != "+14155550123" {
		f.problem(w, r, http.StatusUnprocessableEntity, "/problems/validation-error", "Validation failed", "one or more fields are invalid",
			[]client.FieldError{
				{Field: "recipient", Message: "must be an E.164 phone number, e.g. +14155550123"},
				{Field: "content", Message: "is required"},
			})
		return
	}
	n := notification(uuid.New(), client.StatusACCEPTED, time.Now())
	n.Content = body.Content
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		n.IdempotencyKey = &key
	}
	w.Header().Set("Location", n.Links.Self)
	f.json(w, http.StatusAccepted, n)
}

func (f *fakeAPI) createBatch(w http.ResponseWriter, r *http.Request) {
	var body client.CreateBatch
	assert.NoError(f.t, json.NewDecoder(r.Body).Decode(&body))
	out := client.BatchAccepted{BatchID: uuid.New(), Count: len(body.Notifications)}
	for range body.Notifications {
		n := notification(uuid.New(), client.StatusACCEPTED, time.Now())
		n.BatchID = &out.BatchID
		out.Notifications = append(out.Notifications, n)
	}
	status := http.StatusAccepted
	if r.Header.Get("Idempotency-Key") == "replayed" {
		w.Header().Set("Idempotent-Replayed", "true")
		status = http.StatusOK
	}
	f.json(w, status, out)
}

// list pages through f.stored by an index cursor, as the API pages by keyset.
func (f *fakeAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, from := 50, 0
	if s := q.Get("limit"); s != "" {
		limit, _ = strconv.Atoi(s)
	}
	if s := q.Get("cursor"); s != "" {
		var err error
		if from, err = strconv.Atoi(s); err != nil {
			f.problem(w, r, http.StatusBadRequest, "/problems/validation-error", "Bad request", "bad cursor",
				[]client.FieldError{{Field: "cursor", Message: "is not a cursor of this list"}})
			return
		}
	}
	f.mu.Lock()
	var match []client.Notification
	for _, n := range f.stored {
		if st := q.Get("status"); st == "" || string(n.Status) == st {
			match = append(match, n)
		}
	}
	f.mu.Unlock()
	page := client.NotificationPage{Data: []client.Notification{}}
	to := min(from+limit, len(match))
	page.Data = append(page.Data, match[from:to]...)
	if to < len(match) {
		next := strconv.Itoa(to)
		page.NextCursor = &next
	}
	f.json(w, http.StatusOK, page)
}

func (f *fakeAPI) pathID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		f.problem(w, r, http.StatusBadRequest, "/problems/validation-error", "Bad request", "the id is not a UUID",
			[]client.FieldError{{Field: "id", Message: "must be a UUID"}})
	}
	return id, err == nil
}

func (f *fakeAPI) get(w http.ResponseWriter, r *http.Request) {
	id, ok := f.pathID(w, r)
	if !ok {
		return
	}
	if id == behindAProxy {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>bad gateway</html>"))
		return
	}
	f.mu.Lock()
	seq, found := f.statuses[id]
	var status client.Status
	if found {
		status = seq[0]
		if len(seq) > 1 {
			f.statuses[id] = seq[1:]
		}
	}
	f.mu.Unlock()
	if !found {
		f.problem(w, r, http.StatusNotFound, "/problems/not-found", "Not found", "no notification "+id.String(), nil)
		return
	}
	select {
	case f.polled <- id:
	default:
	}
	f.json(w, http.StatusOK, notification(id, status, time.Now()))
}

func (f *fakeAPI) attempts(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.pathID(w, r); !ok {
		return
	}
	code := 200
	f.json(w, http.StatusOK, client.AttemptList{Data: []client.Attempt{
		{Attempt: 1, StartedAt: time.Now(), DurationMs: 3, Outcome: "retry", StatusCode: new(int)},
		{Attempt: 2, StartedAt: time.Now(), DurationMs: 4, Outcome: "delivered", StatusCode: &code},
	}})
}

func (f *fakeAPI) cancel(w http.ResponseWriter, r *http.Request) {
	id, ok := f.pathID(w, r)
	if !ok {
		return
	}
	f.problem(w, r, http.StatusConflict, "/problems/not-cancellable", "Not cancellable", "the notification is already DELIVERED", nil)
	_ = id
}

func (f *fakeAPI) retry(w http.ResponseWriter, r *http.Request) {
	id, ok := f.pathID(w, r)
	if !ok {
		return
	}
	n := notification(id, client.StatusACCEPTED, time.Now())
	n.Retries = 1
	f.json(w, http.StatusAccepted, n)
}

func (f *fakeAPI) batch(w http.ResponseWriter, r *http.Request) {
	id, ok := f.pathID(w, r)
	if !ok {
		return
	}
	s := client.BatchSummary{BatchID: id, Total: 3, CreatedAt: time.Now(),
		Links: client.BatchSummary_Links{Self: "/v1/batches/" + id.String(), Notifications: "/v1/notifications?batchId=" + id.String()}}
	s.ByStatus.DELIVERED, s.ByStatus.FAILED = 2, 1
	s.ByChannel.Sms = 3
	f.json(w, http.StatusOK, s)
}

func (f *fakeAPI) createOperation(w http.ResponseWriter, r *http.Request) {
	var body client.CreateOperation
	assert.NoError(f.t, json.NewDecoder(r.Body).Decode(&body))
	if body.DryRun != nil && *body.DryRun {
		f.json(w, http.StatusOK, client.DryRun{DryRun: client.DryRunDryRunTrue, Action: client.DryRunAction(body.Action), Filter: body.Filter, Matched: 12})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	f.mu.Lock()
	op, replay := f.ops[key]
	if !replay {
		id := uuid.New()
		op = client.Operation{ID: id, Action: client.OperationAction(body.Action), Filter: body.Filter, MaxPerSecond: 500,
			Status: client.OperationStatusRUNNING, SkippedReasons: map[string]int{}, CreatedAt: time.Now(), UpdatedAt: time.Now(),
			WorkflowID: "operation-" + id.String(),
			Links:      client.Operation_Links{Self: "/v1/operations/" + id.String(), Temporal: "http://temporal/" + id.String()}}
		if key != "" {
			f.ops[key] = op
		}
		f.opsByID[id] = op
	}
	f.mu.Unlock()
	if replay {
		w.Header().Set("Idempotent-Replayed", "true")
		f.json(w, http.StatusOK, op)
		return
	}
	f.json(w, http.StatusAccepted, op)
}

func (f *fakeAPI) listOperations(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	page := client.OperationPage{Data: []client.Operation{}}
	for _, op := range f.opsByID {
		page.Data = append(page.Data, op)
	}
	f.mu.Unlock()
	f.json(w, http.StatusOK, page)
}

func (f *fakeAPI) operation(w http.ResponseWriter, r *http.Request) (client.Operation, bool) {
	id, ok := f.pathID(w, r)
	if !ok {
		return client.Operation{}, false
	}
	f.mu.Lock()
	op, found := f.opsByID[id]
	f.mu.Unlock()
	if !found {
		f.problem(w, r, http.StatusNotFound, "/problems/not-found", "Not found", "no operation "+id.String(), nil)
	}
	return op, found
}

func (f *fakeAPI) getOperation(w http.ResponseWriter, r *http.Request) {
	if op, ok := f.operation(w, r); ok {
		f.json(w, http.StatusOK, op)
	}
}

func (f *fakeAPI) cancelOperation(w http.ResponseWriter, r *http.Request) {
	if op, ok := f.operation(w, r); ok {
		now := time.Now()
		op.CancelRequestedAt = &now
		f.json(w, http.StatusAccepted, op)
	}
}

func sms(recipient string) client.CreateNotification {
	return client.CreateNotification{Channel: client.ChannelSms, Recipient: recipient, Content: "hi"}
}

func TestEveryRequestCarriesTheAPIKey(t *testing.T) {
	f, d := newFakeAPI(t)
	ctx := t.Context()

	_, err := d.Send(ctx, sms("+14155550123"))
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+testKey, f.lastHeader().Get("Authorization"))
	_, err = d.List(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+testKey, f.lastHeader().Get("Authorization"))
	assert.Empty(t, f.lastHeader().Get("Idempotency-Key"), "no key unless asked for")

	// The generated client underneath carries it too.
	r, err := d.Raw().ListOperationsWithResponse(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, r.StatusCode())
	assert.Equal(t, "Bearer "+testKey, f.lastHeader().Get("Authorization"))

	// A wrong key is the API's 401 problem.
	other, err := client.New(f.url, "wrong")
	require.NoError(t, err)
	_, err = other.Send(ctx, sms("+14155550123"))
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, http.StatusUnauthorized, p.Status)
	assert.Equal(t, "Bearer wrong", f.lastHeader().Get("Authorization"))
	assert.Equal(t, "401 Unauthorized: a valid API key is required", err.Error())
}

func TestIdempotencyKeyAndRequestIDAreSentPerRequest(t *testing.T) {
	f, d := newFakeAPI(t)
	ctx := t.Context()

	n, err := d.Send(ctx, sms("+14155550123"), client.WithIdempotencyKey("order-42"), client.WithRequestID("req-1"))
	require.NoError(t, err)
	assert.Equal(t, "order-42", f.lastHeader().Get("Idempotency-Key"))
	assert.Equal(t, "req-1", f.lastHeader().Get("X-Request-Id"))
	require.NotNil(t, n.IdempotencyKey)
	assert.Equal(t, "order-42", *n.IdempotencyKey)

	_, err = d.Send(ctx, sms("+14155550123"))
	require.NoError(t, err)
	assert.Empty(t, f.lastHeader().Get("Idempotency-Key"), "an option of one request stays with it")

	_, err = d.Retry(ctx, uuid.New(), client.WithIdempotencyKey("retry-1"))
	require.NoError(t, err)
	assert.Equal(t, "retry-1", f.lastHeader().Get("Idempotency-Key"))

	// A batch replay (200) is answered like the first (202).
	b, err := d.SendBatch(ctx, []client.CreateNotification{sms("+14155550123"), sms("+14155550123")}, client.WithIdempotencyKey("replayed"))
	require.NoError(t, err)
	assert.Equal(t, "replayed", f.lastHeader().Get("Idempotency-Key"))
	assert.Equal(t, 2, b.Count)
	require.Len(t, b.Notifications, 2)
	assert.Equal(t, b.BatchID, *b.Notifications[0].BatchID)
}

func TestProblemAnswersAreProblemErrors(t *testing.T) {
	_, d := newFakeAPI(t)
	ctx := t.Context()

	n, err := d.Send(ctx, sms("not-a-number"))
	assert.Nil(t, n)
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, "/problems/validation-error", p.Type)
	assert.Equal(t, "Validation failed", p.Title)
	assert.Equal(t, http.StatusUnprocessableEntity, p.Status)
	assert.Equal(t, "one or more fields are invalid", p.Detail)
	require.NotNil(t, p.Instance)
	assert.Equal(t, "/v1/notifications", *p.Instance)
	assert.Equal(t, []client.FieldError{
		{Field: "recipient", Message: "must be an E.164 phone number, e.g. +14155550123"},
		{Field: "content", Message: "is required"},
	}, p.Errors)
	assert.Equal(t, "422 Validation failed: recipient: must be an E.164 phone number, e.g. +14155550123; content: is required", err.Error())

	// Without field errors the detail is told.
	_, err = d.Get(ctx, uuid.MustParse("01a22001-d5be-7c3d-975c-b69a729f588b"))
	require.ErrorAs(t, err, &p)
	assert.Equal(t, http.StatusNotFound, p.Status)
	assert.Equal(t, "404 Not found: no notification 01a22001-d5be-7c3d-975c-b69a729f588b", err.Error())

	_, err = d.Cancel(ctx, uuid.New())
	require.ErrorAs(t, err, &p)
	assert.Equal(t, "/problems/not-cancellable", p.Type)
	assert.Equal(t, "409 Not cancellable: the notification is already DELIVERED", err.Error())
}

func TestAnAnswerThatIsNoProblemDocumentStillIsAProblem(t *testing.T) {
	_, d := newFakeAPI(t)
	_, err := d.Get(t.Context(), behindAProxy)
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, "about:blank", p.Type)
	assert.Equal(t, http.StatusBadGateway, p.Status)
	assert.Equal(t, "502 Bad Gateway: <html>bad gateway</html>", err.Error())
}

func TestProblemError(t *testing.T) {
	for _, c := range []struct {
		p    client.Problem
		want string
	}{
		{client.Problem{Status: 503, Title: "Service unavailable", Detail: "the database is unreachable"}, "503 Service unavailable: the database is unreachable"},
		{client.Problem{Status: 409, Title: "Conflict", Detail: "Conflict"}, "409 Conflict"},
		{client.Problem{Status: 422, Title: "Validation failed", Detail: "ignored", Errors: []client.FieldError{{Field: "notifications[3].recipient", Message: "is required"}}},
			"422 Validation failed: notifications[3].recipient: is required"},
		{client.Problem{Status: 500}, "500"},
	} {
		assert.Equal(t, c.want, c.p.Error())
	}
}

func TestListPagesByCursor(t *testing.T) {
	f, d := newFakeAPI(t)
	ctx := t.Context()
	base := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	var want []uuid.UUID
	for i := range 5 {
		n := notification(uuid.New(), client.StatusDELIVERED, base.Add(-time.Duration(i)*time.Second))
		if i == 2 {
			n.Status = client.StatusFAILED
		}
		f.stored = append(f.stored, n)
		if i != 2 {
			want = append(want, n.ID)
		}
	}

	// Page by page: the filter and the cursor go along.
	status, limit := client.StatusDELIVERED, 3
	params := &client.ListNotificationsParams{Status: &status, Limit: &limit}
	page, err := d.List(ctx, params)
	require.NoError(t, err)
	require.Len(t, page.Data, 3)
	require.NotNil(t, page.NextCursor)
	params.Cursor = page.NextCursor
	last, err := d.List(ctx, params)
	require.NoError(t, err)
	require.Len(t, last.Data, 1)
	assert.Nil(t, last.NextCursor, "null on the last page")
	var got []uuid.UUID
	for _, n := range append(page.Data, last.Data...) {
		got = append(got, n.ID)
	}
	assert.Equal(t, want, got)

	// ListAll does the same, a page of two at a time, from the start again.
	limit = 2
	got = nil
	for n, err := range d.ListAll(ctx, &client.ListNotificationsParams{Status: &status, Limit: &limit}) {
		require.NoError(t, err)
		got = append(got, n.ID)
	}
	assert.Equal(t, want, got)

	// Breaking off stops the paging.
	got = nil
	for n, err := range d.ListAll(ctx, &client.ListNotificationsParams{Limit: &limit}) {
		require.NoError(t, err)
		got = append(got, n.ID)
		break
	}
	assert.Len(t, got, 1)

	// An error ends it, as a Problem.
	bad := "not-a-cursor"
	var errs []error
	for _, err := range d.ListAll(ctx, &client.ListNotificationsParams{Cursor: &bad}) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	var p *client.Problem
	require.ErrorAs(t, errs[0], &p)
	assert.Equal(t, "400 Bad request: cursor: is not a cursor of this list", p.Error())
}

func TestWaitPollsUntilTerminal(t *testing.T) {
	for _, terminal := range []client.Status{client.StatusDELIVERED, client.StatusFAILED, client.StatusCANCELLED} {
		t.Run(string(terminal), func(t *testing.T) {
			f, d := newFakeAPI(t)
			id := uuid.New()
			f.statuses[id] = []client.Status{client.StatusQUEUED, client.StatusPROCESSING, client.StatusRETRYING, terminal}

			n, err := d.Wait(t.Context(), id, time.Millisecond)
			require.NoError(t, err)
			assert.Equal(t, terminal, n.Status)
			assert.Len(t, f.polled, 4, "one read per state, none after the terminal one")
		})
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	f, d := newFakeAPI(t)
	id := uuid.New()
	f.statuses[id] = []client.Status{client.StatusRETRYING}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-f.polled
		<-f.polled // two reads made: the notification stays RETRYING
		cancel()
	}()

	n, err := d.Wait(ctx, id, time.Millisecond)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, n, "the last state read comes with the error")
	assert.Equal(t, client.StatusRETRYING, n.Status)
	assert.Contains(t, err.Error(), "still RETRYING")
}

func TestWaitEndsOnAProblem(t *testing.T) {
	_, d := newFakeAPI(t)
	_, err := d.Wait(t.Context(), uuid.New(), time.Millisecond) // unknown: 404
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, http.StatusNotFound, p.Status)
}

func TestConvenienceCallsAnswerTheirResource(t *testing.T) {
	_, d := newFakeAPI(t)
	ctx := t.Context()

	attempts, err := d.Attempts(ctx, uuid.New())
	require.NoError(t, err)
	require.Len(t, attempts, 2)
	assert.Equal(t, 200, *attempts[1].StatusCode)

	n, err := d.Retry(ctx, uuid.New())
	require.NoError(t, err)
	assert.Equal(t, 1, n.Retries)

	batchID := uuid.New()
	s, err := d.Batch(ctx, batchID)
	require.NoError(t, err)
	assert.Equal(t, batchID, s.BatchID)
	assert.Equal(t, 2, s.ByStatus.DELIVERED)

	failed := client.StatusFAILED
	op := client.CreateOperation{Action: client.CreateOperationActionRetry, Filter: client.OperationFilter{Status: &failed}}
	dry, err := d.DryRunOperation(ctx, op)
	require.NoError(t, err)
	assert.Equal(t, 12, dry.Matched)
	assert.Nil(t, op.DryRun, "the caller's request is left as it was")

	created, err := d.CreateOperation(ctx, op, client.WithIdempotencyKey("op-1"))
	require.NoError(t, err)
	assert.Equal(t, client.OperationStatusRUNNING, created.Status)
	replayed, err := d.CreateOperation(ctx, op, client.WithIdempotencyKey("op-1")) // 200, the oneOf
	require.NoError(t, err)
	assert.Equal(t, created.ID, replayed.ID)

	yes := true
	op.DryRun = &yes
	_, err = d.CreateOperation(ctx, op)
	assert.ErrorContains(t, err, "DryRunOperation")

	got, err := d.GetOperation(ctx, created.ID)
	require.NoError(t, err)
	assert.Equal(t, created.ID, got.ID)
	page, err := d.ListOperations(ctx, nil)
	require.NoError(t, err)
	assert.Len(t, page.Data, 1)
	cancelled, err := d.CancelOperation(ctx, created.ID)
	require.NoError(t, err)
	assert.NotNil(t, cancelled.CancelRequestedAt)
	_, err = d.GetOperation(ctx, uuid.New())
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, http.StatusNotFound, p.Status)
}

func TestStatusTerminal(t *testing.T) {
	for _, s := range []client.Status{client.StatusACCEPTED, client.StatusQUEUED, client.StatusSCHEDULED, client.StatusPROCESSING, client.StatusRETRYING, client.StatusSENT} {
		assert.False(t, s.Terminal(), s)
	}
	for _, s := range []client.Status{client.StatusDELIVERED, client.StatusFAILED, client.StatusCANCELLED, client.StatusSKIPPED} {
		assert.True(t, s.Terminal(), s)
	}
}
