package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// bookkeepingChange versions where Fail and Cancel run: local activities in
// the workflow's own task now, activities on the channel's rate-limited
// delivery task queue before (where a cancel or a FAILED mark waited behind
// the whole backlog and spent rate slots). Histories from before keep the
// activity.
const bookkeepingChange = "bookkeeping-local"

// bookkeep runs one of the activities that must reach a terminal state:
// they retry until they succeed, and run on ctx, which the cancel signal
// does not cancel.
func (r *run) bookkeep(ctx workflow.Context, name string, arg, result any) error {
	if workflow.GetVersion(ctx, bookkeepingChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:           r.in.ActivityTaskQueue,
			StartToCloseTimeout: 30 * time.Second,
			RetryPolicy:         bookkeepingRetry,
		}), name, arg).Get(ctx, result)
	}
	return r.local(ctx, name, arg, result)
}

// local runs a bookkeeping activity as a local activity: no task queue, no
// rate limit, no extra workflow task.
func (r *run) local(ctx workflow.Context, name string, arg, result any) error {
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         bookkeepingRetry,
	}), name, arg).Get(ctx, result)
}

var bookkeepingRetry = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    time.Minute,
}

// record stores an attempt Deliver made but could not record.
func (r *run) record(ctx workflow.Context, a AttemptRecord) error {
	return r.local(ctx, RecordAttemptActivity, a, nil)
}

// fail dead-letters the notification and marks it FAILED. If the row became
// terminal meanwhile (say, cancelled), that status stands and is reported.
func (r *run) fail(ctx workflow.Context, reason string, attempts int, last DeliverResult) (NotificationResult, error) {
	var status Status
	err := r.bookkeep(ctx, FailActivity, FailInput{
		NotificationID: r.in.NotificationID,
		Channel:        r.in.Channel,
		Reason:         reason,
		Attempts:       attempts,
		LastStatusCode: last.StatusCode,
		LastError:      last.Error,
		Generation:     r.generation(),
	}, &status)
	if err != nil {
		return NotificationResult{}, err
	}
	return r.finish(ctx, status, attempts)
}

// cancel marks the notification CANCELLED (unless it is already terminal,
// whose status then stands).
func (r *run) cancel(ctx workflow.Context, attempts int) (NotificationResult, error) {
	var status Status
	err := r.bookkeep(ctx, CancelActivity, CancelInput{
		NotificationID: r.in.NotificationID,
		Attempts:       attempts,
		Generation:     r.generation(),
	}, &status)
	if err != nil {
		return NotificationResult{}, err
	}
	return r.finish(ctx, status, attempts)
}

// superseded ends a run that no longer owns its notification (retried
// since, or gone): nothing is written to it.
func (r *run) superseded(ctx workflow.Context, attempts int) (NotificationResult, error) {
	workflow.GetLogger(ctx).Info("the notification is no longer this run's; ending", "generation", r.in.Generation)
	return r.finish(ctx, StatusSuperseded, attempts)
}

// finish records the terminal status as search attributes (in the same
// workflow task as completion, so it costs no extra round trip).
func (r *run) finish(ctx workflow.Context, status Status, attempts int) (NotificationResult, error) {
	r.view.Status, r.view.Attempts, r.view.NextAttemptAt = status, attempts, nil
	if err := r.upsert(ctx, status, attempts); err != nil {
		return NotificationResult{}, err
	}
	return NotificationResult{Status: status, Attempts: attempts}, nil
}

func (r *run) upsert(ctx workflow.Context, status Status, attempts int) error {
	updates := []temporal.SearchAttributeUpdate{
		SearchStatus.ValueSet(string(status)),
		SearchAttempts.ValueSet(int64(attempts)),
	}
	if r.provider != "" {
		updates = append(updates, SearchProvider.ValueSet(r.provider))
	}
	return workflow.UpsertTypedSearchAttributes(ctx, updates...)
}
