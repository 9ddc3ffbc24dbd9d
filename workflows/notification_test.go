package workflows_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const (
	testNotificationID = "0b9d7c1e-5f44-4a8e-9a7e-2f1c3d4e5f60"
	testWorkflowID     = "notification-" + testNotificationID
)

var testStart = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)

var testPolicy = workflows.RetryPolicy{
	MaxAttempts:        5,
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaxInterval:        time.Minute,
}

func testInput(p workflows.RetryPolicy) workflows.NotificationInput {
	return workflows.NotificationInput{
		NotificationID:    testNotificationID,
		Channel:           "sms",
		Priority:          "NORMAL",
		ActivityTaskQueue: "deliver-sms",
		Retry:             p,
		AttemptTimeout:    30 * time.Second,
	}
}

// deliverStep is what one fake Deliver call answers.
type deliverStep struct {
	res workflows.DeliverResult
	err error
}

// fakes stands in for the Deliver and Fail activities: Deliver answers the
// scripted steps in order (repeating the last one), and both record what
// they were called with and when (in the environment's virtual time).
type fakes struct {
	env   *testsuite.TestWorkflowEnvironment
	steps []deliverStep

	// block makes Deliver wait for its cancellation instead of answering.
	block bool

	mu        sync.Mutex
	cancelIn  []workflows.CancelInput
	cancelAt  []time.Time
	aborted   bool
	deliverIn []workflows.DeliverInput
	local     []bool
	deliverAt []time.Time
	failIn    []workflows.FailInput
	recorded  []workflows.AttemptRecord
	// marked are the MarkRetrying calls, and when they were made.
	marked   []workflows.RetryingInput
	markedAt []time.Time
	// bookLocal says, per Fail or Cancel call, whether it ran as a local
	// activity.
	bookLocal []bool
}

func (f *fakes) deliver(ctx context.Context, in workflows.DeliverInput) (workflows.DeliverResult, error) {
	if f.block {
		f.mu.Lock()
		f.deliverIn = append(f.deliverIn, in)
		f.mu.Unlock()
		// Like the real activity, heartbeat while the call is in flight: a
		// cancel reaches an activity on a heartbeat.
		for ctx.Err() == nil {
			activity.RecordHeartbeat(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
		f.mu.Lock()
		f.aborted = true
		f.mu.Unlock()
		return workflows.DeliverResult{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deliverIn = append(f.deliverIn, in)
	f.deliverAt = append(f.deliverAt, f.env.Now())
	f.local = append(f.local, activity.GetInfo(ctx).IsLocalActivity)
	step := f.steps[min(len(f.deliverIn), len(f.steps))-1]
	return step.res, step.err
}

func (f *fakes) fail(ctx context.Context, in workflows.FailInput) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failIn = append(f.failIn, in)
	f.bookLocal = append(f.bookLocal, activity.GetInfo(ctx).IsLocalActivity)
	return "FAILED", nil
}

func (f *fakes) record(_ context.Context, r workflows.AttemptRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recorded = append(f.recorded, r)
	return nil
}

func (f *fakes) markRetrying(_ context.Context, in workflows.RetryingInput) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marked = append(f.marked, in)
	f.markedAt = append(f.markedAt, f.env.Now())
	return nil
}

func (f *fakes) markedCalls() ([]workflows.RetryingInput, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workflows.RetryingInput(nil), f.marked...), append([]time.Time(nil), f.markedAt...)
}

func (f *fakes) cancel(ctx context.Context, in workflows.CancelInput) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelIn = append(f.cancelIn, in)
	f.bookLocal = append(f.bookLocal, activity.GetInfo(ctx).IsLocalActivity)
	f.cancelAt = append(f.cancelAt, f.env.Now())
	return "CANCELLED", nil
}

func (f *fakes) deliverCalls() ([]workflows.DeliverInput, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workflows.DeliverInput(nil), f.deliverIn...), append([]time.Time(nil), f.deliverAt...)
}

func (f *fakes) failCalls() []workflows.FailInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workflows.FailInput(nil), f.failIn...)
}

