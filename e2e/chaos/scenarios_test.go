//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// faultAt is how many notifications are sent before the fault strikes.
const faultAt = 100

// quiesceWithin bounds the wait for quiet after the stream; the reconciler
// (RECONCILE_AFTER=20s here) is part of the cure, so it is generous.
const quiesceWithin = 4 * time.Minute

// scenario streams notifications, runs fault once faultAt were sent
// (while the stream goes on), waits for quiet and checks the promise. It
// returns the stream and the stack for scenario-specific checks.
func scenario(t *testing.T, name string, fault func(s *stack), extraEnv ...string) (*stack, *stream, result) {
	return newStack(t, extraEnv...).play(name, fault)
}

// play is a scenario on a stack already made (and keyed, say): the stream,
// the fault, quiet, and the promise checked.
func (s *stack) play(name string, fault func(s *stack)) (*stack, *stream, result) {
	t := s.t
	st := &stream{}
	s.stream = st
	sent := make(chan struct{})
	go func() { defer close(sent); st.run(s) }()
	require.Eventually(t, func() bool { return st.sent.Load() >= faultAt }, time.Minute, 5*time.Millisecond,
		"the stream never reached %d notifications", faultAt)
	fault(s)
	st.recover()
	<-sent

	ids := st.ids()
	require.NotEmpty(t, ids, "nothing was accepted")
	require.Positive(t, st.acceptedAfter.Load(), "notifications are accepted again after the fault")
	took := s.waitQuiet(ids, quiesceWithin)
	r := s.check(name, st, ids)
	r.Quiescence = took
	record(r)
	t.Logf("%+v", r)
	return s, st, r
}

// check holds the promise for every accepted id and fills in the report line.
func (s *stack) check(name string, st *stream, ids []string) result {
	t := s.t
	t.Helper()
	ctx := context.Background()
	r := result{Scenario: name, Sent: int(st.sent.Load()), Accepted: len(ids), ClientErrs: int(st.clientErrs.Load()),
		AcceptedAfter: int(st.acceptedAfter.Load())}
	st.mu.Lock()
	codes := st.codes
	st.mu.Unlock()
	r.Refused = codes[http.StatusServiceUnavailable]
	for code, n := range codes {
		require.True(t, code/100 == 2 || code == http.StatusServiceUnavailable,
			"the API answered %d %d times: only 2xx and 503 are allowed under faults", code, n)
	}

	rows, err := s.pool.Query(ctx, `SELECT id::text, status, COALESCE(failure_reason, '') FROM notifications WHERE id = ANY($1::uuid[])`, ids)
	require.NoError(t, err)
	seen := map[string]bool{}
	for rows.Next() {
		var id, status, reason string
		require.NoError(t, rows.Scan(&id, &status, &reason))
		seen[id] = true
		switch notification.Status(status) {
		case notification.StatusDelivered:
			r.Delivered++
			if s.takenCount(id) == 0 {
				r.Lost++
				t.Errorf("%s is DELIVERED but the provider never answered it 2xx", id)
			}
		case notification.StatusFailed:
			r.Failed++
			if reason == "" {
				t.Errorf("%s FAILED without a reason", id)
			}
		case notification.StatusCancelled:
			r.Cancelled++
		default:
			r.Lost++
			t.Errorf("%s is still %s", id, status)
		}
		if s.takenCount(id) > 1 {
			r.Duplicates++
		}
	}
	require.NoError(t, rows.Err())
	for _, id := range ids {
		if !seen[id] {
			r.Lost++
			t.Errorf("%s was accepted but is not stored", id)
		}
	}
	stats := s.sink.Stats()
	require.Zero(t, stats.Mismatched, "every request carried its notification's id as webhook-id")
	r.MaxFlight = stats.MaxInFlight
	require.Zero(t, r.Lost, "lost notifications")

	var outbox int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&outbox))
	require.Zero(t, outbox, "outbox empty")
	main, dead, err := s.queues.Depths(ctx, notification.Channels)
	require.NoError(t, err)
	for ch, n := range main {
		require.Zero(t, n, "queue %s drained", ch)
	}
	deadTotal := 0
	for _, n := range dead {
		deadTotal += n
	}
	require.GreaterOrEqual(t, deadTotal, r.Failed, "every FAILED notification is in a dead-letter queue")
	return r
}

// restart is the fault that stops one of the suite's services, keeps it
// down for outage (on purpose: the outage is the scenario), and starts it
// again.
func restart(t *testing.T, service string, outage time.Duration) func(*stack) {
	return func(*stack) {
		require.NoError(t, services("stop", service))
		time.Sleep(outage)
		require.NoError(t, services("start", service))
	}
}

func TestWorkerKilledMidStream(t *testing.T) {
	scenario(t, "kill -9 worker", func(s *stack) {
		s.worker.Kill()
		time.Sleep(2 * time.Second) // the outage
		s.worker = s.start("worker")
	})
}

