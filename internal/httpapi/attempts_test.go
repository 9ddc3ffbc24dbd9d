package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

func TestAttemptsListTheDeliveryLogInOrder(t *testing.T) {
	f := setup(t)
	id := f.create(smsBody)
	resp, body := f.get("/v1/notifications/" + id + "/attempts")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"data":[]}`, string(body), "no attempt yet")

	ctx := context.Background()
	nid := uuid.MustParse(id)
	started := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	status503, status200 := 503, 200
	timeout, excerpt := "provider timeout", "ok"
	retryAt := time.Now().Add(time.Minute)
	require.NoError(t, store.FinishAttempt(ctx, f.pool,
		store.Attempt{NotificationID: nid, Attempt: 1, StartedAt: started, DurationMS: 1200, StatusCode: &status503,
			Outcome: "retry", Error: &timeout},
		store.Transition{Status: notification.StatusRetrying, LastError: &timeout, NextAttemptAt: &retryAt}))
	require.NoError(t, store.FinishAttempt(ctx, f.pool,
		store.Attempt{NotificationID: nid, Attempt: 2, StartedAt: started.Add(2 * time.Second), DurationMS: 40,
			StatusCode: &status200, Outcome: "delivered", ResponseExcerpt: &excerpt},
		store.Transition{Status: notification.StatusDelivered}))

	resp, body = f.get("/v1/notifications/" + id + "/attempts")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var log struct {
		Data []struct {
			Attempt         int       `json:"attempt"`
			StartedAt       time.Time `json:"startedAt"`
			DurationMS      int       `json:"durationMs"`
			StatusCode      *int      `json:"statusCode"`
			Outcome         string    `json:"outcome"`
			Error           *string   `json:"error"`
			ResponseExcerpt *string   `json:"responseExcerpt"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &log))
	require.Len(t, log.Data, 2)
	first, second := log.Data[0], log.Data[1]
	require.Equal(t, 1, first.Attempt)
	require.True(t, started.Equal(first.StartedAt), "%s != %s", started, first.StartedAt)
	require.Equal(t, 1200, first.DurationMS)
	require.Equal(t, 503, *first.StatusCode)
	require.Equal(t, "retry", first.Outcome)
	require.Equal(t, "provider timeout", *first.Error)
	require.Nil(t, first.ResponseExcerpt)
	require.Equal(t, 2, second.Attempt)
	require.Equal(t, "delivered", second.Outcome)
	require.Equal(t, "ok", *second.ResponseExcerpt)
	require.Nil(t, second.Error)
}

func TestAttemptsOfAnUnknownNotificationIs404(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	resp, body := f.get("/v1/notifications/" + id + "/attempts")
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Contains(t, p.Detail, id)
	resp, body = f.get("/v1/notifications/nope/attempts")
	requireProblem(t, resp, body, http.StatusBadRequest)
}
