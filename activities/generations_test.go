package activities_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func generation(g int) *int { return &g }

// executeCancel runs the Cancel activity and returns the status it reports.
func executeCancel(t *testing.T, acts *activities.Activities, in workflows.CancelInput) string {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.Cancel, activity.RegisterOptions{Name: workflows.CancelActivity})
	val, err := env.ExecuteActivity(workflows.CancelActivity, in)
	require.NoError(t, err)
	var status string
	require.NoError(t, val.Get(&status))
	return status
}

// cancelThenRetry cancels a notification still waiting (QUEUED-like:
// ACCEPTED) and retries it at once, as a client may while its first run is
// still open: the row is ACCEPTED in generation 1.
func cancelThenRetry(t *testing.T, acts *activities.Activities, id uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	cancelled, _, err := store.RequestCancel(ctx, acts.Pool, id)
	require.NoError(t, err)
	require.Equal(t, notification.StatusCancelled, cancelled.Status)
	retried, _, err := store.RetryNotification(ctx, acts.Pool, id, nil)
	require.NoError(t, err)
	require.Equal(t, 1, retried.Generation)
	require.Equal(t, notification.StatusAccepted, retried.Status)
}

// requireUntouchedRetry checks the retried generation is as the retry left
// it: ACCEPTED, generation 1, no attempt, no cancel request, no dead letter.
func requireUntouchedRetry(t *testing.T, acts *activities.Activities, id uuid.UUID) {
	t.Helper()
	got := load(t, acts.Pool, id)
	require.Equal(t, notification.StatusAccepted, got.Status, "the retry stands")
	require.Equal(t, 1, got.Generation)
	require.Zero(t, got.Attempts)
	require.Nil(t, got.CancelRequestedAt)
	require.Nil(t, got.FailureReason)
	require.Empty(t, attempts(t, acts.Pool, id))
	var deadLetters int
	require.NoError(t, acts.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, id).Scan(&deadLetters))
	require.Zero(t, deadLetters)
}

func TestAttemptOfARunRetriedSinceSendsNothingAndChangesNothing(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	cancelThenRetry(t, acts, n.ID)

	for _, fast := range []bool{true, false} {
		res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy,
			Channel: string(n.Channel), FastPath: fast, Generation: generation(0)})
		require.Equal(t, workflows.OutcomeSuperseded, res.Outcome, "fast path %v", fast)
	}
	require.Zero(t, p.calls.Load(), "generation 0's run sent nothing")
	requireUntouchedRetry(t, acts, n.ID)

	// Generation 1's own run delivers.
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy,
		Channel: string(n.Channel), Generation: generation(1)})
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)
}

func TestCancelOfARunRetriedSinceLeavesTheRetryAlone(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	n := createNotification(t, acts.Pool)
	cancelThenRetry(t, acts, n.ID)

	status := executeCancel(t, acts, workflows.CancelInput{NotificationID: n.ID.String(), Generation: generation(0)})

	require.Equal(t, string(workflows.StatusSuperseded), status)
	requireUntouchedRetry(t, acts, n.ID)
}

func TestFailOfARunRetriedSinceLeavesTheRetryAlone(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	n := createNotification(t, acts.Pool)
	cancelThenRetry(t, acts, n.ID)

	status := executeFail(t, acts, workflows.FailInput{NotificationID: n.ID.String(), Channel: string(n.Channel),
		Reason: workflows.ReasonExhausted, Attempts: 3, LastError: "provider answered 503", Generation: generation(0)})

	require.Equal(t, string(workflows.StatusSuperseded), status)
	requireUntouchedRetry(t, acts, n.ID)
}

func TestRecordOfARunRetriedSinceKeepsTheAttemptButNotItsStatus(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	n := createNotification(t, acts.Pool)
	cancelThenRetry(t, acts, n.ID)

	require.NoError(t, acts.RecordAttempt(context.Background(), workflows.AttemptRecord{NotificationID: n.ID.String(), Attempt: 1,
		StartedAt: time.Now(), Outcome: workflows.OutcomeDelivered, Status: string(notification.StatusDelivered), Generation: generation(0)}))

	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusAccepted, got.Status, "the retry stands")
	require.Len(t, attempts(t, acts.Pool, n.ID), 1, "the attempt happened, and is kept")
}