// newEnv returns a test environment running the Notification workflow under
// testWorkflowID with fake activities answering steps.
func newEnv(t *testing.T, steps ...deliverStep) (*testsuite.TestWorkflowEnvironment, *fakes) {
	t.Helper()
	require.NotEmpty(t, steps)
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: testWorkflowID})
	env.RegisterWorkflowWithOptions(workflows.Notification, workflow.RegisterOptions{Name: workflows.NotificationWorkflow})
	f := &fakes{env: env, steps: steps}
	env.RegisterActivityWithOptions(f.deliver, activity.RegisterOptions{Name: workflows.DeliverActivity})
	env.RegisterActivityWithOptions(f.fail, activity.RegisterOptions{Name: workflows.FailActivity})
	env.RegisterActivityWithOptions(f.cancel, activity.RegisterOptions{Name: workflows.CancelActivity})
	env.RegisterActivityWithOptions(f.record, activity.RegisterOptions{Name: workflows.RecordAttemptActivity})
	env.RegisterActivityWithOptions(f.markRetrying, activity.RegisterOptions{Name: workflows.MarkRetryingActivity})
	env.SetStartTime(testStart)
	return env, f
}

// run executes the workflow to completion and returns its result, checking
// that the run ended as its notification did: a FAILED one's run failed
// (with the reason as the error's type), a CANCELLED one's was canceled,
// any other completed.
func run(t *testing.T, env *testsuite.TestWorkflowEnvironment, in workflows.NotificationInput) workflows.NotificationResult {
	t.Helper()
	env.ExecuteWorkflow(workflows.NotificationWorkflow, in)
	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	if err == nil {
		var res workflows.NotificationResult
		require.NoError(t, env.GetWorkflowResult(&res))
		require.NotContains(t, []workflows.Status{workflows.StatusFailed, workflows.StatusCancelled}, res.Status,
			"a run whose notification ended %s completed", res.Status)
		return res
	}
	res, ok := workflows.ResultOfError(err)
	require.True(t, ok, "the run ended with an error that carries no result: %v", err)
	var appErr *temporal.ApplicationError
	var canceled *temporal.CanceledError
	switch res.Status {
	case workflows.StatusFailed:
		require.ErrorAs(t, err, &appErr, "a FAILED notification's run fails with an application error")
		require.True(t, appErr.NonRetryable())
		require.NotEmpty(t, appErr.Type())
	case workflows.StatusCancelled:
		require.ErrorAs(t, err, &canceled, "a CANCELLED notification's run is canceled")
	default:
		t.Fatalf("a run whose notification ended %s ended with an error: %v", res.Status, err)
	}
	return res
}

// failedWith returns the type of the application error the run failed with.
func failedWith(t *testing.T, env *testsuite.TestWorkflowEnvironment) string {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, env.GetWorkflowError(), &appErr)
	return appErr.Type()
}

func delivered() deliverStep {
	return deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200}}
}

func retry(code int, retryAfter time.Duration) deliverStep {
	return deliverStep{res: workflows.DeliverResult{
		Outcome: workflows.OutcomeRetry, StatusCode: code, RetryAfter: retryAfter, Error: "provider answered 503",
	}}
}

func gen(g int) *int { return &g }

func attemptNumbers(ins []workflows.DeliverInput) []int {
	n := make([]int, len(ins))
	for i, in := range ins {
		n[i] = in.Attempt
	}
	return n
}

func TestDeliveredOnFirstAttempt(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	env.OnUpsertTypedSearchAttributes(temporal.NewSearchAttributes(
		workflows.SearchStatus.ValueSet("DELIVERED"),
		workflows.SearchAttempts.ValueSet(1),
	)).Return(nil).Once()

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Equal(t, workflows.DeliverInput{NotificationID: testNotificationID, Attempt: 1, Retry: testPolicy, Channel: "sms", Generation: gen(0)}, ins[0])
	require.Empty(t, f.failCalls())
	env.AssertExpectations(t)
}

func TestRetriesThenDelivers(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, retry(503, 0), retry(503, 0), delivered())

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 3}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 2, 3}, attemptNumbers(ins))
	for n := 1; n < len(at); n++ {
		want := workflows.Backoff(testWorkflowID, n, testPolicy, 0)
		require.Equal(t, want, at[n].Sub(at[n-1]), "wait after attempt %d", n)
	}
	require.Empty(t, f.failCalls())
}

