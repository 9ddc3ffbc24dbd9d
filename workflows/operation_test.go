package workflows_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func TestRetriedGenerationGetsAFreshBudgetNumberedOn(t *testing.T) {
	t.Parallel()
	p := testPolicy
	p.MaxAttempts = 3
	env, f := newEnv(t, retry(503, 0))
	in := testInput(p)
	in.AttemptBase, in.Generation = 3, 1 // three attempts made before the retry

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "FAILED", Attempts: 6}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{4, 5, 6}, attemptNumbers(ins), "a fresh budget of three, numbered after the three made")
	for _, d := range ins {
		require.Equal(t, 3, d.AttemptBase, "the activity learns the base, to compute its next attempt's time")
	}
	for n := 1; n < len(at); n++ {
		require.Equal(t, workflows.Backoff(testWorkflowID, n, p, 0), at[n].Sub(at[n-1]),
			"the backoff starts over: the wait after the generation's attempt %d", n)
	}
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, 6, fails[0].Attempts)
}

func TestRetriedGenerationTakesTheFastPathOnItsFirstAttempt(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, delivered())
	in := testInput(testPolicy)
	in.AttemptBase, in.Generation, in.FastPath = 2, 1, true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 3}, res)
	ins, _ := f.deliverCalls()
	require.Equal(t, []int{3}, attemptNumbers(ins))
	require.True(t, ins[0].FastPath)
}

// opFakes stands in for the operation's step activity: it answers steps
// not done until done of them were made.
type opFakes struct {
	mu    sync.Mutex
	calls int
	done  int
}

func (o *opFakes) step(_ context.Context, in workflows.OperationStepInput) (workflows.OperationStepResult, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	if o.calls >= o.done {
		return workflows.OperationStepResult{Done: true, Status: "COMPLETED", Processed: 10}, nil
	}
	return workflows.OperationStepResult{Processed: 10}, nil
}

func newOperationEnv(t *testing.T, done int) (*testsuite.TestWorkflowEnvironment, *opFakes) {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(workflows.Operation, workflow.RegisterOptions{Name: workflows.OperationWorkflow})
	o := &opFakes{done: done}
	env.RegisterActivityWithOptions(o.step, activity.RegisterOptions{Name: workflows.OperationStepActivity})
	return env, o
}

func TestOperationStepsUntilDone(t *testing.T) {
	t.Parallel()
	env, o := newOperationEnv(t, 7)

	env.ExecuteWorkflow(workflows.OperationWorkflow, workflows.OperationInput{OperationID: "op-1"})

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res workflows.OperationResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "COMPLETED", res.Status)
	require.Equal(t, 7, o.calls)
}

func TestOperationContinuesAsNewThroughALargeSet(t *testing.T) {
	t.Parallel()
	env, o := newOperationEnv(t, 100_000) // far more steps than one run takes

	env.ExecuteWorkflow(workflows.OperationWorkflow, workflows.OperationInput{OperationID: "op-1"})

	require.True(t, env.IsWorkflowCompleted())
	err := env.GetWorkflowError()
	require.True(t, workflow.IsContinueAsNewError(err), "got %v", err)
	require.Less(t, o.calls, 100_000)
	require.Positive(t, o.calls)
}

func TestOperationStepErrorsAreRetriedUntilTheStepSucceeds(t *testing.T) {
	t.Parallel()
	env, o := newOperationEnv(t, 2)
	failures := 0
	env.RegisterActivityWithOptions(func(ctx context.Context, in workflows.OperationStepInput) (workflows.OperationStepResult, error) {
		if failures < 3 {
			failures++
			return workflows.OperationStepResult{}, temporal.NewApplicationError("database unreachable", "Unavailable")
		}
		return o.step(ctx, in)
	}, activity.RegisterOptions{Name: workflows.OperationStepActivity})

	env.ExecuteWorkflow(workflows.OperationWorkflow, workflows.OperationInput{OperationID: "op-1"})

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	require.Equal(t, 3, failures)
	require.Equal(t, 2, o.calls)
}
