// Package e2e drives the real binaries (api, worker) against real
// PostgreSQL, RabbitMQ, Redis and a Temporal dev server, with the provider
// played by an in-process sink.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

var (
	binDir   string
	temporal *testenv.Temporal
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dispatch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	binDir = dir
	root, err := testenv.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	args := []string{"build", "-o", binDir + string(os.PathSeparator)}
	if raceBuild {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/api", "./cmd/worker")...)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		return 1
	}
	temporal, err = testenv.StartTemporal(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer temporal.Stop()
	return m.Run()
}

// stack is one isolated deployment: its own database, queue, key and task
// queue prefixes, a sink, and the api and worker processes.
type stack struct {
	t        *testing.T
	env      []string
	apiURL   string
	apiKey   string             // sent on every /v1 request
	client   *dispatch.Dispatch // the Go client (github.com/dispatch-engine/dispatch-engine/client), with apiKey
	sink     *sink.Sink
	sinkURL  string
	api      *proc
	worker   *proc
	temporal client.Client
}

func setup(t *testing.T) *stack {
	t.Helper()
	return setupWith(t, nil)
}

// setupWith is setup with prepare run before the processes start (to add
// to their environment, write a providers file).
func setupWith(t *testing.T, prepare func(s *stack)) *stack {
	t.Helper()
	services := testenv.Shared(t)
	dsn := testenv.Database(t)
	topo := testenv.Topology(t)
	_, keyPrefix := testenv.Redis(t)

	sk := sink.New(sink.Config{}, t.Logf)
	sinkSrv := httptest.NewServer(sk)
	t.Cleanup(sinkSrv.Close)

	apiPort := freePort(t)
	apiKey := testenv.Name("e2e-api-key-")
	s := &stack{
		t:       t,
		apiURL:  "http://127.0.0.1:" + strconv.Itoa(apiPort),
		apiKey:  apiKey,
		sink:    sk,
		sinkURL: sinkSrv.URL,
		env: append(os.Environ(),
			"API_KEYS="+apiKey,
			"DATABASE_DSN="+dsn,
			"RABBITMQ_URL="+services.RabbitMQURL,
			"RABBITMQ_QUEUE_PREFIX="+topo.Prefix,
			"REDIS_URL="+services.RedisURL,
			"REDIS_KEY_PREFIX="+keyPrefix,
			"WEBHOOK_SITE_URL="+sinkSrv.URL+"/webhook",
			"TEMPORAL_ADDRESS="+temporal.Address,
			"TEMPORAL_NAMESPACE="+temporal.Namespace,
			"TEMPORAL_TASK_QUEUE_PREFIX="+testenv.Name("t")+"-",
			"API_PORT="+strconv.Itoa(apiPort),
			"WORKER_METRICS_PORT="+strconv.Itoa(freePort(t)),
			"RETRY_INITIAL_INTERVAL=200ms",
			"RETRY_MAX_INTERVAL=2s",
			"OUTBOX_POLL_INTERVAL=200ms",
			"LOG_LEVEL=info",
		),
	}
	dc, err := dispatch.New(s.apiURL, apiKey, dispatch.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	require.NoError(t, err)
	s.client = dc
	tc, err := client.Dial(client.Options{HostPort: temporal.Address, Namespace: temporal.Namespace})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	s.temporal = tc
	// Workflows the test leaves waiting (a long backoff, a schedule) are
	// terminated, so a shared Temporal server does not pile them up.
	t.Cleanup(func() { s.terminateLeftovers() })

	if prepare != nil {
		prepare(s)
	}
	s.api = s.start("api")
	s.worker = s.start("worker")
	s.waitReady(s.apiURL + "/readyz")
	return s
}

type proc = testenv.Process

func (s *stack) start(name string) *proc {
	s.t.Helper()
	return testenv.StartProcess(s.t, name, filepath.Join(binDir, name), s.env)
}

func (s *stack) waitReady(url string) {
	s.t.Helper()
	testenv.WaitReady(s.t, url, 30*time.Second)
}

// post sends body as JSON to path, with the API key, and decodes the JSON answer.
func (s *stack) post(path string, body any) (int, http.Header, map[string]any) {
	s.t.Helper()
	raw, err := json.Marshal(body)
	require.NoError(s.t, err)
	code, hdr, answer := s.request(http.MethodPost, path, raw, "Content-Type", "application/json")
	return code, hdr, decodeJSON(s.t, answer)
}

// get fetches path with the API key and decodes the JSON answer.
func (s *stack) get(path string) (int, map[string]any) {
	s.t.Helper()
	code, _, answer := s.request(http.MethodGet, path, nil)
	return code, decodeJSON(s.t, answer)
}

// request sends any request to the API and returns the raw answer. It
// carries the API key as a bearer token unless headers (name, value pairs)
// say otherwise; a header given an empty value is not sent.
func (s *stack) request(method, path string, body []byte, headers ...string) (int, http.Header, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.apiURL+path, rd)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	testenv.SetHeaders(req, headers...)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	return resp.StatusCode, resp.Header, raw
}

func decodeJSON(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), "body: %s", raw)
	return out
}

// waitStatus polls the notification until it has status.
func (s *stack) waitStatus(id, status string, within time.Duration) map[string]any {
	s.t.Helper()
	var last map[string]any
	require.Eventually(s.t, func() bool {
		_, last = s.get("/v1/notifications/" + id)
		return last["status"] == status
	}, within, 50*time.Millisecond, "notification %s never reached %s; last: %v", id, status, func() any { return last })
	return last
}

// waitTerminal waits through the Go client until the notification is
// DELIVERED, FAILED or CANCELLED, and answers it.
func (s *stack) waitTerminal(id dispatch.NotificationID, within time.Duration) *dispatch.Notification {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), within)
	defer cancel()
	n, err := s.client.Wait(ctx, id, 50*time.Millisecond)
	require.NoError(s.t, err, "notification %s never became terminal", id)
	return n
}

func freePort(t *testing.T) int { return testenv.FreePort(t) }

// terminateLeftovers terminates this stack's workflows that are still running.
func (s *stack) terminateLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	queue := s.envValue("TEMPORAL_TASK_QUEUE_PREFIX") + "notifications"
	var token []byte
	for {
		page, err := s.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:         fmt.Sprintf("TaskQueue = %q AND ExecutionStatus = 'Running'", queue),
			NextPageToken: token,
		})
		if err != nil {
			s.t.Logf("listing leftover workflows: %v", err)
			return
		}
		for _, e := range page.GetExecutions() {
			_ = s.temporal.TerminateWorkflow(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId(), "test finished")
		}
		if token = page.GetNextPageToken(); len(token) == 0 {
			return
		}
	}
}