func TestAPIKilledMidStream(t *testing.T) {
	_, _, r := scenario(t, "kill -9 api", func(s *stack) {
		s.api.Kill()
		time.Sleep(2 * time.Second) // the outage
		s.restartAPI()
	})
	require.Positive(t, r.ClientErrs, "requests sent while the API was down got no answer")
}

func TestRabbitMQRestartedMidStream(t *testing.T) {
	scenario(t, "restart rabbitmq", restart(t, "rabbitmq", 2*time.Second))
}

func TestPostgresRestartedMidStream(t *testing.T) {
	_, _, r := scenario(t, "restart postgres", restart(t, "postgres", 3*time.Second))
	require.Positive(t, r.Refused, "the API answered 503 while PostgreSQL was down")
}

// burned counts the delivered notifications that used more than one
// attempt, as the rows say and as their workflows counted (an attempt the
// workflow counted may never show on the row: a timed-out activity that
// went on to deliver).
func (s *stack) burned() int {
	s.t.Helper()
	var rows int
	require.NoError(s.t, s.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM notifications WHERE status = 'DELIVERED' AND attempts > 1`).Scan(&rows))
	resp, err := s.temporal.CountWorkflow(context.Background(), &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf("TaskQueue = %q AND NotificationStatus = 'DELIVERED' AND NotificationAttempts > 1", s.taskQ),
	})
	require.NoError(s.t, err)
	return max(rows, int(resp.GetCount()))
}

func TestRedisStoppedForTenSeconds(t *testing.T) {
	s, _, r := scenario(t, "stop redis 10s", restart(t, "redis", 10*time.Second))
	// The limiter fails closed: deliveries waited, and none spent an
	// attempt on the outage.
	require.Zero(t, r.Failed)
	require.Zero(t, s.burned(), "notifications that needed more than one attempt")
}

// partition is the fault that makes a service unreachable silently
// (connections hang, nothing is refused) for outage, then heals it.
func partition(service string, outage time.Duration) func(*stack) {
	return func(s *stack) {
		s.proxies[service].Partition()
		time.Sleep(outage) // the outage is the scenario
		s.proxies[service].Heal()
	}
}

// partitionScenario partitions service for 15 s under the stream: nothing
// fails, nothing spends an attempt, nothing reaches the provider twice.
func partitionScenario(t *testing.T, service string) {
	s, _, r := scenario(t, "partition "+service+" 15s", partition(service, 15*time.Second))
	require.Zero(t, r.Failed, "a partition fails nothing")
	require.Zero(t, s.burned(), "no delivered notification used more than one attempt")
	require.Zero(t, r.Duplicates, "the provider answered no notification twice")
}

func TestPostgresPartitionedForFifteenSeconds(t *testing.T) { partitionScenario(t, "postgres") }

func TestRedisPartitionedForFifteenSeconds(t *testing.T) { partitionScenario(t, "redis") }

func TestRabbitMQPartitionedForFifteenSeconds(t *testing.T) { partitionScenario(t, "rabbitmq") }

// slowLimit is the per-channel rate of the slow-provider scenario: twice
// what the stream sends each channel (~20/s), so while the provider is fast
// every notification takes the fast path. windowAllowance is what arrival
// jitter may add to a window at the provider: a slot is taken at most
// slotFreshness (250 ms) before its send, and the request then crosses the
// loopback and the sink's scheduling.
const (
	slowLimit       = 40
	windowAllowance = 3
)

func TestSlowProviderAtTheRateLimit(t *testing.T) {
	s, _, r := scenario(t, "slow provider, 40/s", func(s *stack) {
		// Replies slower than the worker's calls can cover (16 fast-path
		// calls of 1.5 s: under 11/s, for 60/s arriving): attempts pile up
		// behind them, and go out together once the provider is fast.
		s.sink.SetConfig(sink.Config{Latency: 1500 * time.Millisecond})
		time.Sleep(4 * time.Second)
		// A worker lost mid-call: its workflow tasks are retried on the
		// next one, which runs their fast-path attempts again.
		s.worker.Kill()
		s.worker = s.start("worker")
		time.Sleep(4 * time.Second)
		// Then fast again, with a backlog waiting.
		s.sink.SetConfig(sink.Config{})
	}, "RATE_LIMIT_PER_SEC="+strconv.Itoa(slowLimit), "WEBHOOK_TIMEOUT=5s")

	// GCRA admits at most the rate plus its burst in any second.
	bound := slowLimit + ratelimit.Limit(slowLimit).Burst + windowAllowance
	for _, ch := range channels {
		got := s.sink.MaxInWindow(time.Second, string(ch))
		t.Logf("%s: at most %d requests in any second at the provider (bound %d)", ch, got, bound)
		require.LessOrEqual(t, got, bound, "%s: a 1-second window at the provider held more than the limit allows", ch)
	}
	require.Zero(t, r.Failed)
	require.LessOrEqual(t, r.Duplicates, (len(channels)+1)*workerConcurrency,
		"only calls in flight when the worker died went twice")
}

func TestOddProviders(t *testing.T) {
	elsewhere := sink.New(sink.Config{}, nil)
	target := httptest.NewServer(elsewhere)
	t.Cleanup(target.Close)
	var cancelled []string
	s, _, r := scenario(t, "odd providers", func(s *stack) {
		// A binary reply with NUL bytes (protobuf, UTF-16...).
		s.sink.SetConfig(sink.Config{Reply: []byte("\x08\x96\x01\x00\x00\xff\xfe\x00r\x00e\x00p"), ReplyContentType: "application/x-protobuf"})
		time.Sleep(2 * time.Second)
		// Redirects elsewhere: never followed, retried.
		s.sink.SetConfig(sink.Config{RedirectTo: target.URL + "/webhook", RedirectStatus: http.StatusFound})
		time.Sleep(2 * time.Second)
		// 2xx at once, then a reply that never ends, while notifications
		// in flight are cancelled.
		s.sink.SetConfig(sink.Config{StallAfterStatus: true})
		time.Sleep(time.Second)
		cancelled = s.stream.latest(20)
		for _, id := range cancelled {
			s.cancel(id)
		}
		time.Sleep(time.Second)
		s.sink.SetConfig(sink.Config{})
	}, "WEBHOOK_TIMEOUT=2s")

	require.Zero(t, elsewhere.Stats().Requests, "a redirect's target never got a request")
	require.Zero(t, r.Failed)
	require.Zero(t, r.Duplicates, "no reply turned into a resend")
	for _, id := range cancelled {
		var status string
		require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT status FROM notifications WHERE id = $1`, id).Scan(&status))
		if rec, ok := s.sink.Record(id); ok && rec.Delivered > 0 {
			require.Equal(t, "DELIVERED", status, "%s: the provider answered 2xx before the cancel reached it", id)
		}
	}
}

