package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDatabaseUnreachableIs503ProblemWithRetryAfter(t *testing.T) {
	// Nothing listens on port 1: every connection is refused, as while
	// PostgreSQL restarts.
	f := setup(t, withDSN("postgres://postgres@127.0.0.1:1/dispatch?sslmode=disable&connect_timeout=2"))

	for _, req := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/notifications", smsBody},
		{http.MethodPost, "/v1/notifications/batch", `{"notifications":[` + smsBody + `]}`},
		{http.MethodGet, "/v1/notifications/0190b4c4-4b1e-7000-8000-000000000001", ""},
		{http.MethodGet, "/v1/notifications?limit=5", ""},
	} {
		var body []byte
		if req.body != "" {
			body = []byte(req.body)
		}
		resp, raw := f.do(req.method, req.path, body)
		p := requireProblem(t, resp, raw, http.StatusServiceUnavailable)
		require.Equal(t, "/problems/service-unavailable", p.Type, "%s %s", req.method, req.path)
		require.Equal(t, "1", resp.Header.Get("Retry-After"), "%s %s", req.method, req.path)
		require.NotContains(t, string(raw), "127.0.0.1", "no connection details in the answer")
	}
}

func TestBusyDatabaseSlotsAnswer503InsteadOfQueueing(t *testing.T) {
	f := setup(t, withConfig(func(c *config) { c.MaxInFlight, c.AdmitWait = 1, 200*time.Millisecond }))
	ctx := context.Background()

	// Hold the notifications table, so the one admitted request waits in
	// the database while holding the only slot.
	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)

	var wg sync.WaitGroup
	var firstCode int
	wg.Go(func() {
		_, resp, _, err := f.send(http.MethodPost, "/v1/notifications", []byte(smsBody))
		if err == nil {
			firstCode = resp.StatusCode
		}
	})
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, f.pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting))
		return waiting > 0
	}, 10*time.Second, 20*time.Millisecond, "the first request never reached the lock")

	resp, raw := f.get("/v1/notifications?limit=1")
	p := requireProblem(t, resp, raw, http.StatusServiceUnavailable)
	require.Equal(t, "/problems/service-unavailable", p.Type)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))

	require.NoError(t, tx.Rollback(ctx))
	wg.Wait()
	require.Equal(t, http.StatusAccepted, firstCode, "the admitted request completes once the lock is gone")
	require.Equal(t, 1, count(t, f.pool, "notifications"))
}

func TestOversizedHeadersAre431Problem(t *testing.T) {
	f := setup(t, withConfig(func(c *config) { c.MaxHeaderBytes = 4 << 10 }))

	// The server answers once it has read its limit and closes the
	// connection; a client still writing the rest may see its write cut off
	// (broken pipe, reset) before it reads the answer. Such a try is made
	// again; the answer, when read, must be the 431 problem.
	var (
		resp *http.Response
		raw  []byte
		err  error
	)
	for range 5 {
		if _, resp, raw, err = f.send(http.MethodGet, "/v1/notifications", nil, "X-Padding", strings.Repeat("x", 8<<10)); err == nil {
			break
		}
	}
	require.NoError(t, err)
	p := requireProblem(t, resp, raw, http.StatusRequestHeaderFieldsTooLarge)
	require.Equal(t, "/problems/headers-too-large", p.Type)

	// Within the limit the same request is served.
	resp, raw = f.get("/v1/notifications", "X-Padding", strings.Repeat("x", 1<<10))
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
}

func TestSlowClientIsCutOff(t *testing.T) {
	f := setup(t, withConfig(func(c *config) { c.ReadTimeout = 300 * time.Millisecond }))

	conn, err := net.Dial("tcp", strings.TrimPrefix(f.baseURL, "http://"))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	// Half a request line, then nothing: the server must not wait forever.
	_, err = conn.Write([]byte("GET /v1/notif"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	answer, err := io.ReadAll(conn)
	var netErr net.Error
	if errors.As(err, &netErr) {
		require.False(t, netErr.Timeout(), "the client's deadline passed first: the server held the connection")
	}
	// The server closes the connection, after a 408 when it answers at all.
	if len(answer) > 0 {
		require.True(t, strings.HasPrefix(string(answer), "HTTP/1.1 408"), "answer: %q", answer)
	}
}

// rawRequest sends a request line and headers announcing a body of
// contentLength bytes, sends none of it, and returns what the server
// answers meanwhile (within a few seconds).
func rawRequest(t *testing.T, f *fixture, path string, contentLength int, headers ...string) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.baseURL, "http://"))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	req := "POST " + path + " HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(contentLength) + "\r\n"
	for i := 0; i+1 < len(headers); i += 2 {
		req += headers[i] + ": " + headers[i+1] + "\r\n"
	}
	_, err = conn.Write([]byte(req + "\r\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(3*time.Second)))
	answer, err := io.ReadAll(conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the server waited for the body instead of answering from the headers (got %q)", answer)
	}
	return string(answer)
}

func TestAnonymousUploadIsRefusedBeforeItsBodyIsRead(t *testing.T) {
	f := setup(t)
	for _, headers := range [][]string{nil, {"Authorization", "Bearer not-a-key-of-ours-at-all"}} {
		answer := rawRequest(t, f, "/v1/notifications/batch", 16<<20, headers...)
		require.True(t, strings.HasPrefix(answer, "HTTP/1.1 401"), "answer: %q", answer)
		require.Contains(t, answer, "/problems/unauthorized")
	}
}

func TestBodyOverTheRouteLimitIsRefusedBeforeItIsRead(t *testing.T) {
	f := setup(t)
	// A single notification may not be as large as a batch.
	answer := rawRequest(t, f, "/v1/notifications", 3<<20, "Authorization", "Bearer "+f.apiKey)
	require.True(t, strings.HasPrefix(answer, "HTTP/1.1 413"), "answer: %q", answer)
	require.Contains(t, answer, "/problems/payload-too-large")
	require.Contains(t, answer, "at most 2097152 bytes")
}
