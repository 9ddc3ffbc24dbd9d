package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/health"
	"github.com/dispatch-engine/dispatch-engine/internal/httpapi"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

const (
	temporalUI        = "http://temporal.test:8233"
	temporalNamespace = "default"
)

type checkFn = health.Check

var (
	up   checkFn = func(context.Context) error { return nil }
	down checkFn = func(context.Context) error { return errors.New("connection refused") }
)

// fixture is the API under test on a fresh database, with its collaborators.
type fixture struct {
	t        *testing.T
	srv      *httpapi.Server
	pool     *pgxpool.Pool
	queries  *queryRecorder
	signals  *signalRecorder
	logs     *observer.ObservedLogs
	apiKey   string
	baseURL  string
	contract *contract
}

type options struct {
	// dsn, when set, is the database instead of a fresh one.
	dsn      string
	cfg      httpapi.Config
	checks   []health.Dependency
	signaler httpapi.Signaler
}

type option func(*options)

// withChecks makes these the dependencies /readyz probes; postgres is the
// one the API requires, as in cmd/api.
func withChecks(checks map[string]checkFn) option {
	return func(o *options) {
		for name, check := range checks {
			o.checks = append(o.checks, health.Dependency{Name: name, Check: check, Required: name == "postgres"})
		}
	}
}

type config = httpapi.Config

func withConfig(change func(*config)) option {
	return func(o *options) { change(&o.cfg) }
}

func withSignaler(s httpapi.Signaler) option {
	return func(o *options) { o.signaler = s }
}

// withDSN points the API at dsn instead of a fresh database.
func withDSN(dsn string) option {
	return func(o *options) { o.dsn = dsn }
}

func setup(t *testing.T, opts ...option) *fixture {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dsn := o.dsn
	if dsn == "" {
		dsn = testenv.Database(t)
	}
	queries := &queryRecorder{}
	pcfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = queries
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	f := &fixture{t: t, pool: pool, queries: queries, signals: &signalRecorder{},
		apiKey: "test-key-" + uuid.NewString(), contract: loadContract(t)}
	o = options{
		cfg: httpapi.Config{
			APIKeys:           []string{"another-key-" + uuid.NewString(), f.apiKey},
			TemporalUIURL:     temporalUI,
			TemporalNamespace: temporalNamespace,
		},
		signaler: f.signals,
	}
	for _, opt := range opts {
		opt(&o)
	}
	core, logs := observer.New(zap.InfoLevel)
	f.logs = logs
	f.srv = httpapi.New(o.cfg, pool, o.signaler, o.checks, metrics.NewAPI(), zap.New(core))

	// A real listener, so requests take the path they take in production
	// (the server's own body limit included).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f.baseURL = "http://" + ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- f.srv.App().Listener(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, f.srv.Shutdown(ctx))
		require.NoError(t, <-served)
	})
	return f
}

// in is the fixture reporting to t, for subtests.
func (f *fixture) in(t *testing.T) *fixture {
	c := *f
	c.t = t
	return &c
}

// send sends a request to the server and returns the exchange, without
// failing the test: it is safe in any goroutine. A body goes as
// application/json and every request carries the API key as a bearer
// token, unless headers (name, value pairs) say otherwise; a header given
// an empty value is not sent.
func (f *fixture) send(method, path string, body []byte, headers ...string) (*http.Request, *http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.baseURL+path, rd)
	if err != nil {
		return nil, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	testenv.SetHeaders(req, headers...)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, nil, err
	}
	return req, resp, raw, nil
}

// do sends a request (see send), holds the exchange to the contract, and
// returns the answer.
func (f *fixture) do(method, path string, body []byte, headers ...string) (*http.Response, []byte) {
	f.t.Helper()
	req, resp, raw, err := f.send(method, path, body, headers...)
	require.NoError(f.t, err)
	require.NoError(f.t, f.contract.verify(req, body, resp, raw))
	return resp, raw
}

func (f *fixture) post(path, body string, headers ...string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(http.MethodPost, path, []byte(body), headers...)
}

func (f *fixture) get(path string, headers ...string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(http.MethodGet, path, nil, headers...)
}

// create posts a notification that must be accepted and returns its id.
func (f *fixture) create(body string) string {
	f.t.Helper()
	resp, raw := f.post("/v1/notifications", body)
	require.Equal(f.t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	return extractID(f.t, raw)
}

// queryRecorder records the SQL of every statement run on the pool.
type queryRecorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *queryRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = append(r.sql, data.SQL)
	return ctx
}

func (r *queryRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *queryRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = nil
}

// all is the statements of the requests' own work: those reading the
// caller's key and tenant (authentication) are left out.
func (r *queryRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(r.sql), func(sql string) bool {
		return strings.Contains(sql, "FROM tenants WHERE id") || strings.Contains(sql, "FROM api_keys")
	})
}

