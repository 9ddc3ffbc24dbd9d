package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"dispatch-engine/internal/sink"
)

// closedRun waits until the notification's current run is closed and
// answers its status and closing event's failure type (empty unless it
// failed).
func (s *stack) closedRun(id string) (enumspb.WorkflowExecutionStatus, string) {
	s.t.Helper()
	var status enumspb.WorkflowExecutionStatus
	require.Eventually(s.t, func() bool {
		desc, err := s.temporal.DescribeWorkflow(context.Background(), "notification-"+id, "")
		require.NoError(s.t, err)
		status = desc.RawResponse.GetWorkflowExecutionInfo().GetStatus()
		return status != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 30*time.Second, 20*time.Millisecond, "the run never closed")
	iter := s.temporal.GetWorkflowHistory(context.Background(), "notification-"+id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	require.True(s.t, iter.HasNext())
	ev, err := iter.Next()
	require.NoError(s.t, err)
	return status, ev.GetWorkflowExecutionFailedEventAttributes().GetFailure().GetApplicationFailureInfo().GetType()
}

// The Temporal UI's badge, its status filter and ExecutionStatus queries
// tell the truth: a FAILED notification's run is Failed, with the reason as
// the failure's type; a CANCELLED one's is Canceled; a retry of either is a
// new run of the same id.
func TestTheRunEndsAsItsNotification(t *testing.T) {
	s := setup(t)

	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusBadRequest})
	_, _, created := s.post("/v1/notifications", smsRequest("the provider refuses this"))
	failed := created["id"].(string)
	s.waitStatus(failed, "FAILED", 30*time.Second)
	status, reason := s.closedRun(failed)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_FAILED, status)
	require.Equal(t, "permanent", reason)

	s.sink.SetConfig(sink.Config{FailRate: 1, FailStatus: http.StatusServiceUnavailable, RetryAfter: time.Hour})
	_, _, created = s.post("/v1/notifications", smsRequest("cancel me while waiting"))
	cancelled := created["id"].(string)
	s.waitStatus(cancelled, "RETRYING", 30*time.Second)
	code, _, body := s.post("/v1/notifications/"+cancelled+"/cancel", nil)
	require.Equal(t, http.StatusAccepted, code, "body: %v", body)
	s.waitStatus(cancelled, "CANCELLED", 15*time.Second)
	status, _ = s.closedRun(cancelled)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED, status)

	// Retried, each is delivered by a new run of its id, which completes.
	s.sink.SetConfig(sink.Config{})
	for _, id := range []string{failed, cancelled} {
		code, _, body := s.post("/v1/notifications/"+id+"/retry", nil)
		require.Equal(t, http.StatusAccepted, code, "body: %v", body)
		s.waitStatus(id, "DELIVERED", 30*time.Second)
		status, _ := s.closedRun(id)
		require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, status)
		require.Len(t, s.runs("notification-"+id), 2)
	}
}
