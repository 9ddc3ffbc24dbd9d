package e2e

// The defects a review of the delivery core found, each reproduced through
// the public API against the running binaries.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// throughProxy restarts the named processes ("api", "worker") with the
// service in variable (DATABASE_DSN, REDIS_URL, RABBITMQ_URL) reached
// through a proxy the test can partition, and returns the proxy.
func (s *stack) throughProxy(variable string, names ...string) *testenv.Proxy {
	s.t.Helper()
	u, err := url.Parse(s.envValue(variable))
	require.NoError(s.t, err)
	proxy := testenv.NewProxy(s.t, u.Host)
	u.Host = proxy.Addr()
	env := append(append([]string(nil), s.env...), variable+"="+u.String())
	for _, name := range names {
		p := &s.worker
		if name == "api" {
			p = &s.api
		}
		(*p).Stop()
		*p = testenv.StartProcess(s.t, name, filepath.Join(binDir, name), env)
	}
	// Healed first at cleanup, so the processes stop without waiting on it.
	s.t.Cleanup(proxy.Heal)
	s.waitReady(s.apiURL + "/livez")
	return proxy
}

// awaitArrival waits until a request reaches the provider.
func (s *stack) awaitArrival(arrivals <-chan string) {
	s.t.Helper()
	select {
	case <-arrivals:
	case <-time.After(30 * time.Second):
		s.t.Fatal("no attempt reached the provider")
	}
}

// cancelInFlight sends an sms notification and cancels it once its attempt
// has reached the provider; it returns the notification's id.
func (s *stack) cancelInFlight(content string) string {
	s.t.Helper()
	arrivals := s.sink.Arrivals(4)
	_, _, created := s.post("/v1/notifications", smsRequest(content))
	id := created["id"].(string)
	s.awaitArrival(arrivals)
	code, _, _ := s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(s.t, http.StatusAccepted, code)
	return id
}

// proxyPostgres is throughProxy for the database.
func (s *stack) proxyPostgres(names ...string) *testenv.Proxy {
	return s.throughProxy("DATABASE_DSN", names...)
}

// scheduledSMS is an sms notification due in a few seconds: its workflow is
// running (waiting on its timer) before a fault strikes its first attempt.
func scheduledSMS(content string, in time.Duration) map[string]any {
	m := smsRequest(content)
	m["scheduledAt"] = time.Now().Add(in).UTC().Format(time.RFC3339Nano)
	return m
}

func TestProviderReplyWithNULBytesIsDeliveredOnce(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{Reply: []byte("\x00\x00\xffbinary\x00reply"), ReplyContentType: "application/octet-stream"})

	_, _, created := s.post("/v1/notifications", smsRequest("a provider that answers in binary"))
	id := created["id"].(string)

	got := s.waitStatus(id, "DELIVERED", 30*time.Second)
	require.EqualValues(t, 1, got["attempts"])
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests, "sent once: recording a reply never turns into a resend")
	code, list := s.get("/v1/notifications/" + id + "/attempts")
	require.Equal(t, http.StatusOK, code)
	attempts, _ := list["data"].([]any)
	require.Len(t, attempts, 1)
	first, _ := attempts[0].(map[string]any)
	require.Equal(t, "delivered", first["outcome"])
	require.Equal(t, "\uFFFD\uFFFD\uFFFDbinary\uFFFDreply", first["responseExcerpt"])
}

// hungDependencySpendsNoAttempt makes the worker's service in variable
// stop answering (not refusing) for longer than the whole retry schedule,
// over a notification's first attempt, and checks that the outage spent no
// attempt: on the row, at the provider, and in the workflow's own count.
func hungDependencySpendsNoAttempt(t *testing.T, variable string) {
	s := setup(t)
	s.env = append(s.env, "RETRY_MAX_ATTEMPTS=2")
	proxy := s.throughProxy(variable, "worker")

	_, _, created := s.post("/v1/notifications", scheduledSMS("due while "+variable+" hangs", 2*time.Second))
	id := created["id"].(string)
	s.waitStatus(id, "SCHEDULED", 30*time.Second)
	proxy.Partition()
	time.Sleep(12 * time.Second) // the outage is the scenario
	proxy.Heal()

	got := s.waitStatus(id, "DELIVERED", 60*time.Second)
	require.EqualValues(t, 1, got["attempts"], "the outage spent no attempt")
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests)
	s.requireWorkflowResult(id, "DELIVERED", 1)
}

func TestHungDatabaseSpendsNoAttempt(t *testing.T) { hungDependencySpendsNoAttempt(t, "DATABASE_DSN") }

func TestHungRedisSpendsNoAttempt(t *testing.T) { hungDependencySpendsNoAttempt(t, "REDIS_URL") }

