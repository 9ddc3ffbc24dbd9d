package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Names under which the operation workflow and its activity are registered.
const (
	OperationWorkflow     = "Operation"
	OperationStepActivity = "OperationStep"
)

// OperationInput starts an operation's workflow. The operation (its
// action, filter, pace, cursor and counts) lives in PostgreSQL; the history
// carries only its id.
type OperationInput struct {
	OperationID string
}

// OperationStepInput asks for a step of an operation: pages of it for a
// bounded time.
type OperationStepInput struct {
	OperationID string
}

// OperationStepResult is what a step did.
type OperationStepResult struct {
	// Done: the operation ended, with Status (COMPLETED, CANCELLED).
	Done   bool
	Status string `json:",omitempty"`
	// Processed counts the notifications the step visited.
	Processed int
}

// OperationResult is the operation workflow's result.
type OperationResult struct {
	Status string
}

// maxOperationSteps bounds one run's steps (about six events each) before
// it continues as new, well inside the history Temporal suggests.
const maxOperationSteps = 500

// Operation runs an operation (retry, cancel or erase over a filter) to
// its end: each step is an activity that does pages of it at its pace for a
// bounded time. Every page moves the operation's cursor and counts in the
// same transaction as its changes, so a step retried after a crash goes on
// from the last committed page, doing no item twice; the workflow holds no
// progress of its own, and continues as new through a set of any size.
func Operation(ctx workflow.Context, in OperationInput) (OperationResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		HeartbeatTimeout:    20 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: []string{"BadInput", "NotFound"},
		},
	})
	for step := 0; ; step++ {
		if step >= maxOperationSteps || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			return OperationResult{}, workflow.NewContinueAsNewError(ctx, OperationWorkflow, in)
		}
		var res OperationStepResult
		if err := workflow.ExecuteActivity(ctx, OperationStepActivity, OperationStepInput(in)).Get(ctx, &res); err != nil {
			return OperationResult{}, err
		}
		if res.Done {
			return OperationResult{Status: res.Status}, nil
		}
	}
}