// signalRecorder plays Temporal for the cancel endpoint: it records each
// signal and answers err (or panics with panicWith).
type signalRecorder struct {
	mu        sync.Mutex
	calls     []signalCall
	err       error
	panicWith any
}

type signalCall struct {
	WorkflowID, RunID, Name string
	Arg                     any
}

func (r *signalRecorder) SignalWorkflow(_ context.Context, workflowID, runID, signalName string, arg any) error {
	if r.panicWith != nil {
		panic(r.panicWith)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, signalCall{WorkflowID: workflowID, RunID: runID, Name: signalName, Arg: arg})
	return r.err
}

func (r *signalRecorder) Calls() []signalCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func count(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

// problem is an RFC 9457 body as the tests read it.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
	Errors   []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// requireProblem checks an RFC 9457 answer with status and returns it.
func requireProblem(t *testing.T, resp *http.Response, body []byte, status int) problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body: %s", body)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p problem
	require.NoError(t, json.Unmarshal(body, &p), "body: %s", body)
	require.NotEmpty(t, p.Type, "type")
	require.NotEmpty(t, p.Title, "title")
	require.Equal(t, status, p.Status, "status member matches the HTTP status")
	return p
}

func fieldNames(p problem) []string {
	names := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		names[i] = e.Field
	}
	return names
}

func TestCreateNotificationAnswers202WithResource(t *testing.T) {
	f := setup(t)
	pool := f.pool
	before := time.Now().Add(-time.Second)
	resp, body := f.post("/v1/notifications", `{"channel":"email","recipient":"user@example.com","subject":"Welcome",
		"content":"Hello there","priority":"HIGH","metadata":{"campaign":"spring"}}`)

	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json"), resp.Header.Get("Content-Type"))

	var r struct {
		ID         string          `json:"id"`
		Status     string          `json:"status"`
		Channel    string          `json:"channel"`
		Recipient  string          `json:"recipient"`
		Subject    string          `json:"subject"`
		Content    string          `json:"content"`
		Priority   string          `json:"priority"`
		Metadata   json.RawMessage `json:"metadata"`
		Attempts   *int            `json:"attempts"`
		CreatedAt  time.Time       `json:"createdAt"`
		UpdatedAt  time.Time       `json:"updatedAt"`
		WorkflowID string          `json:"workflowId"`
		Links      struct {
			Self     string `json:"self"`
			Temporal string `json:"temporal"`
		} `json:"links"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	id, err := uuid.Parse(r.ID)
	require.NoError(t, err, "id is a UUID")
	require.Equal(t, "ACCEPTED", r.Status)
	require.Equal(t, "email", r.Channel)
	require.Equal(t, "user@example.com", r.Recipient)
	require.Equal(t, "Welcome", r.Subject)
	require.Equal(t, "Hello there", r.Content)
	require.Equal(t, "HIGH", r.Priority)
	require.JSONEq(t, `{"campaign":"spring"}`, string(r.Metadata))
	require.NotNil(t, r.Attempts, "attempts is present")
	require.Zero(t, *r.Attempts)
	require.WithinRange(t, r.CreatedAt, before, time.Now().Add(time.Second))
	require.WithinRange(t, r.UpdatedAt, before, time.Now().Add(time.Second))
	require.Equal(t, "notification-"+r.ID, r.WorkflowID)
	require.Equal(t, "/v1/notifications/"+r.ID, r.Links.Self)
	require.Equal(t, temporalUI+"/namespaces/"+temporalNamespace+"/workflows/notification-"+r.ID, r.Links.Temporal)
	require.Equal(t, "/v1/notifications/"+r.ID, resp.Header.Get("Location"))

	require.Equal(t, 1, count(t, pool, "notifications"))
	require.Equal(t, 1, count(t, pool, "outbox"))
	var outboxID uuid.UUID
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT notification_id FROM outbox`).Scan(&outboxID))
	require.Equal(t, id, outboxID)
}

func TestGetNotificationReturnsTheCreatedResource(t *testing.T) {
	f := setup(t)
	resp, created := f.post("/v1/notifications", `{"channel":"push","recipient":"device-token","content":"hi"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", created)

	resp, got := f.get(resp.Header.Get("Location"))
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", got)
	require.JSONEq(t, string(created), string(got))
}

func TestPriorityDefaultsToNormal(t *testing.T) {
	f := setup(t)
	pool := f.pool
	resp, body := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)

	var r struct {
		ID       string `json:"id"`
		Priority string `json:"priority"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	require.Equal(t, "NORMAL", r.Priority)

	var stored, queued string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT priority FROM notifications WHERE id = $1`, r.ID).Scan(&stored))
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT priority FROM outbox WHERE notification_id = $1`, r.ID).Scan(&queued))
	require.Equal(t, "NORMAL", stored)
	require.Equal(t, "NORMAL", queued)
}

