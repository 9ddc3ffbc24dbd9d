package workflows_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// heldFor is a Deliver answer that holds the notification for d past the
// test's start, deferred by by.
func heldFor(d time.Duration, by string) deliverStep {
	until := testStart.Add(d)
	return deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeHeld, HeldUntil: &until, DeferredBy: by,
		HoldSummary: by + " until " + until.Format(time.TimeOnly)}}
}

func TestAHeldNotificationWaitsUntilItsHoldEndsThenMakesTheSameAttemptOnTheFastPath(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, heldFor(7*time.Hour, "quiet-hours"), delivered())
	in := testInput(testPolicy)
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 1}, attemptNumbers(ins), "a hold spends no attempt")
	require.Equal(t, testStart.Add(7*time.Hour), at[1].UTC(), "the attempt is made again when the hold ends")
	require.True(t, ins[1].FastPath, "the attempt after a hold goes on the fast path")
	require.Empty(t, f.failCalls())
}

func TestAWakeEndsAHoldAtOnce(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, heldFor(5*time.Minute, "ordering"), delivered())
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.WakeSignal, nil) }, 10*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, "DELIVERED", string(res.Status))
	_, at := f.deliverCalls()
	require.Len(t, at, 2)
	require.Equal(t, testStart.Add(10*time.Second), at[1].UTC(), "the wake, not the hold's end, brought the next attempt")
}

func TestACancelDuringAHoldCancelsWithoutASend(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, heldFor(time.Hour, "throttle"), delivered())
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Minute)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "CANCELLED", Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1, "no attempt after the cancel")
}

func TestAHoldPastExpiresAtFailsTheNotificationExpiredWithoutASend(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, heldFor(7*time.Hour, "quiet-hours"), delivered())
	in := testInput(testPolicy)
	expires := testStart.Add(time.Hour)
	in.ExpiresAt = &expires

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, workflows.ReasonExpired, fails[0].Reason)
}

func TestAnOrderingHoldPastExpiresAtWaitsUntilExpiresAtForAWake(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, heldFor(5*time.Minute, "ordering"), delivered())
	in := testInput(testPolicy)
	expires := testStart.Add(time.Minute)
	in.ExpiresAt = &expires

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1, "nothing is sent once it expired")
	require.Equal(t, expires, env.Now().UTC(), "it waited for the one ahead until it expired, no longer")
	require.Equal(t, workflows.ReasonExpired, f.failCalls()[0].Reason)
}

func TestAnOrderedNotificationWakesTheNextOneWhenItEnds(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	var released []workflows.ReleaseInput
	env.RegisterActivityWithOptions(func(_ context.Context, in workflows.ReleaseInput) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		released = append(released, in)
		return nil
	}, activity.RegisterOptions{Name: workflows.ReleaseOrderingActivity})
	in := testInput(testPolicy)
	in.Ordered = true

	res := run(t, env, in)

	require.Equal(t, "DELIVERED", string(res.Status))
	require.Equal(t, []workflows.ReleaseInput{{NotificationID: testNotificationID}}, released)
}

func TestADigestsMessageEndsItsMembersWhenItEnds(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	var settled []workflows.ReleaseInput
	env.RegisterActivityWithOptions(func(_ context.Context, in workflows.ReleaseInput) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		settled = append(settled, in)
		return nil
	}, activity.RegisterOptions{Name: workflows.SettleDigestActivity})
	in := testInput(testPolicy)
	in.DigestMessage = true

	run(t, env, in)

	require.Equal(t, []workflows.ReleaseInput{{NotificationID: testNotificationID}}, settled)
}

// digestEnv runs the Digest workflow with a FlushDigest answering items,
// and answers when each flush was made.
func digestEnv(t *testing.T, items int) (*testsuite.TestWorkflowEnvironment, *[]time.Time) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetStartTime(testStart)
	env.RegisterWorkflowWithOptions(workflows.Digest, workflow.RegisterOptions{Name: workflows.DigestWorkflow})
	var flushed []time.Time
	env.RegisterActivityWithOptions(func(_ context.Context, in workflows.DigestInput) (workflows.DigestFlushResult, error) {
		flushed = append(flushed, env.Now().UTC())
		return workflows.DigestFlushResult{Items: items}, nil
	}, activity.RegisterOptions{Name: workflows.FlushDigestActivity})
	return env, &flushed
}

func TestADigestFlushesWhenItsWindowCloses(t *testing.T) {
	t.Parallel()
	env, flushed := digestEnv(t, 5)

	env.ExecuteWorkflow(workflows.DigestWorkflow, workflows.DigestInput{DigestID: testNotificationID, ClosesAt: testStart.Add(10 * time.Minute)})

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []time.Time{testStart.Add(10 * time.Minute)}, *flushed)
	var res workflows.DigestFlushResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, 5, res.Items)
}

func TestAFullDigestFlushesOnItsSignal(t *testing.T) {
	t.Parallel()
	env, flushed := digestEnv(t, 50)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.DigestFlushSignal, nil) }, time.Minute)

	env.ExecuteWorkflow(workflows.DigestWorkflow, workflows.DigestInput{DigestID: testNotificationID, ClosesAt: testStart.Add(10 * time.Minute)})

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, []time.Time{testStart.Add(time.Minute)}, *flushed, "the filling member's signal flushed it before the close")
}