// Retention may delete a CANCELLED notification whose run is still open:
// the run's activities end it instead of waiting for the row forever.
func TestRunWhoseNotificationIsGoneEnds(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	_, err := acts.Pool.Exec(context.Background(), `DELETE FROM notifications WHERE id = $1`, n.ID)
	require.NoError(t, err)

	for _, in := range []workflows.DeliverInput{
		{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)},
		{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy},
		{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel), FastPath: true, Generation: generation(0)},
	} {
		res := deliver(t, acts, in)
		require.Equal(t, workflows.OutcomeSuperseded, res.Outcome)
	}
	require.Zero(t, p.calls.Load())
	require.Equal(t, string(workflows.StatusSuperseded), executeCancel(t, acts, workflows.CancelInput{NotificationID: n.ID.String()}))
	require.Equal(t, string(workflows.StatusSuperseded), executeFail(t, acts, workflows.FailInput{NotificationID: n.ID.String(),
		Channel: string(n.Channel), Reason: workflows.ReasonExhausted}))
}

// A fast-path attempt that took the channel's slot and then found the
// provider's own limit spent sends nothing: the channel's slot goes back.
func TestFastPathRefusedByTheProvidersLimitGivesTheChannelSlotBack(t *testing.T) {
	acts := newActivities(t, "")
	routeTo(t, acts, 1, http.StatusOK)
	rdb, prefix := testenv.Redis(t)
	// Both limits 1/s with a burst of 2 (ratelimit.Limit).
	providerKey := provider.ProviderLimitKey("a")
	acts.Limiter = ratelimit.New(rdb, prefix, map[string]int{string(notification.SMS): 1, providerKey: 1})
	ctx := context.Background()
	for range 2 {
		require.True(t, acts.Limiter.TryTake(ctx, providerKey))
	}

	n := createNotification(t, acts.Pool)
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy,
		Channel: string(n.Channel), FastPath: true})
	require.Equal(t, workflows.OutcomeDeferred, res.Outcome)

	for i := range 2 {
		require.True(t, acts.Limiter.TryTake(ctx, string(notification.SMS)), "channel slot %d of the burst is still free", i+1)
	}
}

func TestDeliveredAttemptClearsTheLastError(t *testing.T) {
	status := http.StatusServiceUnavailable
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(status) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)

	deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy})
	require.NotNil(t, load(t, acts.Pool, n.ID).LastError)
	status = http.StatusOK
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 2, Retry: deliverPolicy})

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusDelivered, got.Status)
	require.Nil(t, got.LastError, "a delivered notification shows no error")
}

func TestMarkRetryingShowsTheWaitOfTheRunsGenerationOnly(t *testing.T) {
	acts := newActivities(t, "http://127.0.0.1:0/unused")
	ctx := context.Background()
	n := createNotification(t, acts.Pool)
	next := time.Now().Add(time.Minute).Truncate(time.Millisecond)

	require.NoError(t, acts.MarkRetrying(ctx, workflows.RetryingInput{NotificationID: n.ID.String(), Generation: generation(1), NextAttemptAt: next}))
	require.Equal(t, notification.StatusAccepted, load(t, acts.Pool, n.ID).Status, "another generation's wait changes nothing")

	require.NoError(t, acts.MarkRetrying(ctx, workflows.RetryingInput{NotificationID: n.ID.String(), Generation: generation(0), NextAttemptAt: next}))
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusRetrying, got.Status)
	require.NotNil(t, got.NextAttemptAt)
	require.WithinDuration(t, next, *got.NextAttemptAt, time.Millisecond)

	// A cancel requested meanwhile: the wait is not shown over it.
	_, _, err := store.RequestCancel(ctx, acts.Pool, n.ID)
	require.NoError(t, err)
	later := next.Add(time.Hour)
	require.NoError(t, acts.MarkRetrying(ctx, workflows.RetryingInput{NotificationID: n.ID.String(), Generation: generation(0), NextAttemptAt: later}))
	require.WithinDuration(t, next, *load(t, acts.Pool, n.ID).NextAttemptAt, time.Millisecond)
}