func TestInvalidInputIsRejectedWithProblemNamingTheField(t *testing.T) {
	f := setup(t)
	pool := f.pool
	const sms = `"channel":"sms","recipient":"+14155550123"`
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)

	cases := []struct {
		name   string
		body   string
		status int
		typ    string // checked when set
		field  string // the field errors[] must name; "" when the request is not a field error
	}{
		{name: "malformed JSON", body: `{"channel": sms}`, status: 400, typ: "/problems/malformed-request"},
		{name: "empty body", body: ``, status: 400, typ: "/problems/malformed-request"},
		{name: "JSON array body", body: `[{"channel":"sms"}]`, status: 400, typ: "/problems/malformed-request"},
		{name: "unknown field", body: `{` + sms + `,"content":"hi","foo":1}`, status: 422, field: "foo"},
		{name: "channel of the wrong type", body: `{"channel":7,"recipient":"+14155550123","content":"hi"}`, status: 422, field: "channel"},
		{name: "unknown channel", body: `{"channel":"fax","recipient":"+14155550123","content":"hi"}`, status: 422, field: "channel"},
		{name: "sms recipient not E.164", body: `{"channel":"sms","recipient":"12345","content":"hi"}`, status: 422, field: "recipient"},
		{name: "email without subject", body: `{"channel":"email","recipient":"user@example.com","content":"hi"}`, status: 422, field: "subject"},
		{name: "email recipient not an address", body: `{"channel":"email","recipient":"not-an-email","subject":"s","content":"hi"}`, status: 422, field: "recipient"},
		{name: "push recipient with a space", body: `{"channel":"push","recipient":"device token","content":"hi"}`, status: 422, field: "recipient"},
		{name: "empty content", body: `{` + sms + `,"content":""}`, status: 422, field: "content"},
		{name: "sms content over 1600 bytes", body: `{` + sms + `,"content":"` + strings.Repeat("a", 1601) + `"}`, status: 422, field: "content"},
		// JSON text must be UTF-8 (RFC 8259 §8.1): such a body is malformed.
		{name: "invalid UTF-8 content", body: `{` + sms + `,"content":"bad ` + "\xff\xfe" + ` bytes"}`, status: 400, typ: "/problems/malformed-request"},
		{name: "unknown priority", body: `{` + sms + `,"content":"hi","priority":"URGENT"}`, status: 422, field: "priority"},
		{name: "metadata that is an array", body: `{` + sms + `,"content":"hi","metadata":[1,2]}`, status: 422, field: "metadata"},
		{name: "metadata over 8 KiB", body: `{` + sms + `,"content":"hi","metadata":{"k":"` + strings.Repeat("x", 8<<10) + `"}}`, status: 422, field: "metadata"},
		{name: "scheduledAt not a date-time", body: `{` + sms + `,"content":"hi","scheduledAt":"tomorrow"}`, status: 422, field: "scheduledAt"},
		{name: "expiresAt not a date-time", body: `{` + sms + `,"content":"hi","expiresAt":"2026-13-45"}`, status: 422, field: "expiresAt"},
		{name: "expiresAt in the past", body: `{` + sms + `,"content":"hi","expiresAt":"` + past + `"}`, status: 422, field: "expiresAt"},
		{name: "subject on sms", body: `{` + sms + `,"content":"hi","subject":"s"}`, status: 422, field: "subject"},
		{name: "NUL in content", body: `{` + sms + `,"content":"a\u0000b"}`, status: 422, field: "content"},
		{name: "empty idempotencyKey", body: `{` + sms + `,"content":"hi","idempotencyKey":""}`, status: 422, field: "idempotencyKey"},
		{name: "content of the wrong type", body: `{` + sms + `,"content":["hi"]}`, status: 422, field: "content"},
		{name: "missing recipient", body: `{"channel":"sms","content":"hi"}`, status: 422, field: "recipient"},
		{name: "two JSON values", body: `{` + sms + `,"content":"hi"}{}`, status: 400, typ: "/problems/malformed-request"},
		{name: "null body", body: `null`, status: 400, typ: "/problems/malformed-request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.in(t).post("/v1/notifications", tc.body)
			p := requireProblem(t, resp, body, tc.status)
			if tc.typ != "" {
				require.Equal(t, tc.typ, p.Type)
			}
			if tc.field != "" {
				require.Equal(t, "/problems/validation-error", p.Type)
				require.Contains(t, fieldNames(p), tc.field, "body: %s", body)
				for _, e := range p.Errors {
					require.NotEmpty(t, e.Message, "field %s has a message", e.Field)
				}
			}
		})
	}

	require.Zero(t, count(t, pool, "notifications"), "no invalid request is stored")
	require.Zero(t, count(t, pool, "outbox"), "no invalid request reaches the outbox")
}