func TestRetryAfterFromProviderIsHonoured(t *testing.T) {
	t.Parallel()
	const retryAfter = 45 * time.Second
	require.Greater(t, retryAfter, workflows.Backoff(testWorkflowID, 1, testPolicy, 0), "the test needs Retry-After to exceed the backoff")
	env, f := newEnv(t, retry(429, retryAfter), delivered())

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 2}, attemptNumbers(ins))
	require.GreaterOrEqual(t, at[1].Sub(at[0]), retryAfter)
}

func TestPermanentFailureGoesToFailWithoutRetry(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{
		Outcome: workflows.OutcomePermanent, StatusCode: 422, Error: "provider answered 422",
	}})
	env.OnUpsertTypedSearchAttributes(temporal.NewSearchAttributes(
		workflows.SearchStatus.ValueSet("FAILED"),
		workflows.SearchAttempts.ValueSet(1),
	)).Return(nil).Once()

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 1}, res)
	require.Equal(t, workflows.ReasonPermanent, failedWith(t, env), "the run fails with the reason as its type")
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Equal(t, []workflows.FailInput{{
		NotificationID: testNotificationID,
		Channel:        "sms",
		Reason:         workflows.ReasonPermanent,
		Attempts:       1,
		LastStatusCode: 422,
		LastError:      "provider answered 422",
		Generation:     gen(0),
	}}, f.failCalls())
	env.AssertExpectations(t)
}

func TestExhaustedAttemptsGoToFail(t *testing.T) {
	t.Parallel()
	p := testPolicy
	p.MaxAttempts = 3
	env, f := newEnv(t, retry(503, 0))

	res := run(t, env, testInput(p))

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 3}, res)
	require.Equal(t, workflows.ReasonExhausted, failedWith(t, env), "the run fails with the reason as its type")
	ins, _ := f.deliverCalls()
	require.Equal(t, []int{1, 2, 3}, attemptNumbers(ins))
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, workflows.ReasonExhausted, fails[0].Reason)
	require.Equal(t, 3, fails[0].Attempts)
	require.Equal(t, 503, fails[0].LastStatusCode)
	require.Equal(t, "sms", fails[0].Channel)
}

func TestActivityErrorCountsAsFailedAttempt(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{err: errors.New("database unreachable")}, delivered())

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, at := f.deliverCalls()
	// Two executions, not an activity retry: attempt numbers advance and the
	// workflow's backoff separates them.
	require.Equal(t, []int{1, 2}, attemptNumbers(ins))
	require.Equal(t, workflows.Backoff(testWorkflowID, 1, testPolicy, 0), at[1].Sub(at[0]))
	require.Empty(t, f.failCalls())
}

func notAttempted() deliverStep {
	return deliverStep{err: temporal.NewApplicationError("not attempted: redis unreachable", workflows.ErrNotAttempted)}
}

func TestAttemptThatCouldNotBeginIsMadeAgainWithoutCounting(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, notAttempted(), notAttempted(), notAttempted(), delivered())

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 1, 1, 1}, attemptNumbers(ins), "the same attempt, made again")
	for n := 1; n < len(at); n++ {
		require.Equal(t, workflows.Backoff(testWorkflowID, n, testPolicy, 0), at[n].Sub(at[n-1]), "wait after try %d", n)
	}
	require.Empty(t, f.failCalls())
}

func TestOutageLongerThanEveryAttemptDoesNotFail(t *testing.T) {
	t.Parallel()
	steps := make([]deliverStep, 0, 3*testPolicy.MaxAttempts+1)
	for range 3 * testPolicy.MaxAttempts {
		steps = append(steps, notAttempted())
	}
	env, f := newEnv(t, append(steps, delivered())...)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, at := f.deliverCalls()
	require.Len(t, ins, 3*testPolicy.MaxAttempts+1)
	for n := 1; n < len(at); n++ {
		require.LessOrEqual(t, at[n].Sub(at[n-1]), 30*time.Second, "the wait is capped")
	}
	require.Empty(t, f.failCalls())
}

func TestFastPathAttemptThatCouldNotBeginRetriesThroughTheTaskQueue(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, notAttempted(), delivered())
	in := testInput(testPolicy)
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Equal(t, []bool{true, false}, f.local)
	require.False(t, ins[1].FastPath, "only the first try is the fast path's")
}

