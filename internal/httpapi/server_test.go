package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"dispatch-engine/internal/health"
	"dispatch-engine/internal/httpapi"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/testenv"
)

const (
	temporalUI        = "http://temporal.test:8233"
	temporalNamespace = "default"
)

func newServer(t *testing.T, checks map[string]health.Check) (*httpapi.Server, *pgxpool.Pool) {
	t.Helper()
	pool, _ := testenv.Pool(t)
	srv := httpapi.New(httpapi.Config{TemporalUIURL: temporalUI, TemporalNamespace: temporalNamespace},
		pool, checks, metrics.NewAPI(), zap.NewNop())
	return srv, pool
}

// do sends a request through the app and returns the response and its body.
func do(t *testing.T, srv *httpapi.Server, method, path, contentType string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := srv.App().Test(req, -1)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, raw
}

func post(t *testing.T, srv *httpapi.Server, body string) (*http.Response, []byte) {
	t.Helper()
	return do(t, srv, http.MethodPost, "/v1/notifications", "application/json", []byte(body))
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
	srv, pool := newServer(t, nil)
	before := time.Now().Add(-time.Second)
	resp, body := post(t, srv, `{"channel":"email","recipient":"user@example.com","subject":"Welcome",
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
	srv, _ := newServer(t, nil)
	resp, created := post(t, srv, `{"channel":"push","recipient":"device-token","content":"hi"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", created)

	resp, got := do(t, srv, http.MethodGet, resp.Header.Get("Location"), "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", got)
	require.JSONEq(t, string(created), string(got))
}

func TestPriorityDefaultsToNormal(t *testing.T) {
	srv, pool := newServer(t, nil)
	resp, body := post(t, srv, `{"channel":"sms","recipient":"+14155550123","content":"hi"}`)
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
	srv, pool := newServer(t, nil)
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, srv, tc.body)
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
	srv, _ := newServer(t, nil)
	id := uuid.NewString()
	resp, body := do(t, srv, http.MethodGet, "/v1/notifications/"+id, "", nil)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Equal(t, "/problems/not-found", p.Type)
	require.Contains(t, p.Detail, id)
	require.Equal(t, "/v1/notifications/"+id, p.Instance)
}

func TestGetMalformedIdIs400Problem(t *testing.T) {
	srv, _ := newServer(t, nil)
	resp, body := do(t, srv, http.MethodGet, "/v1/notifications/not-a-uuid", "", nil)
	p := requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))
}

func TestUnknownRouteIs404Problem(t *testing.T) {
	srv, _ := newServer(t, nil)
	resp, body := do(t, srv, http.MethodGet, "/v1/nothing-here", "", nil)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Equal(t, "/problems/not-found", p.Type)
	require.Contains(t, p.Detail, "/v1/nothing-here")
}

func TestReadyzNamesFailingDependency(t *testing.T) {
	pool, _ := testenv.Pool(t)
	checks := map[string]health.Check{
		"postgres": pool.Ping,
		"redis":    func(context.Context) error { return errors.New("dial tcp 127.0.0.1:1: connection refused") },
	}
	srv := httpapi.New(httpapi.Config{}, pool, checks, metrics.NewAPI(), zap.NewNop())

	resp, body := do(t, srv, http.MethodGet, "/readyz", "", nil)
	p := requireProblem(t, resp, body, http.StatusServiceUnavailable)
	require.Contains(t, p.Detail, "redis")
	require.NotContains(t, p.Detail, "postgres")

	var states struct {
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.Unmarshal(body, &states))
	require.Equal(t, "ok", states.Checks["postgres"])
	require.Contains(t, states.Checks["redis"], "connection refused")
}

func TestRequestIDIsEchoedOrGenerated(t *testing.T) {
	srv, _ := newServer(t, nil)

	resp, _ := do(t, srv, http.MethodGet, "/livez", "", nil, "X-Request-Id", "req-abc-123")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "req-abc-123", resp.Header.Get("X-Request-Id"))

	resp, _ = do(t, srv, http.MethodGet, "/livez", "", nil)
	generated := resp.Header.Get("X-Request-Id")
	_, err := uuid.Parse(generated)
	require.NoError(t, err, "a generated request id is a UUID, got %q", generated)

	resp, _ = do(t, srv, http.MethodGet, "/livez", "", nil)
	require.NotEqual(t, generated, resp.Header.Get("X-Request-Id"), "each request gets its own id")
}

func TestUnsupportedMediaType(t *testing.T) {
	srv, pool := newServer(t, nil)
	resp, body := do(t, srv, http.MethodPost, "/v1/notifications", "text/plain",
		[]byte(`{"channel":"sms","recipient":"+14155550123","content":"hi"}`))
	p := requireProblem(t, resp, body, http.StatusUnsupportedMediaType)
	require.Equal(t, "/problems/unsupported-media-type", p.Type)
	require.Zero(t, count(t, pool, "notifications"))
	require.Zero(t, count(t, pool, "outbox"))
}
