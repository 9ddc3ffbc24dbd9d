package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

func (s *stack) exec(sql string, args ...any) {
	s.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.envValue("DATABASE_DSN"))
	require.NoError(s.t, err)
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(s.t, err)
}

// TestReconcilerRequeuesANotificationWhoseMessageWasLost: a notification
// was relayed (QUEUED, no outbox row) but its broker message vanished and no
// workflow exists. The reconciler puts it back on its path.
func TestReconcilerRequeuesANotificationWhoseMessageWasLost(t *testing.T) {
	s := setup(t)
	s.restartWorker("RETRY_SCAN_INTERVAL=200ms", "RECONCILE_AFTER=1s")
	id := uuid.Must(uuid.NewV7()).String()
	s.exec(`INSERT INTO notifications (id, channel, priority, recipient, content, status, created_at, updated_at)
		VALUES ($1, 'sms', 'NORMAL', '+14155550123', 'lost on the way', 'QUEUED', now() - interval '1 minute', now() - interval '1 minute')`, id)

	s.waitStatus(id, "DELIVERED", 30*time.Second)
	rec, ok := s.sink.Record(id)
	require.True(t, ok)
	require.Equal(t, 1, rec.Delivered)
}

// TestReconcilerFailsANotificationWhoseWorkflowWasTerminated: an operator
// terminated the workflow mid-delivery; the notification does not stay
// PROCESSING forever but ends FAILED with a reason, in the DLQ.
func TestReconcilerFailsANotificationWhoseWorkflowWasTerminated(t *testing.T) {
	s := setup(t)
	s.restartWorker("RETRY_SCAN_INTERVAL=200ms", "RECONCILE_AFTER=1s")
	s.sink.SetConfig(sink.Config{HangFirst: 1})
	arrivals := s.sink.Arrivals(4)

	code, _, created := s.post("/v1/notifications", smsRequest("terminated by an operator"))
	require.Equal(t, http.StatusAccepted, code)
	id := created["id"].(string)
	s.awaitArrival(arrivals)
	require.NoError(t, s.temporal.TerminateWorkflow(context.Background(), "notification-"+id, "", "operator"))

	got := s.waitStatus(id, "FAILED", 30*time.Second)
	require.Equal(t, "abandoned", got["failureReason"])
	msg := s.deadLetter("sms", id)
	require.Equal(t, "abandoned", msg.Headers["x-reason"])
	require.Equal(t, "reconciler", msg.Headers["x-source"])
}

// TestReconcilerRequeuesARetriedNotificationWhoseMessageWasLost: a retried
// notification was relayed but its message vanished; its workflow's only
// run is the earlier generation's, which ended. That run is not this
// generation's: the reconciler requeues it (it would be "abandoned" if the
// ended run were taken for its own).
func TestReconcilerRequeuesARetriedNotificationWhoseMessageWasLost(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
	_, _, created := s.post("/v1/notifications", smsRequest("retried, then lost on the way"))
	id := created["id"].(string)
	s.waitStatus(id, "FAILED", 30*time.Second)
	s.sink.SetConfig(sink.Config{})

	s.restartWorker("RETRY_SCAN_INTERVAL=200ms", "RECONCILE_AFTER=1s")
	s.exec(`UPDATE notifications SET status = 'QUEUED', generation = 1, attempt_base = attempts, failure_reason = NULL,
		updated_at = now() - interval '1 minute' WHERE id = $1`, id)

	got := s.waitStatus(id, "DELIVERED", 30*time.Second)
	require.EqualValues(t, 1, got["retries"])
	require.Len(t, s.runs("notification-"+id), 2)
}