func TestRedirectIsNotADelivery(t *testing.T) {
	s := setup(t)
	elsewhere := sink.New(sink.Config{}, nil)
	other := httptest.NewServer(elsewhere)
	t.Cleanup(other.Close)
	s.sink.SetConfig(sink.Config{RedirectTo: other.URL + "/webhook", RedirectStatus: http.StatusFound})

	_, _, created := s.post("/v1/notifications", smsRequest("redirected"))
	id := created["id"].(string)

	got := s.waitStatus(id, "RETRYING", 30*time.Second)
	require.Contains(t, got["lastError"], "redirect")
	require.Zero(t, elsewhere.Stats().Requests, "the body and its signature never went to the redirect's target")

	// Once the provider answers for itself, it is delivered.
	s.sink.SetConfig(sink.Config{})
	s.waitStatus(id, "DELIVERED", 30*time.Second)
}

func TestCancelReachesAFastPathCallWithoutWaitingForTheWorkflowTask(t *testing.T) {
	s := setup(t)
	// A provider slower than the workflow task's heartbeat (8 s), which is
	// when a signal reaches a task running a local activity.
	s.sink.SetConfig(sink.Config{Latency: 20 * time.Second})
	s.restartWorker("WEBHOOK_TIMEOUT=30s")
	id := s.cancelInFlight("cancel me on the fast path")

	s.waitStatus(id, "CANCELLED", 30*time.Second)
	rows := s.attempts(id)
	require.Len(t, rows, 1)
	require.Equal(t, "cancelled", rows[0].Outcome)
	var tookMS int
	require.NoError(t, s.db().QueryRow(context.Background(),
		`SELECT duration_ms FROM delivery_attempts WHERE notification_id = $1`, id).Scan(&tookMS))
	require.Less(t, tookMS, 4000, "the cancel aborted the call at once, not at the workflow task's heartbeat")
}

func TestTwoXXArrivingAsTheAttemptIsCancelledIsDelivered(t *testing.T) {
	s := setup(t)
	// The provider answers 200 at once and then holds the rest of its reply,
	// so the cancel reaches the attempt after it learnt of the delivery.
	s.sink.SetConfig(sink.Config{StallAfterStatus: true})
	s.restartWorker("DELIVERY_FAST_PATH=false")
	id := s.cancelInFlight("taken as it is cancelled")

	var got map[string]any
	require.Eventually(t, func() bool {
		_, got = s.get("/v1/notifications/" + id)
		return got["status"] == "DELIVERED" || got["status"] == "CANCELLED"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "DELIVERED", got["status"], "the provider answered 2xx: it is a delivery")
}

func TestCancelDoesNotWaitBehindTheBacklog(t *testing.T) {
	s := setup(t)
	// A slow channel with a backlog of LOW notifications.
	s.restartWorker("RATE_LIMIT_SMS=2", "DELIVERY_FAST_PATH=false")
	const backlog = 30
	items := make([]map[string]any, backlog)
	for i := range items {
		items[i] = map[string]any{"channel": "sms", "recipient": "+14155550199", "content": "backlog", "priority": "LOW"}
	}
	code, _, _ := s.post("/v1/notifications/batch", map[string]any{"notifications": items})
	require.Equal(t, http.StatusAccepted, code)
	// One more LOW notification, scheduled, then cancelled: its Cancel must
	// not queue behind the backlog on the rate-limited queue.
	_, _, created := s.post("/v1/notifications", map[string]any{
		"channel": "sms", "recipient": "+14155550198", "content": "cancel me", "priority": "LOW",
		"scheduledAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano),
	})
	id := created["id"].(string)
	s.waitStatus(id, "SCHEDULED", 30*time.Second)
	code, _, _ = s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, code)

	s.waitStatus(id, "CANCELLED", 60*time.Second)
	delivered := s.sink.Stats().Delivered
	require.Less(t, delivered, backlog/2, "cancelled while most of the backlog still waits (%d of %d delivered)", delivered, backlog)
}

// requireWorkflowResult waits for the notification's workflow and checks
// what it ended with, as the Temporal UI shows it: a workflow that counted
// attempts it never made would end with more, on the failing path.
func (s *stack) requireWorkflowResult(id, status string, attempts int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res workflows.NotificationResult
	if err := s.temporal.GetWorkflow(ctx, "notification-"+id, "").Get(ctx, &res); err != nil {
		// A FAILED or CANCELLED notification's run fails or is canceled.
		var ok bool
		res, ok = workflows.ResultOfError(err)
		require.True(s.t, ok, "the run ended with %v", err)
	}
	require.Equal(s.t, workflows.NotificationResult{Status: workflows.Status(status), Attempts: attempts}, res)
}

