//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// workerConcurrency is the worker's WORKER_CONCURRENCY in the suite; it
// bounds the provider calls in flight.
const workerConcurrency = 16

// stack is one scenario's deployment: its own database, queue, key and
// task-queue prefixes on the suite's services, a sink, the api and worker.
type stack struct {
	t        *testing.T
	env      []string
	apiURL   string
	apiKey   string
	sink     *sink.Sink
	api      *testenv.Process
	worker   *testenv.Process
	pool     *pgxpool.Pool
	topology queue.Topology
	queues   *queue.Publisher
	temporal client.Client
	taskQ    string
	// proxies stand between the api and worker and each service (postgres,
	// redis, rabbitmq), so a scenario can partition one silently. The
	// suite's own checks go to the services directly.
	proxies map[string]*testenv.Proxy
	// stream is the scenario's client side, for faults that act on what it
	// got accepted.
	stream *stream
	// taken, when set, counts the 2xx answers a provider other than the
	// sink gave the notification id (a fake FCM, say), for the check; 0
	// sends it to the sink's records.
	taken func(id string) int
}

// takenCount is how many times a provider answered id 2xx: the scenario's
// own count, else the sink's record.
func (s *stack) takenCount(id string) int {
	if s.taken != nil {
		if n := s.taken(id); n > 0 {
			return n
		}
	}
	if rec, ok := s.sink.Record(id); ok {
		return rec.Delivered
	}
	return 0
}

func newStack(t *testing.T, extraEnv ...string) *stack {
	t.Helper()
	services := testenv.Shared(t)
	dsn := testenv.Database(t)
	topo := testenv.Topology(t)
	_, keyPrefix := testenv.Redis(t)

	sk := sink.New(sink.Config{}, nil)
	sinkSrv := httptest.NewServer(sk)
	t.Cleanup(sinkSrv.Close)

	apiPort := testenv.FreePort(t)
	taskPrefix := testenv.Name("c") + "-"
	s := &stack{
		t:        t,
		apiURL:   "http://127.0.0.1:" + strconv.Itoa(apiPort),
		apiKey:   testenv.Name("chaos-key-"),
		sink:     sk,
		topology: topo,
		taskQ:    taskPrefix + "notifications",
	}
	s.proxies = map[string]*testenv.Proxy{}
	via := func(service, raw string) string {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		p := testenv.NewProxy(t, u.Host)
		s.proxies[service] = p
		// Healed before the processes stop at cleanup.
		t.Cleanup(p.Heal)
		u.Host = p.Addr()
		return u.String()
	}
	s.env = append(os.Environ(),
		"API_KEYS="+s.apiKey,
		"DATABASE_DSN="+via("postgres", dsn),
		"RABBITMQ_URL="+via("rabbitmq", services.RabbitMQURL),
		"RABBITMQ_QUEUE_PREFIX="+topo.Prefix,
		"REDIS_URL="+via("redis", services.RedisURL),
		"REDIS_KEY_PREFIX="+keyPrefix,
		"WEBHOOK_SITE_URL="+sinkSrv.URL+"/webhook",
		// A providers file may name the sink's paths as ${CHAOS_SINK_URL}/...
		"CHAOS_SINK_URL="+sinkSrv.URL,
		"TEMPORAL_ADDRESS=127.0.0.1:"+strconv.Itoa(temporalPort),
		"TEMPORAL_NAMESPACE=default",
		"TEMPORAL_TASK_QUEUE_PREFIX="+taskPrefix,
		"API_PORT="+strconv.Itoa(apiPort),
		"WORKER_METRICS_PORT="+strconv.Itoa(testenv.FreePort(t)),
		"WORKER_CONCURRENCY="+strconv.Itoa(workerConcurrency),
		"RATE_LIMIT_PER_SEC=500",
		"WEBHOOK_TIMEOUT=2s",
		"RETRY_MAX_ATTEMPTS=10",
		"RETRY_INITIAL_INTERVAL=250ms",
		"RETRY_MAX_INTERVAL=2s",
		"OUTBOX_POLL_INTERVAL=250ms",
		"RETRY_SCAN_INTERVAL=2s",
		"RECONCILE_AFTER=20s",
		"SHUTDOWN_TIMEOUT=10s",
		"LOG_LEVEL=warn",
	)
	s.env = append(s.env, extraEnv...)

	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s.pool = pool
	s.queues = queue.NewPublisher(services.RabbitMQURL, topo)
	t.Cleanup(func() { _ = s.queues.Close() })
	tc, err := client.Dial(client.Options{HostPort: "127.0.0.1:" + strconv.Itoa(temporalPort), Namespace: "default"})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	s.temporal = tc

	s.api = s.start("api")
	s.worker = s.start("worker")
	testenv.WaitReady(t, s.apiURL+"/readyz", 60*time.Second)
	return s
}

func (s *stack) start(name string) *testenv.Process {
	s.t.Helper()
	return testenv.StartProcess(s.t, name, filepath.Join(binDir, name), s.env)
}

// restartAPI starts the api again and waits until it answers.
func (s *stack) restartAPI() {
	s.api = s.start("api")
	testenv.WaitReady(s.t, s.apiURL+"/livez", 60*time.Second)
}

// stream is the client side of a scenario: paced requests, singly and in
// small batches, over every channel and priority, and what came back.
type stream struct {
	sent       atomic.Int64 // notifications sent (a batch counts its items)
	clientErrs atomic.Int64 // requests with no answer
	// recoveredAt is when the fault was over (unix nanoseconds, 0 before);
	// acceptedAfter counts the notifications accepted from requests sent
	// after that.
	recoveredAt   atomic.Int64
	acceptedAfter atomic.Int64
	mu            sync.Mutex
	accepted      []string
	codes         map[int]int // answers by status code, per request
}

