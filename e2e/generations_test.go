package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// Cancel, then retry at once, while the first run is still open and the
// worker is slow to take workflow tasks (paused here; a GC pause or a
// backlog of tasks does the same): the first run's cancel must not cancel
// the retry, nor send it itself. Every retry answered 202 is delivered,
// once.
func TestCancelThenRetryWhileTheFirstRunIsOpenDeliversTheRetry(t *testing.T) {
	// Without the fast path every attempt waits in the channel's activity
	// queue, and its notification stays QUEUED until it takes a slot.
	s := setupWith(t, func(s *stack) { s.env = append(s.env, "RATE_LIMIT_SMS=1", "DELIVERY_FAST_PATH=false") })
	items := make([]map[string]any, 12)
	for i := range items {
		items[i] = smsRequest("backlog #" + strconv.Itoa(i))
	}
	code, _, body := s.post("/v1/notifications/batch", map[string]any{"notifications": items})
	require.Equal(t, http.StatusAccepted, code, "body: %v", body)
	var ids []string
	for _, n := range body["notifications"].([]any) {
		ids = append(ids, n.(map[string]any)["id"].(string))
	}

	// The backlog's last ones wait, QUEUED, with their first runs open.
	waiting := ids[len(ids)-4:]
	for _, id := range waiting {
		require.Eventually(t, func() bool {
			_, err := s.temporal.DescribeWorkflow(context.Background(), "notification-"+id, "")
			return err == nil
		}, 30*time.Second, 50*time.Millisecond, "the run of %s never started", id)
		_, got := s.get("/v1/notifications/" + id)
		require.Equal(t, "QUEUED", got["status"], "%s waits behind the rate limit", id)
	}

	s.worker.Pause()
	for _, id := range waiting {
		code, _, got := s.post("/v1/notifications/"+id+"/cancel", nil)
		require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, code, "body: %v", got)
		require.Equal(t, "CANCELLED", got["status"])
		code, _, got = s.post("/v1/notifications/"+id+"/retry", nil)
		require.Equal(t, http.StatusAccepted, code, "body: %v", got)
	}
	s.worker.Resume()

	for _, id := range waiting {
		got := s.waitStatus(id, "DELIVERED", 90*time.Second)
		require.EqualValues(t, 1, got["attempts"], "%s: one attempt, the retry's", id)
		rec, _ := s.sink.Record(id)
		require.Equal(t, 1, rec.Delivered, "%s reached the provider once", id)
	}
}

// Both providers of a route answering 503: every wait before the next
// attempt shows RETRYING with its time, not PROCESSING with none.
func TestRouteWithABackupShowsRetryingWithItsTimeWhileBothFail(t *testing.T) {
	s := setupWith(t, withProviders(`
providers:
  - {name: sms-a, kind: webhook, url: "{sink}/sms-a"}
  - {name: sms-b, kind: webhook, url: "{sink}/sms-b"}
routes:
  sms: [sms-a, sms-b]
breaker:
  failureThreshold: 100
  openFor: 30s
`, "RETRY_INITIAL_INTERVAL=5s", "RETRY_MAX_INTERVAL=10s"))
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable})

	_, _, created := s.post("/v1/notifications", smsRequest("both providers fail"))
	id := created["id"].(string)
	got := s.waitStatus(id, "RETRYING", 30*time.Second)
	require.NotEmpty(t, got["nextAttemptAt"], "the wait shows its time: %v", got)
	next, err := time.Parse(time.RFC3339Nano, got["nextAttemptAt"].(string))
	require.NoError(t, err)
	require.True(t, next.After(time.Now()), "the next attempt is ahead: %v", got)
	require.GreaterOrEqual(t, got["attempts"], float64(2), "both providers were tried first")
}
