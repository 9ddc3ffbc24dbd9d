package workflows

import (
	"fmt"
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
	// The run's progress, for its current details in the Web UI (the
	// operation's own counts are in PostgreSQL; GET /v1/operations/{id}).
	visited := 0
	for step := 0; ; step++ {
		if step >= maxOperationSteps || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			return OperationResult{}, workflow.NewContinueAsNewError(ctx, OperationWorkflow, in)
		}
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("**RUNNING** · step %d · %d notifications visited in this run", step+1, visited))
		var res OperationStepResult
		stepCtx := workflow.WithActivityOptions(ctx, withSummary(workflow.GetActivityOptions(ctx), fmt.Sprintf("step %d", step+1)))
		if err := workflow.ExecuteActivity(stepCtx, OperationStepActivity, OperationStepInput(in)).Get(ctx, &res); err != nil {
			return OperationResult{}, err
		}
		visited += res.Processed
		if res.Done {
			workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** · %d notifications visited in this run", res.Status, visited))
			return OperationResult{Status: res.Status}, nil
		}
	}
}

// withSummary is opts labelled with summary in the Web UI.
func withSummary(opts workflow.ActivityOptions, summary string) workflow.ActivityOptions {
	opts.Summary = summary
	return opts
}