const (
	streamSize = 500                   // notifications per scenario, at least
	streamTail = 2 * time.Second       // the stream goes on this long after the fault
	sendEvery  = 50 * time.Millisecond // per sender: ~60 notifications/s in all, so a stream lasts ~5s
	senders    = 2
	batchEvery = 8 // every eighth request of a sender is a batch
	batchSize  = 5
)

var (
	channels   = notification.Channels
	priorities = []notification.Priority{notification.High, notification.Normal, notification.Low}
)

func item(n int) map[string]any {
	ch := channels[n%len(channels)]
	m := map[string]any{"channel": ch, "priority": priorities[(n/3)%len(priorities)], "content": "chaos #" + strconv.Itoa(n)}
	switch ch {
	case notification.SMS:
		m["recipient"] = "+1415555" + fmt.Sprintf("%04d", n%10000)
	case notification.Email:
		m["recipient"] = fmt.Sprintf("user%d@example.com", n)
		m["subject"] = "chaos"
	default:
		m["recipient"] = fmt.Sprintf("device-token-%d", n)
	}
	return m
}

// recover marks the fault as over.
func (st *stream) recover() { st.recoveredAt.Store(time.Now().UnixNano()) }

// finished reports whether the stream has sent streamSize notifications and
// gone on for streamTail after the fault, so every scenario also shows new
// work accepted and delivered once the fault is over.
func (st *stream) finished() bool {
	at := st.recoveredAt.Load()
	return st.sent.Load() >= streamSize && at != 0 && time.Since(time.Unix(0, at)) >= streamTail
}

// run sends notifications until finished.
func (st *stream) run(s *stack) {
	st.codes = map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			tick := time.NewTicker(sendEvery)
			defer tick.Stop()
			for k := 0; ; k++ {
				<-tick.C
				size := 1
				if k%batchEvery == batchEvery-1 {
					size = batchSize
				}
				if st.finished() {
					return
				}
				first := int(next.Add(int64(size))) - size
				st.send(s, first, size)
			}
		})
	}
	wg.Wait()
}

func (st *stream) send(s *stack, first, size int) {
	var body any
	path := "/v1/notifications"
	if size == 1 {
		body = item(first)
	} else {
		items := make([]map[string]any, size)
		for i := range items {
			items[i] = item(first + i)
		}
		body, path = map[string]any{"notifications": items}, "/v1/notifications/batch"
	}
	raw, _ := json.Marshal(body)
	st.sent.Add(int64(size))
	late := st.recoveredAt.Load() != 0
	req, _ := http.NewRequest(http.MethodPost, s.apiURL+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		st.clientErrs.Add(1)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	var answer struct {
		ID            string `json:"id"`
		Notifications []struct {
			ID string `json:"id"`
		} `json:"notifications"`
		Type string `json:"type"`
	}
	decodeErr := json.NewDecoder(resp.Body).Decode(&answer)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.codes[resp.StatusCode]++
	if resp.StatusCode/100 != 2 || decodeErr != nil {
		return
	}
	if late {
		st.acceptedAfter.Add(int64(max(len(answer.Notifications), 1)))
	}
	if answer.ID != "" {
		st.accepted = append(st.accepted, answer.ID)
	}
	for _, n := range answer.Notifications {
		st.accepted = append(st.accepted, n.ID)
	}
}

// latest returns the n notifications accepted last.
func (st *stream) latest(n int) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.accepted[max(0, len(st.accepted)-n):]...)
}

// cancel asks the API to cancel id; any answer is fine (it may be
// delivered already).
func (s *stack) cancel(id string) {
	req, err := http.NewRequest(http.MethodPost, s.apiURL+"/v1/notifications/"+id+"/cancel", nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err == nil {
		_ = resp.Body.Close()
	}
}

func (st *stream) ids() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.accepted...)
}

// quiet reports what still moves: non-terminal accepted notifications,
// outbox rows, messages in the main queues, running workflows.
type quiet struct {
	pending, outbox, queued, running int
}

func (q quiet) done() bool { return q.pending+q.outbox+q.queued+q.running == 0 }

func (s *stack) quiet(ctx context.Context, ids []string) (quiet, error) {
	var q quiet
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifications WHERE id = ANY($1::uuid[])
		AND status NOT IN ('DELIVERED', 'FAILED', 'CANCELLED')`, ids).Scan(&q.pending)
	if err != nil {
		return q, err
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&q.outbox); err != nil {
		return q, err
	}
	main, _, err := s.queues.Depths(ctx, notification.Channels)
	if err != nil {
		return q, err
	}
	for _, n := range main {
		q.queued += n
	}
	resp, err := s.temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf("TaskQueue = %q AND ExecutionStatus = 'Running'", s.taskQ),
	})
	if err != nil {
		return q, err
	}
	q.running = int(resp.GetCount())
	return q, nil
}

// waitQuiet waits until nothing moves and returns how long it took.
func (s *stack) waitQuiet(ids []string, limit time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, err := s.quiet(ctx, ids)
		cancel()
		if err == nil && last.done() {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			// What still moved, and the last error, as values (a message
			// argument of require.Eventually is formatted when the check
			// is set up, not when it fails).
			s.t.Fatalf("never quiet within %s: %+v (last error: %v)", limit, last, err)
		}
		time.Sleep(250 * time.Millisecond) // the poll interval
	}
}
