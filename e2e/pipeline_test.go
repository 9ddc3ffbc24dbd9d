package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

func smsRequest(content string) map[string]any {
	return map[string]any{"channel": "sms", "recipient": "+14155550123", "content": content, "priority": "HIGH"}
}

// smsNotification is smsRequest for the Go client.
func smsNotification(content string) dispatch.CreateNotification {
	high := dispatch.PriorityHIGH
	return dispatch.CreateNotification{Channel: dispatch.ChannelSms, Recipient: "+14155550123", Content: content, Priority: &high}
}

func TestNotificationTravelsTheWholePipeline(t *testing.T) {
	s := setup(t)

	// The generated client underneath, for the status and the headers.
	r, err := s.client.Raw().CreateNotificationWithResponse(t.Context(), nil, smsNotification("your code is 1234"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.StatusCode(), "body: %s", r.Body)
	created := r.JSON202
	require.NotNil(t, created)
	id := created.ID.String()
	require.Equal(t, "/v1/notifications/"+id, r.Headers202.Location)
	require.NotEmpty(t, r.Headers202.XRequestID)
	require.Equal(t, dispatch.ChannelSms, created.Channel)
	require.Equal(t, dispatch.PriorityHIGH, created.Priority)
	require.Equal(t, "your code is 1234", created.Content)
	require.Contains(t, []dispatch.Status{dispatch.StatusACCEPTED, dispatch.StatusQUEUED}, created.Status)
	require.Equal(t, "notification-"+id, created.WorkflowID)

	// The provider receives the notification as JSON with webhook-id = id.
	require.Eventually(t, func() bool {
		rec, ok := s.sink.Record(id)
		return ok && rec.Delivered == 1
	}, 30*time.Second, 20*time.Millisecond, "the sink never received %s", id)
	rec, _ := s.sink.Record(id)
	require.Equal(t, id, rec.Headers.Get("webhook-id"))
	require.Equal(t, "application/json", rec.Headers.Get("Content-Type"))
	var payload map[string]any
	require.NoError(t, json.Unmarshal(rec.Body, &payload))
	require.Equal(t, id, payload["id"])
	require.Equal(t, "+14155550123", payload["recipient"])
	require.Equal(t, "your code is 1234", payload["content"])

	got := s.waitTerminal(created.ID, 10*time.Second)
	require.Equal(t, dispatch.StatusDELIVERED, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.NotNil(t, got.DeliveredAt)
	attempts, err := s.client.Attempts(t.Context(), created.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 1)
	require.Equal(t, "delivered", attempts[0].Outcome)

	// Temporal shows the workflow completed (just after the activity marked
	// the row DELIVERED), with the search attributes set.
	var info *workflowpb.WorkflowExecutionInfo
	require.Eventually(t, func() bool {
		desc, err := s.temporal.DescribeWorkflow(context.Background(), "notification-"+id, "")
		require.NoError(t, err)
		info = desc.RawResponse.GetWorkflowExecutionInfo()
		return info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED
	}, 10*time.Second, 20*time.Millisecond, "workflow never completed")
	fields := info.GetSearchAttributes().GetIndexedFields()
	require.JSONEq(t, `"DELIVERED"`, string(fields["NotificationStatus"].GetData()))
	require.JSONEq(t, `"sms"`, string(fields["NotificationChannel"].GetData()))
}

func TestNotificationAcceptedWhileWorkerIsDownIsDeliveredOnceItStarts(t *testing.T) {
	s := setup(t)
	s.worker.Kill()

	code, _, created := s.post("/v1/notifications", smsRequest("held in the outbox"))
	require.Equal(t, http.StatusAccepted, code)
	id := created["id"].(string)

	s.worker = s.start("worker")
	s.waitStatus(id, "DELIVERED", 30*time.Second)
	rec, ok := s.sink.Record(id)
	require.True(t, ok)
	require.Equal(t, 1, rec.Delivered, "delivered exactly once")
	require.Equal(t, 1, rec.Requests)
}

func TestWorkerKilledDuringDeliveryStillDeliversExactlyOnce(t *testing.T) {
	s := setup(t)
	// The provider holds the first request open, so the worker is certainly
	// mid-delivery when it dies.
	s.sink.SetConfig(sink.Config{HangFirst: 1})
	arrivals := s.sink.Arrivals(16)

	code, _, created := s.post("/v1/notifications", smsRequest("survives a crash"))
	require.Equal(t, http.StatusAccepted, code)
	id := created["id"].(string)

	select {
	case got := <-arrivals:
		require.Equal(t, id, got)
	case <-time.After(30 * time.Second):
		t.Fatal("the first attempt never reached the sink")
	}
	s.worker.Kill()
	s.worker = s.start("worker")

	got := s.waitStatus(id, "DELIVERED", 60*time.Second)
	rec, _ := s.sink.Record(id)
	require.Equal(t, 1, rec.Delivered, "answered 2xx exactly once")
	require.Equal(t, 2, rec.Requests, "the hung attempt and the retry")
	require.Equal(t, id, rec.Headers.Get("webhook-id"), "the retry carries the same webhook-id")
	require.EqualValues(t, 2, got["attempts"])
}