// db opens a connection to the stack's database for the test's own queries.
func (s *stack) db() *pgx.Conn {
	s.t.Helper()
	conn, err := pgx.Connect(context.Background(), s.envValue("DATABASE_DSN"))
	require.NoError(s.t, err)
	s.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestRetriedWorkflowTaskSendsNothingWithoutASlot(t *testing.T) {
	s := setup(t)
	redis := s.throughProxy("REDIS_URL", "worker")
	// The provider holds the first request: the fast path's attempt is in
	// flight, inside its workflow task, when the worker dies.
	s.sink.SetConfig(sink.Config{HangFirst: 1})
	arrivals := s.sink.Arrivals(16)
	_, _, created := s.post("/v1/notifications", smsRequest("lost with its worker"))
	id := created["id"].(string)
	s.awaitArrival(arrivals)
	// No slot can be had from now on: the limiter fails closed.
	redis.Partition()
	s.worker.Kill()
	s.worker = testenv.StartProcess(t, "worker", filepath.Join(binDir, "worker"), append(append([]string(nil), s.env...),
		"REDIS_URL=redis://"+redis.Addr()+"/0"))

	// The workflow task is retried on the new worker (after its timeout):
	// either it sends again (without a slot, Redis being unreachable), or
	// it counts the lost attempt and schedules the next one, which waits
	// for a slot.
	wfID := "notification-" + id
	require.Eventually(t, func() bool {
		if rec, _ := s.sink.Record(id); rec.Requests > 1 {
			return true
		}
		return s.scheduledActivities(wfID) > 0
	}, 60*time.Second, 200*time.Millisecond)
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests, "nothing was sent without a rate-limit slot")

	redis.Heal()
	got := s.waitStatus(id, "DELIVERED", 60*time.Second)
	require.EqualValues(t, 2, got["attempts"], "the attempt lost with its worker counts")
}

// scheduledActivities counts the activities a workflow scheduled (local
// activities are markers, not these).
func (s *stack) scheduledActivities(wfID string) int {
	s.t.Helper()
	n := 0
	iter := s.temporal.GetWorkflowHistory(context.Background(), wfID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			return n
		}
		if ev.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED {
			n++
		}
	}
	return n
}

func TestUploadsAreLimitedBeforeTheirBodyIsRead(t *testing.T) {
	s := setup(t)
	// send announces a body of length bytes and sends none of it: the
	// answer must come from the headers alone.
	send := func(path string, length int, auth string) string {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.apiURL, "http://"))
		require.NoError(t, err)
		defer func() { _ = conn.Close() }()
		req := "POST " + path + " HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(length) + "\r\n"
		if auth != "" {
			req += "Authorization: Bearer " + auth + "\r\n"
		}
		_, err = conn.Write([]byte(req + "\r\n"))
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err, "the API waited for a body it will not take")
		return line
	}
	require.True(t, strings.HasPrefix(send("/v1/notifications/batch", 16<<20, ""), "HTTP/1.1 401"), "anonymous: refused before the body")
	require.True(t, strings.HasPrefix(send("/v1/notifications", 3<<20, s.apiKey), "HTTP/1.1 413"), "over the route's limit: refused before the body")
}

func TestConcurrentBatchesWithTheSameKeysInOtherOrdersAreNeverA500(t *testing.T) {
	s := setup(t)
	for round := range 20 {
		var forward, backward []map[string]any
		for i := range 50 {
			key := "k-" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
			item := map[string]any{"channel": "push", "recipient": "device-token-1", "content": "x", "idempotencyKey": key}
			forward = append(forward, item)
			backward = append([]map[string]any{item}, backward...)
		}
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for i, items := range [][]map[string]any{forward, backward} {
			wg.Go(func() {
				raw, _ := json.Marshal(map[string]any{"notifications": items})
				req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/v1/notifications/batch", bytes.NewReader(raw))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+s.apiKey)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					codes[i] = resp.StatusCode
					_ = resp.Body.Close()
				}
			})
		}
		wg.Wait()
		require.ElementsMatch(t, []int{http.StatusAccepted, http.StatusUnprocessableEntity}, codes, "round %d", round)
	}
}

// TestCancelOfAScheduledNotificationBeforeItsWorkflowStartedStopsIt: the
// consumer marked a scheduled notification SCHEDULED but had not started
// its workflow when the cancel came (the window between the two, widened
// here by a stopped worker): the cancel's signal found no workflow. The
// workflow, once started, must still stop at once, not sleep until
// scheduledAt.
func TestCancelOfAScheduledNotificationBeforeItsWorkflowStartedStopsIt(t *testing.T) {
	s := setup(t)
	s.worker.Stop()
	_, _, created := s.post("/v1/notifications", map[string]any{
		"channel": "sms", "recipient": "+14155550198", "content": "cancel me", "priority": "NORMAL",
		"scheduledAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano),
	})
	id := created["id"].(string)
	s.exec(`UPDATE notifications SET status = 'SCHEDULED' WHERE id = $1`, id) // as the consumer does before the start
	code, _, _ := s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, code)

	s.worker = s.start("worker")
	s.waitStatus(id, "CANCELLED", 30*time.Second)
}