func TestGetUnknownNotificationIs404Problem(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	resp, body := f.get("/v1/notifications/" + id)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Equal(t, "/problems/not-found", p.Type)
	require.Contains(t, p.Detail, id)
	require.Equal(t, "/v1/notifications/"+id, p.Instance)
}

func TestGetMalformedIdIs400Problem(t *testing.T) {
	f := setup(t)
	resp, body := f.get("/v1/notifications/not-a-uuid")
	p := requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))
}

func TestUnknownRouteIs404Problem(t *testing.T) {
	f := setup(t)
	resp, body := f.get("/v1/nothing-here")
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Equal(t, "/problems/not-found", p.Type)
	require.Contains(t, p.Detail, "/v1/nothing-here")
}

func TestReadyzFailsOnlyForWhatTheAPINeeds(t *testing.T) {
	const secret = "dial tcp db-7.internal:5432: password authentication failed for user dispatch"
	f := setup(t, withChecks(map[string]checkFn{
		"postgres": func(context.Context) error { return errors.New(secret) },
		"redis":    up,
	}))

	resp, body := f.get("/readyz")
	p := requireProblem(t, resp, body, http.StatusServiceUnavailable)
	require.Contains(t, p.Detail, "postgres")
	require.NotContains(t, p.Detail, "redis")

	var states struct {
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(body, &states))
	require.Equal(t, map[string]string{"postgres": "unavailable", "redis": "ok"}, states.Checks)
	require.NotContains(t, string(body), "db-7", "a dependency's error (hosts, users) is logged, never answered")
	require.NotContains(t, string(body), "password")
	logged := f.logs.FilterMessage("readiness check failed").All()
	require.NotEmpty(t, logged)
	require.Equal(t, "postgres", logged[0].ContextMap()["dependency"])
}

func TestReadyzStaysReadyWhileADependencyItDoesNotNeedIsDown(t *testing.T) {
	f := setup(t, withChecks(map[string]checkFn{
		"postgres": up,
		"redis":    func(context.Context) error { return errors.New("dial tcp 127.0.0.1:1: connection refused") },
		"rabbitmq": down,
		"temporal": down,
	}))

	resp, body := f.get("/readyz")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the API accepts with PostgreSQL alone: body %s", body)
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(body, &ready))
	require.Equal(t, "degraded", ready.Status)
	require.Equal(t, map[string]string{"postgres": "ok", "redis": "unavailable", "rabbitmq": "unavailable", "temporal": "unavailable"}, ready.Checks)
	require.NotContains(t, string(body), "refused")

	_, metrics := f.get("/metrics")
	require.Contains(t, string(metrics), `dispatch_dependency_up{dependency="redis"} 0`)
	require.Contains(t, string(metrics), `dispatch_dependency_up{dependency="postgres"} 1`)
}

func TestRequestIDIsEchoedOrGenerated(t *testing.T) {
	f := setup(t)

	resp, _ := f.get("/livez", "X-Request-Id", "req-abc-123")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "req-abc-123", resp.Header.Get("X-Request-Id"))

	resp, _ = f.get("/livez")
	generated := resp.Header.Get("X-Request-Id")
	_, err := uuid.Parse(generated)
	require.NoError(t, err, "a generated request id is a UUID, got %q", generated)

	resp, _ = f.get("/livez")
	require.NotEqual(t, generated, resp.Header.Get("X-Request-Id"), "each request gets its own id")
}

func TestUnsupportedMediaTypeIs415Problem(t *testing.T) {
	f := setup(t)
	const body = `{"channel":"sms","recipient":"+14155550123","content":"hi"}`
	for _, ct := range []string{"text/plain", "application/xml", "application/json; charset=latin1", "-"} {
		t.Run(ct, func(t *testing.T) {
			f := f.in(t)
			if ct == "-" {
				ct = "" // no Content-Type at all
			}
			resp, raw := f.post("/v1/notifications", body, "Content-Type", ct)
			p := requireProblem(t, resp, raw, http.StatusUnsupportedMediaType)
			require.Equal(t, "/problems/unsupported-media-type", p.Type)
			resp, raw = f.post("/v1/notifications/batch", `{"notifications":[`+body+`]}`, "Content-Type", ct)
			requireProblem(t, resp, raw, http.StatusUnsupportedMediaType)
		})
	}
	require.Zero(t, count(t, f.pool, "notifications"))
	require.Zero(t, count(t, f.pool, "outbox"))
}

func TestJSONContentTypeWithUTF8CharsetIsAccepted(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","content":"hi"}`,
		"Content-Type", "application/json; charset=UTF-8")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
}
