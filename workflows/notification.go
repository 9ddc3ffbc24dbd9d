package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// heartbeatTimeout is how soon a lost worker's attempt is noticed.
const heartbeatTimeout = 5 * time.Second

// Notification delivers one notification: attempts until one is delivered,
// one fails permanently, or the attempts run out. Each attempt is a single
// Deliver activity execution (MaximumAttempts 1): the workflow, not
// Temporal's activity retry, owns the backoff, so every attempt is visible and
// recorded, and the waits are durable timers.
func Notification(ctx workflow.Context, in NotificationInput) (NotificationResult, error) {
	deliverCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           in.ActivityTaskQueue,
		StartToCloseTimeout: in.AttemptTimeout,
		HeartbeatTimeout:    heartbeatTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		WaitForCancellation: true,
	})
	wfID := workflow.GetInfo(ctx).WorkflowExecution.ID
	logger := workflow.GetLogger(ctx)

	var last DeliverResult
	for attempt := 1; attempt <= in.Retry.MaxAttempts; attempt++ {
		last = DeliverResult{}
		err := workflow.ExecuteActivity(deliverCtx, DeliverActivity, DeliverInput{
			NotificationID: in.NotificationID,
			Attempt:        attempt,
			Retry:          in.Retry,
		}).Get(ctx, &last)
		if err != nil {
			// The attempt did not report back (worker lost, timeout, activity
			// error): it counts as a retryable failure.
			logger.Warn("delivery attempt did not complete", "attempt", attempt, "error", err)
			last = DeliverResult{Outcome: OutcomeRetry, Error: err.Error()}
		}
		switch last.Outcome {
		case OutcomeDelivered:
			return finish(ctx, "DELIVERED", attempt)
		case OutcomeSkipped:
			return NotificationResult{Status: last.Status, Attempts: attempt - 1}, nil
		case OutcomePermanent:
			return fail(ctx, in, ReasonPermanent, attempt, last)
		}
		if attempt < in.Retry.MaxAttempts {
			if err := workflow.Sleep(ctx, Backoff(wfID, attempt, in.Retry, last.RetryAfter)); err != nil {
				return NotificationResult{}, err
			}
		}
	}
	return fail(ctx, in, ReasonExhausted, in.Retry.MaxAttempts, last)
}

// fail dead-letters the notification and marks it FAILED. The Fail activity
// retries until it succeeds: a notification must never stop short of a
// terminal state.
func fail(ctx workflow.Context, in NotificationInput, reason string, attempts int, last DeliverResult) (NotificationResult, error) {
	failCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           in.ActivityTaskQueue,
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
		},
	})
	err := workflow.ExecuteActivity(failCtx, FailActivity, FailInput{
		NotificationID: in.NotificationID,
		Channel:        in.Channel,
		Reason:         reason,
		Attempts:       attempts,
		LastStatusCode: last.StatusCode,
		LastError:      last.Error,
	}).Get(ctx, nil)
	if err != nil {
		return NotificationResult{}, err
	}
	return finish(ctx, "FAILED", attempts)
}

// finish records the terminal status as search attributes (in the same
// workflow task as completion, so it costs no extra round trip).
func finish(ctx workflow.Context, status string, attempts int) (NotificationResult, error) {
	err := workflow.UpsertTypedSearchAttributes(ctx,
		SearchStatus.ValueSet(status),
		SearchAttempts.ValueSet(int64(attempts)),
	)
	if err != nil {
		return NotificationResult{}, err
	}
	return NotificationResult{Status: status, Attempts: attempts}, nil
}
