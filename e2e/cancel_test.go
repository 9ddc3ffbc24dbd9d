package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

func TestCancelDuringBackoffStopsFurtherAttempts(t *testing.T) {
	s := setup(t)
	// Every attempt fails and asks for a long pause: the workflow sits in its
	// backoff timer when the cancel arrives.
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable, RetryAfter: time.Hour})

	_, _, created := s.post("/v1/notifications", smsRequest("cancel me while waiting"))
	id := created["id"].(string)
	waiting := s.waitStatus(id, "RETRYING", 30*time.Second)
	require.NotEmpty(t, waiting["nextAttemptAt"])

	code, _, body := s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, code, "body: %v", body)
	got := s.waitStatus(id, "CANCELLED", 15*time.Second)
	require.EqualValues(t, 1, got["attempts"])
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests, "no attempt after the cancel")

	code, _, body = s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(t, http.StatusOK, code, "cancelling a cancelled notification again is fine: %v", body)
}

func TestCancelDuringProviderCallAbortsIt(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{HangFirst: 1})
	id := s.cancelInFlight("cancel me mid-call")
	s.waitStatus(id, "CANCELLED", 15*time.Second)
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Requests)
	require.Zero(t, rec.Delivered, "the hung call was aborted, not answered")
	log := s.attempts(id)
	require.Len(t, log, 1)
	require.Equal(t, "cancelled", log[0].Outcome)
}

func TestCancelBeforeTheWorkflowStartsWins(t *testing.T) {
	s := setup(t)
	s.worker.Kill()

	_, _, created := s.post("/v1/notifications", smsRequest("cancelled while queued"))
	id := created["id"].(string)
	code, _, body := s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, code, "body: %v", body)
	require.Equal(t, "CANCELLED", body["status"])

	s.worker = s.start("worker")
	// A later notification is delivered, so the worker has drained the
	// queue past the cancelled one.
	_, _, later := s.post("/v1/notifications", smsRequest("after"))
	s.waitStatus(later["id"].(string), "DELIVERED", 30*time.Second)
	_, ok := s.sink.Record(id)
	require.False(t, ok, "a notification cancelled before its workflow ran never reaches the provider")
	_, got := s.get("/v1/notifications/" + id)
	require.Equal(t, "CANCELLED", got["status"])
}

func TestCancellingADeliveredNotificationIsAConflict(t *testing.T) {
	s := setup(t)
	_, _, created := s.post("/v1/notifications", smsRequest("too late to cancel"))
	id := created["id"].(string)
	s.waitStatus(id, "DELIVERED", 30*time.Second)

	code, hdr, body := s.post("/v1/notifications/"+id+"/cancel", nil)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "application/problem+json", hdr.Get("Content-Type"))
	require.NotEmpty(t, body["type"])
}
