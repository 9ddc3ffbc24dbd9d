package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// fakeAPI plays the dispatch API for dispatchctl: each test routes the
// requests it expects to handlers, and every exchange is held to
// openapi.yaml: the request dispatchctl sends must be one the contract
// allows (a test that means to send a refused one says so), and the answer
// the handler gives one the contract describes. Every request is recorded.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server
	mux *http.ServeMux

	// allowInvalid lets requests the contract refuses through (their
	// answers are still checked), for tests of the API refusing them.
	allowInvalid bool

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method string
	Path   string
	Query  map[string][]string
	Header http.Header
	Body   []byte
}

// URL is the request's path and query, its parameters sorted.
func (r recorded) URL() string {
	if q := url.Values(r.Query).Encode(); q != "" {
		return r.Path + "?" + q
	}
	return r.Path
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, mux: http.NewServeMux()}
	contract := testenv.LoadContract(t)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the request body: %v", err)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		f.mux.ServeHTTP(rec, r)
		if rec.Code == http.StatusNotFound && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("the fake API has no handler for %s %s", r.Method, r.URL)
		}
		if err := verifyExchange(contract, r, body, rec.Result(), rec.Body.Bytes(), f.allowInvalid); err != nil {
			t.Errorf("%v", err)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// only returns the one request recorded.
func (f *fakeAPI) only() recorded {
	f.t.Helper()
	reqs := f.requests()
	require.Len(f.t, reqs, 1, "requests: %v", reqs)
	return reqs[0]
}

// answer writes v as the JSON answer, with the headers every answer has.
func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", "req-"+uuid.NewString()[:8])
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// answerProblem writes an RFC 9457 problem.
func answerProblem(w http.ResponseWriter, requestID string, p client.Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Request-Id", requestID)
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

var (
	t0     = time.Date(2026, 1, 2, 15, 4, 5, 123000000, time.UTC)
	nextID = struct {
		sync.Mutex
		n int
	}{}
)

// newID is a fresh, readable UUID: 01a22001-0000-7000-8000-00000000000N.
func newID() uuid.UUID {
	nextID.Lock()
	defer nextID.Unlock()
	nextID.n++
	return uuid.MustParse(fmt.Sprintf("01a22001-0000-7000-8000-%012d", nextID.n))
}

// notification is a notification as the API answers it.
func notification(id uuid.UUID, status client.Status) client.Notification {
	s := id.String()
	n := client.Notification{
		ID: id, Status: status, Channel: client.ChannelSms, Priority: client.PriorityHIGH,
		Recipient: "+14155550123", Content: "hi", CreatedAt: t0, UpdatedAt: t0,
		WorkflowID: "notification-" + s,
		Links: client.Notification_Links{
			Self: "/v1/notifications/" + s, Attempts: "/v1/notifications/" + s + "/attempts",
			Temporal: "http://127.0.0.1:8233/namespaces/default/workflows/notification-" + s,
		},
	}
	if status.Terminal() || status == client.StatusPROCESSING || status == client.StatusRETRYING {
		n.Attempts = 1
	}
	if status == client.StatusDELIVERED {
		n.DeliveredAt = &t0
	}
	if status == client.StatusFAILED {
		reason, lastErr := client.NotificationFailureReasonExhausted, "provider answered 503"
		n.FailureReason, n.LastError = &reason, &lastErr
	}
	return n
}

func batchSummary(id uuid.UUID, total int, set func(s *client.BatchSummary_ByStatus)) client.BatchSummary {
	s := client.BatchSummary{
		BatchID: id, Total: total, CreatedAt: t0,
		ByChannel: client.BatchSummary_ByChannel{Sms: total},
		Links: client.BatchSummary_Links{
			Self: "/v1/batches/" + id.String(), Notifications: "/v1/notifications?batchId=" + id.String(),
		},
	}
	set(&s.ByStatus)
	return s
}

func operation(id uuid.UUID, status client.OperationStatus, filter client.OperationFilter) client.Operation {
	s := id.String()
	return client.Operation{
		ID: id, Action: client.OperationActionRetry, Filter: filter, MaxPerSecond: 500, Status: status,
		SkippedReasons: map[string]int{}, CreatedAt: t0, UpdatedAt: t0, WorkflowID: "operation-" + s,
		Links: client.Operation_Links{
			Self: "/v1/operations/" + s, Temporal: "http://127.0.0.1:8233/namespaces/default/workflows/operation-" + s,
		},
	}
}

// result is one dispatchctl run.
type result struct {
	code           int
	stdout, stderr string
}

// dispatchctl runs one command line in-process, against the fake with the
// key "test-key", polling every millisecond, in a directory of its own
// (with no key file).
func (f *fakeAPI) dispatchctl(args ...string) result {
	f.t.Helper()
	return runIn(f.t, isolatedDir(f.t), nil, append([]string{"--url", f.srv.URL, "--api-key", "test-key", "--poll-interval", "1ms"}, args...)...)
}

// runIn runs one command line in-process with env, searching for the key
// file from dir.
func runIn(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := app.Main(ctx, app.Options{Args: args, Stdout: &stdout, Stderr: &stderr, Env: env, Dir: dir})
	t.Logf("dispatchctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// isolatedDir is a directory that is the root of a repository of its own
// (it has a .git), so the search for .data/dev-api-key stops there.
func isolatedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".git"), 0o755))
	return dir
}

// verifyExchange checks that dispatchctl's request is one the contract
// allows (unless allowInvalid), and the fake's answer one it describes.
func verifyExchange(c *testenv.Contract, req *http.Request, reqBody []byte, resp *http.Response, respBody []byte, allowInvalid bool) error {
	input, err := c.Route(req, reqBody)
	if err != nil {
		return fmt.Errorf("%s %s is not in the contract: %w", req.Method, req.URL.Path, err)
	}
	if err := c.CheckRequest(input); err != nil && !allowInvalid {
		return fmt.Errorf("dispatchctl sent %s %s, which the contract refuses: %w\nbody: %s", req.Method, req.URL, err, reqBody)
	}
	if err := c.CheckResponse(input, resp, respBody); err != nil {
		return fmt.Errorf("the fake answered %s %s with %d outside the contract: %w\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, respBody)
	}
	return nil
}