func TestCancelWhileAnAttemptCannotBeginStops(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, notAttempted())
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, 10*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusCancelled, res.Status)
	require.Equal(t, 0, res.Attempts)
	require.Empty(t, f.failCalls())
}

func TestAlreadyTerminalNotificationIsSkipped(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: "CANCELLED"}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusCancelled, res.Status)
	require.Equal(t, 0, res.Attempts, "a skipped attempt sent nothing")
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Empty(t, f.failCalls())
}

func TestCancelDuringBackoffStopsRetries(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, retry(503, time.Hour))
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, 10*time.Minute)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "CANCELLED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1, "no attempt after the cancel")
	require.Len(t, f.cancelIn, 1)
	require.Equal(t, workflows.CancelInput{NotificationID: testNotificationID, Attempts: 1, Generation: gen(0)}, f.cancelIn[0])
	require.Less(t, f.cancelAt[0].Sub(testStart), time.Hour, "the cancel ended the hour-long wait at once")
	require.Empty(t, f.failCalls())
}

func TestCancelDuringAttemptAbortsTheCall(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	f.block = true
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "CANCELLED", Attempts: 1}, res)
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.aborted
		// The test environment ignores MaxHeartbeatThrottleInterval and holds
		// heartbeats back 0.8 of the heartbeat timeout (8 s); the workers
		// send them within HeartbeatThrottle.
	}, 10*time.Second, 10*time.Millisecond, "the in-flight attempt never saw its context cancelled")
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.deliverIn, 1)
	require.Len(t, f.cancelIn, 1)
}

func TestScheduledNotificationWaitsUntilScheduledAt(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	in := testInput(testPolicy)
	at := testStart.Add(2 * time.Hour)
	in.ScheduledAt = &at

	res := run(t, env, in)

	require.Equal(t, workflows.StatusDelivered, res.Status)
	_, when := f.deliverCalls()
	require.Len(t, when, 1)
	require.False(t, when[0].Before(at), "first attempt at %s, scheduled at %s", when[0], at)
}

func TestCancelWhileScheduledNeverDelivers(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	in := testInput(testPolicy)
	at := testStart.Add(2 * time.Hour)
	in.ScheduledAt = &at
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Minute)

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "CANCELLED", Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Empty(t, ins)
	require.Len(t, f.cancelIn, 1)
}

func TestExpiredBeforeFirstAttemptFailsWithoutDelivering(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	in := testInput(testPolicy)
	at := testStart.Add(-time.Second)
	in.ExpiresAt = &at

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Empty(t, ins, "no attempt starts after expiresAt")
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, workflows.ReasonExpired, fails[0].Reason)
}

func TestBackoffPastExpiryFailsAsExpired(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, retry(503, 0))
	in := testInput(testPolicy) // first backoff is at least 500ms
	at := testStart.Add(100 * time.Millisecond)
	in.ExpiresAt = &at

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, workflows.ReasonExpired, fails[0].Reason)
	require.Equal(t, 503, fails[0].LastStatusCode)
}

func TestActivityReportingExpiryFailsAsExpired(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeExpired}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 0}, res)
	require.Equal(t, workflows.ReasonExpired, f.failCalls()[0].Reason)
}

func TestStatusQueryShowsTheWaitForTheNextAttempt(t *testing.T) {
	t.Parallel()
	env, _ := newEnv(t, retry(503, time.Hour), delivered())
	var view workflows.StatusView
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(workflows.StatusQuery)
		require.NoError(t, err)
		require.NoError(t, v.Get(&view))
	}, 30*time.Minute)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusDelivered, res.Status)
	require.Equal(t, workflows.StatusRetrying, view.Status)
	require.Equal(t, 1, view.Attempts)
	require.NotNil(t, view.NextAttemptAt)
	require.Equal(t, testStart.Add(time.Hour), view.NextAttemptAt.UTC())
	require.Equal(t, "provider answered 503", view.LastError)
}

func TestFastPathRunsTheFirstAttemptAsALocalActivity(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	in := testInput(testPolicy)
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.True(t, ins[0].FastPath, "the attempt takes a free slot itself, or defers")
	require.Equal(t, []bool{true}, f.local)
}

func TestFastPathRetriesGoThroughTheActivityTaskQueue(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, retry(503, 0), delivered())
	in := testInput(testPolicy)
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 2)
	require.Equal(t, []bool{true, false}, f.local, "only the first attempt is local")
	require.True(t, ins[0].FastPath)
	require.False(t, ins[1].FastPath, "a retry waits for its slot in the task queue")
}