func TestTemporalRestartedMidStream(t *testing.T) {
	scenario(t, "restart temporal", restart(t, "temporal", 2*time.Second))
}

func TestProviderHangs(t *testing.T) {
	s, _, _ := scenario(t, "provider hangs 8s", func(s *stack) {
		s.sink.SetConfig(sink.Config{Hang: true})
		time.Sleep(8 * time.Second) // the outage: calls time out (WEBHOOK_TIMEOUT=2s)
		s.sink.SetConfig(sink.Config{})
	})
	stats := s.sink.Stats()
	require.Positive(t, stats.Hung, "calls were held")
	// Provider calls in flight are bounded by the workers' concurrency (one
	// activity worker per channel and the workflow worker's local
	// activities), not by the backlog.
	require.LessOrEqual(t, stats.MaxInFlight, (len(notification.Channels)+1)*workerConcurrency)
}

// failoverRoutes routes every channel through a primary and a backup
// webhook provider played by the sink.
const failoverRoutes = `
providers:
  - {name: sms-primary, kind: webhook, url: "${CHAOS_SINK_URL}/sms-primary"}
  - {name: sms-backup, kind: webhook, url: "${CHAOS_SINK_URL}/sms-backup"}
  - {name: email-primary, kind: webhook, url: "${CHAOS_SINK_URL}/email-primary"}
  - {name: email-backup, kind: webhook, url: "${CHAOS_SINK_URL}/email-backup"}
  - {name: push-primary, kind: webhook, url: "${CHAOS_SINK_URL}/push-primary"}
  - {name: push-backup, kind: webhook, url: "${CHAOS_SINK_URL}/push-backup"}
routes:
  sms: [sms-primary, sms-backup]
  email: [email-primary, email-backup]
  push: [push-primary, push-backup]
breaker:
  failureThreshold: 3
  openFor: 3s
`

// TestPrimaryProvidersHangMidStream: every channel's primary provider
// stops answering for 8 s under the stream. Nothing is lost or failed: the
// attempts that timed out fail over at once, and the backups take the
// traffic once the breakers open.
func TestPrimaryProvidersHangMidStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "providers.yaml")
	require.NoError(t, os.WriteFile(path, []byte(failoverRoutes), 0o600))
	primaries := []string{"/sms-primary", "/email-primary", "/push-primary"}
	s, _, r := scenario(t, "primary providers hang 8s", func(s *stack) {
		for _, p := range primaries {
			s.sink.SetPathConfig(p, sink.Config{Hang: true})
		}
		time.Sleep(8 * time.Second) // the outage: calls time out (WEBHOOK_TIMEOUT=2s)
		for _, p := range primaries {
			s.sink.SetPathConfig(p, sink.Config{})
		}
	}, "PROVIDERS_FILE="+path)
	require.Zero(t, r.Failed)
	var backups int
	require.NoError(t, s.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM notifications WHERE status = 'DELIVERED' AND provider LIKE '%-backup'`).Scan(&backups))
	t.Logf("%d notifications delivered by a backup", backups)
	require.Positive(t, backups, "the backups took traffic while the primaries hung")
}
