package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/sdk/converter"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
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

// summaries answers the summaries of the run's events (attempts, timers,
// bookkeeping), in order.
func (s *stack) summaries(id string) []string {
	s.t.Helper()
	var out []string
	iter := s.temporal.GetWorkflowHistory(context.Background(), "notification-"+id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(s.t, err)
		if p := ev.GetUserMetadata().GetSummary(); p != nil {
			var summary string
			require.NoError(s.t, converter.GetDefaultDataConverter().FromPayload(p, &summary))
			out = append(out, summary)
		}
	}
	return out
}

// currentDetails answers the run's current details, as the Web UI reads them.
func (s *stack) currentDetails(id string) string {
	s.t.Helper()
	v, err := s.temporal.QueryWorkflow(context.Background(), "notification-"+id, "", "__temporal_workflow_metadata")
	require.NoError(s.t, err)
	var md sdkpb.WorkflowMetadata
	require.NoError(s.t, v.Get(&md))
	return md.GetCurrentDetails()
}

// The operator sees why without opening events: each attempt and wait is
// labelled, and the run's current details list the attempts with their
// provider and outcome.
func TestAttemptsAndWaitsCarrySummaries(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailFirst: 2, FailStatus: http.StatusServiceUnavailable})
	_, _, created := s.post("/v1/notifications", smsRequest("third time lucky"))
	id := created["id"].(string)
	s.waitStatus(id, "DELIVERED", 30*time.Second)
	s.closedRun(id)

	summaries := s.summaries(id)
	var attempts, backoffs []string
	for _, sm := range summaries {
		switch {
		case strings.HasPrefix(sm, "attempt "):
			attempts = append(attempts, sm)
		case strings.HasPrefix(sm, "backoff "):
			backoffs = append(backoffs, sm)
		}
	}
	require.Len(t, attempts, 3, "summaries: %q", summaries)
	for i, sm := range attempts {
		require.Contains(t, sm, "attempt "+strconv.Itoa(i+1))
	}
	require.Len(t, backoffs, 2, "summaries: %q", summaries)
	require.Contains(t, backoffs[0], "before attempt 2")
	require.Contains(t, backoffs[1], "before attempt 3")

	desc, err := s.temporal.DescribeWorkflow(context.Background(), "notification-"+id, "")
	require.NoError(t, err)
	var static string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(desc.RawResponse.GetExecutionConfig().GetUserMetadata().GetSummary(), &static))
	require.Equal(t, "sms notification (HIGH) of tenant default", static, "the start's summary: channel, priority, tenant")

	details := s.currentDetails(id)
	require.Contains(t, details, "**DELIVERED** · 3 attempt(s)")
	require.Contains(t, details, "- attempt 1 · default · retry (503)")
	require.Contains(t, details, "- attempt 3 · default · delivered (200)")
	require.NotContains(t, details, "third time lucky", "no message text in the details")
	require.NotContains(t, details, smsRequest("")["recipient"].(string), "no recipient in the details")
}