func TestDeferredFastPathAttemptGoesThroughTheTaskQueueAtOnce(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeDeferred, Error: "no rate-limit slot free"}}, delivered())
	in := testInput(testPolicy)
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res, "a deferred attempt spends nothing")
	ins, at := f.deliverCalls()
	require.Equal(t, []bool{true, false}, f.local)
	require.Equal(t, []int{1, 1}, attemptNumbers(ins), "the same attempt, made through the queue")
	require.False(t, ins[1].FastPath)
	require.Equal(t, at[0], at[1], "no backoff: the queue paces it")
}

func TestCancelSeenByTheAttemptCancels(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeCancelled, Error: "cancelled during the provider call"}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "CANCELLED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1, "no attempt after the cancel")
	require.Len(t, f.cancelIn, 1)
	require.Empty(t, f.failCalls())
}

func TestAttemptTheActivityCouldNotRecordIsRecordedByTheWorkflow(t *testing.T) {
	t.Parallel()
	rec := workflows.AttemptRecord{NotificationID: testNotificationID, Attempt: 1, StartedAt: testStart, Duration: time.Second,
		Outcome: workflows.OutcomeDelivered, StatusCode: 200, Status: "DELIVERED"}
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200, Unrecorded: &rec}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1, "a made attempt is never made again for its bookkeeping")
	require.Equal(t, []workflows.AttemptRecord{rec}, f.recorded)
}

func TestBookkeepingRunsAsLocalActivities(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusFailed, res.Status)
	require.Equal(t, []bool{true}, f.bookLocal, "Fail runs in the workflow's task, not on the rate-limited delivery queue")

	env, f = newEnv(t, retry(503, time.Hour))
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Minute)
	res = run(t, env, testInput(testPolicy))
	require.Equal(t, workflows.StatusCancelled, res.Status)
	require.Equal(t, []bool{true}, f.bookLocal, "so does Cancel")
}

func TestLongOutageContinuesAsNew(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, notAttempted())
	in := testInput(testPolicy)
	in.FastPath = true
	in.MaxWaitsPerRun = 4

	env.ExecuteWorkflow(workflows.NotificationWorkflow, in)

	require.True(t, env.IsWorkflowCompleted())
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, env.GetWorkflowError(), &can)
	var next workflows.NotificationInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.Resume)
	require.Equal(t, workflows.Resume{Attempt: 1, Waits: 4, LastError: next.Resume.LastError}, *next.Resume)
	require.Contains(t, next.Resume.LastError, "not attempted")
	require.False(t, next.FastPath, "the next run does not take the fast path")
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 4)
	require.Empty(t, f.failCalls())
}

func TestContinuedRunPicksUpWhereItStood(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, notAttempted(), retry(503, 0), delivered())
	in := testInput(testPolicy)
	in.Resume = &workflows.Resume{Attempt: 2, Waits: 7, LastError: "not attempted: redis unreachable"}

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 3}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{2, 2, 3}, attemptNumbers(ins))
	require.Equal(t, min(workflows.Backoff(testWorkflowID, 8, testPolicy, 0), 30*time.Second), at[1].Sub(at[0]),
		"the waits' backoff goes on from the last run's")
}

func TestEveryActivityOfARunCarriesItsGeneration(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, retry(503, time.Hour))
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Minute)
	in := testInput(testPolicy)
	in.Generation, in.AttemptBase = 2, 4

	res := run(t, env, in)

	require.Equal(t, workflows.StatusCancelled, res.Status)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Equal(t, gen(2), ins[0].Generation)
	require.Equal(t, []workflows.CancelInput{{NotificationID: testNotificationID, Attempts: 5, Generation: gen(2)}}, f.cancelIn)
}

func TestFailOfARunCarriesItsGeneration(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "provider answered 400"}})
	in := testInput(testPolicy)
	in.Generation = 1

	run(t, env, in)

	require.Len(t, f.failCalls(), 1)
	require.Equal(t, gen(1), f.failCalls()[0].Generation)
}

