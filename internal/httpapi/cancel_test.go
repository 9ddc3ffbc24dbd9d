package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

type cancelled struct {
	ID                string     `json:"id"`
	Status            string     `json:"status"`
	CancelRequestedAt *time.Time `json:"cancelRequestedAt"`
}

func (f *fixture) cancel(id string) (*http.Response, cancelled) {
	f.t.Helper()
	resp, body := f.do(http.MethodPost, "/v1/notifications/"+id+"/cancel", nil)
	var c cancelled
	if resp.StatusCode < 300 {
		require.NoError(f.t, json.Unmarshal(body, &c), "body: %s", body)
	}
	return resp, c
}

func (f *fixture) setStatus(id string, status notification.Status) {
	f.t.Helper()
	_, err := f.pool.Exec(context.Background(), `UPDATE notifications SET status = $2 WHERE id = $1`, id, status)
	require.NoError(f.t, err)
}

func (f *fixture) stored(id string) store.Notification {
	f.t.Helper()
	n, err := store.GetNotification(context.Background(), f.pool, uuid.MustParse(id))
	require.NoError(f.t, err)
	return n
}

func TestCancelBeforeDeliveryStartsCancelsAtOnceAndSignalsTheWorkflow(t *testing.T) {
	for _, status := range []notification.Status{notification.StatusAccepted, notification.StatusQueued} {
		t.Run(string(status), func(t *testing.T) {
			f := setup(t)
			id := f.create(smsBody)
			f.setStatus(id, status)

			resp, got := f.cancel(id)
			require.Equal(t, http.StatusAccepted, resp.StatusCode)
			require.Equal(t, "CANCELLED", got.Status)
			require.NotNil(t, got.CancelRequestedAt)

			n := f.stored(id)
			require.Equal(t, notification.StatusCancelled, n.Status)
			require.NotNil(t, n.CancelRequestedAt)
			require.Equal(t, []signalCall{{WorkflowID: "notification-" + id, RunID: "", Name: "cancel", Arg: nil}}, f.signals.Calls())
		})
	}
}

func TestCancelWhileTheWorkflowRunsFlagsTheRowAndSignals(t *testing.T) {
	for _, status := range []notification.Status{notification.StatusScheduled, notification.StatusProcessing, notification.StatusRetrying} {
		t.Run(string(status), func(t *testing.T) {
			f := setup(t)
			id := f.create(smsBody)
			f.setStatus(id, status)

			resp, got := f.cancel(id)
			require.Equal(t, http.StatusAccepted, resp.StatusCode)
			require.Equal(t, string(status), got.Status, "the workflow moves it to CANCELLED")
			require.NotNil(t, got.CancelRequestedAt)
			require.NotNil(t, f.stored(id).CancelRequestedAt)
			require.Len(t, f.signals.Calls(), 1)

			// Asking again keeps the first request's time and signals again.
			resp, again := f.cancel(id)
			require.Equal(t, http.StatusAccepted, resp.StatusCode)
			require.True(t, got.CancelRequestedAt.Equal(*again.CancelRequestedAt))
			require.Len(t, f.signals.Calls(), 2)
		})
	}
}

func TestCancelOfACancelledNotificationIs200AndSendsNoSignal(t *testing.T) {
	f := setup(t)
	id := f.create(smsBody)
	resp, first := f.cancel(id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	resp, again := f.cancel(id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "CANCELLED", again.Status)
	require.Equal(t, first.CancelRequestedAt, again.CancelRequestedAt)
	require.Len(t, f.signals.Calls(), 1, "only the first cancel signals")
}

func TestCancelOfADeliveredOrFailedNotificationIs409(t *testing.T) {
	for _, status := range []notification.Status{notification.StatusDelivered, notification.StatusFailed} {
		t.Run(string(status), func(t *testing.T) {
			f := setup(t)
			id := f.create(smsBody)
			f.setStatus(id, status)

			resp, body := f.do(http.MethodPost, "/v1/notifications/"+id+"/cancel", nil)
			p := requireProblem(t, resp, body, http.StatusConflict)
			require.Equal(t, "/problems/not-cancellable", p.Type)
			require.Contains(t, p.Detail, string(status))

			n := f.stored(id)
			require.Equal(t, status, n.Status)
			require.Nil(t, n.CancelRequestedAt, "a terminal notification is left as it is")
			require.Empty(t, f.signals.Calls())
		})
	}
}

func TestCancelOfAnUnknownNotificationIs404AndOfAMalformedIdIs400(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	resp, body := f.do(http.MethodPost, "/v1/notifications/"+id+"/cancel", nil)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Contains(t, p.Detail, id)

	resp, body = f.do(http.MethodPost, "/v1/notifications/12345/cancel", nil)
	p = requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"id"}, fieldNames(p))
	require.Empty(t, f.signals.Calls())
}

func TestCancelBeforeTheWorkflowExistsIsNoError(t *testing.T) {
	rec := &signalRecorder{err: serviceerror.NewNotFound("workflow not found")}
	f := setup(t, withSignaler(rec))
	id := f.create(smsBody)
	f.setStatus(id, notification.StatusScheduled)

	resp, got := f.cancel(id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.NotNil(t, got.CancelRequestedAt)
	require.Zero(t, f.logs.FilterMessageSnippet("cancel signal").Len(), "a workflow not started yet is expected: %v", f.logs.All())
}

func TestCancelIs202AndLoggedWhenTheSignalFails(t *testing.T) {
	rec := &signalRecorder{err: errors.New("temporal unavailable")}
	f := setup(t, withSignaler(rec))
	id := f.create(smsBody)
	f.setStatus(id, notification.StatusProcessing)

	resp, got := f.cancel(id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the row's flag holds the cancel")
	require.NotNil(t, got.CancelRequestedAt)
	logged := f.logs.FilterMessageSnippet("cancel signal not delivered").All()
	require.Len(t, logged, 1)
	require.Equal(t, id, logged[0].ContextMap()["notification_id"])
	require.Equal(t, "notification-"+id, logged[0].ContextMap()["workflow_id"])
}

func TestCancelBeforeAnyAttemptIsCountedAsCancelled(t *testing.T) {
	f := setup(t)
	id := f.create(smsBody) // ACCEPTED: the API cancels it itself

	resp, got := f.cancel(id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, notification.StatusCancelled, notification.Status(got.Status))

	resp, body := f.get("/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Regexp(t, `dispatch_notifications_terminal_total\{[^}]*status="cancelled"[^}]*\} 1\n`, string(body))
}
