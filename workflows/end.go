package workflows

import (
	"errors"
	"fmt"
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
func (r *run) bookkeep(ctx workflow.Context, name, summary string, arg, result any) error {
	if workflow.GetVersion(ctx, bookkeepingChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:           r.in.ActivityTaskQueue,
			StartToCloseTimeout: 30 * time.Second,
			RetryPolicy:         bookkeepingRetry,
		}), name, arg).Get(ctx, result)
	}
	return r.local(ctx, name, summary, arg, result)
}

// local runs a bookkeeping activity as a local activity: no task queue, no
// rate limit, no extra workflow task. summary labels it in the Web UI.
func (r *run) local(ctx workflow.Context, name, summary string, arg, result any) error {
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         bookkeepingRetry,
		Summary:             summary,
	}), name, arg).Get(ctx, result)
}

var bookkeepingRetry = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    time.Minute,
}

// record stores an attempt Deliver made but could not record.
func (r *run) record(ctx workflow.Context, a AttemptRecord) error {
	return r.local(ctx, RecordAttemptActivity, fmt.Sprintf("record attempt %d", a.Attempt), a, nil)
}

// fail dead-letters the notification and marks it FAILED. If the row became
// terminal meanwhile (say, cancelled), that status stands and is reported.
// A profile's notification with a channel left falls back to it instead
// (fallback.go: errFellBack).
func (r *run) fail(ctx workflow.Context, reason string, attempts int, last DeliverResult) (NotificationResult, error) {
	if r.fallsBack(reason) {
		if err := r.fallback(ctx, attempts); err != nil {
			return NotificationResult{}, err
		}
	}
	var status Status
	err := r.bookkeep(ctx, FailActivity, "mark FAILED ("+reason+") and dead-letter", FailInput{
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
	r.reason = reason
	return r.finish(ctx, status, attempts)
}

// cancel marks the notification CANCELLED (unless it is already terminal,
// whose status then stands).
func (r *run) cancel(ctx workflow.Context, attempts int) (NotificationResult, error) {
	var status Status
	err := r.bookkeep(ctx, CancelActivity, "mark CANCELLED", CancelInput{
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
// workflow task as completion, so it costs no extra round trip) and ends the
// run as the notification ended (see end).
func (r *run) finish(ctx workflow.Context, status Status, attempts int) (NotificationResult, error) {
	r.view.Status, r.view.Attempts, r.view.NextAttemptAt = status, attempts, nil
	r.showDetails(ctx)
	if status.Terminal() {
		if err := r.afterEnd(ctx); err != nil {
			return NotificationResult{}, err
		}
	}
	if err := r.upsert(ctx, status, attempts); err != nil {
		return NotificationResult{}, err
	}
	return r.end(ctx, NotificationResult{Status: status, Attempts: attempts})
}

// runEndChange versions how a run ends: a run whose notification ended
// FAILED fails, with an application error whose type is the reason
// (exhausted, permanent, expired, undelivered, no-receipt), and one whose
// notification ended CANCELLED is canceled, so the Web UI's badge, its
// status filter and ExecutionStatus queries tell the truth. The error
// carries the result (ResultOfError reads it). Histories from before
// completed every run; the marker is recorded on those two endings only,
// so a delivered notification's history gains nothing.
const runEndChange = "run-ends-as-notification"

// end answers how the run ends for res: completed with it, or (since
// runEndChange) failed or canceled with it as the error's details.
func (r *run) end(ctx workflow.Context, res NotificationResult) (NotificationResult, error) {
	if res.Status != StatusFailed && res.Status != StatusCancelled {
		return res, nil
	}
	if workflow.GetVersion(ctx, runEndChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return res, nil
	}
	if res.Status == StatusCancelled {
		return NotificationResult{}, temporal.NewCanceledError(res)
	}
	reason := r.reason
	if reason == "" {
		// FAILED by another hand meanwhile (the reconciler, say).
		reason = "failed"
	}
	msg := fmt.Sprintf("notification failed (%s) after %d attempt(s)", reason, res.Attempts)
	if r.view.LastError != "" {
		msg += ": " + r.view.LastError
	}
	return NotificationResult{}, temporal.NewNonRetryableApplicationError(msg, reason, nil, res)
}

// ResultOfError reads the result a notification's run ended with from the
// error of a run that ended Failed or Canceled (see runEndChange); ok is
// false for any other error.
func ResultOfError(err error) (res NotificationResult, ok bool) {
	var appErr *temporal.ApplicationError
	var canceled *temporal.CanceledError
	switch {
	case errors.As(err, &appErr) && appErr.HasDetails():
		return res, appErr.Details(&res) == nil
	case errors.As(err, &canceled) && canceled.HasDetails():
		return res, canceled.Details(&res) == nil
	}
	return res, false
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