// A run whose notification was retried since (or deleted) ends at once: no
// Fail, no Cancel, no other attempt.
func TestSupersededRunEndsWithoutTouchingTheNotification(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeSuperseded, Error: "superseded by generation 1"}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: workflows.StatusSuperseded, Attempts: 0}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Empty(t, f.failCalls())
	require.Empty(t, f.cancelIn)
}

// The bookkeeping of a superseded run answers SUPERSEDED: the run ends with
// it and reports no status of the notification's.
func TestCancelOfASupersededRunEndsItSuperseded(t *testing.T) {
	t.Parallel()
	env, _ := newEnv(t, retry(503, time.Hour))
	env.OnActivity(workflows.CancelActivity, mock.Anything, mock.Anything).Return(string(workflows.StatusSuperseded), nil)
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(workflows.CancelSignal, nil) }, time.Minute)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusSuperseded, res.Status)
}

// statusAt queries the workflow at offset into its run.
func statusAt(t *testing.T, env *testsuite.TestWorkflowEnvironment, offset time.Duration) *workflows.StatusView {
	t.Helper()
	view := &workflows.StatusView{}
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(workflows.StatusQuery)
		require.NoError(t, err)
		require.NoError(t, v.Get(view))
	}, offset)
	return view
}

// Both providers of a route failing: the round ends in a backoff, which the
// row (MarkRetrying) and the status query show as RETRYING with its time,
// though neither attempt's record did (each had a provider left to try).
func TestBackoffAfterARoundOfTheRouteShowsRetryingWithItsTime(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t,
		deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeRetry, StatusCode: 503, Provider: "a", Alternatives: 1, RetryAfter: time.Hour}},
		deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeRetry, StatusCode: 503, Provider: "b", Alternatives: 1, RetryAfter: time.Hour}},
		delivered())
	view := statusAt(t, env, 30*time.Minute)
	in := testInput(testPolicy)
	in.Generation = 3

	res := run(t, env, in)

	require.Equal(t, workflows.StatusDelivered, res.Status)
	marked, at := f.markedCalls()
	require.Equal(t, []workflows.RetryingInput{{NotificationID: testNotificationID, Generation: gen(3), NextAttemptAt: testStart.Add(time.Hour)}},
		utcRetrying(marked))
	require.Equal(t, testStart, at[0].UTC())
	require.Equal(t, workflows.StatusRetrying, view.Status)
	require.NotNil(t, view.NextAttemptAt)
	require.Equal(t, testStart.Add(time.Hour), view.NextAttemptAt.UTC())
}

// A wait the attempt's own record showed is not marked again.
func TestBackoffTheAttemptRecordedIsNotMarkedAgain(t *testing.T) {
	t.Parallel()
	step := retry(503, time.Hour)
	step.res.Retrying = true
	env, f := newEnv(t, step, delivered())

	run(t, env, testInput(testPolicy))

	marked, _ := f.markedCalls()
	require.Empty(t, marked)
}

// Every provider's breaker open: nothing is sent, and the wait until one
// may admit is shown as RETRYING with its time, on the row and in the query.
func TestWaitForAnOpenBreakerShowsRetryingWithItsTime(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t,
		deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeUnavailable, RetryAfter: 10 * time.Second, Error: "every provider of sms has its breaker open"}},
		delivered())
	view := statusAt(t, env, 5*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusDelivered, res.Status)
	marked, _ := f.markedCalls()
	require.Len(t, marked, 1)
	require.Equal(t, workflows.StatusRetrying, view.Status)
	require.NotNil(t, view.NextAttemptAt)
	require.Equal(t, marked[0].NextAttemptAt.UTC(), view.NextAttemptAt.UTC())
	require.True(t, view.NextAttemptAt.After(testStart.Add(5*time.Second)))
}

// An attempt that did not report back (worker lost) is followed by a
// backoff its record never showed: the row is marked.
func TestBackoffAfterALostAttemptShowsRetrying(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{err: errors.New("worker lost")}, delivered())

	run(t, env, testInput(testPolicy))

	marked, _ := f.markedCalls()
	require.Len(t, marked, 1)
}

func utcRetrying(in []workflows.RetryingInput) []workflows.RetryingInput {
	out := make([]workflows.RetryingInput, len(in))
	for i, r := range in {
		r.NextAttemptAt = r.NextAttemptAt.UTC()
		out[i] = r
	}
	return out
}
