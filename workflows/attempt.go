package workflows

import (
	"errors"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// makeAttempt makes the attempt in hand: on the fast path (a local activity
// in the workflow's own task) when it is the run's first, nothing waited and
// nothing deferred it, else as an activity on the channel's task queue. It
// answers the attempt's own error (it did not report back, or could not
// begin), for settle to weigh; err is the run's (an attempt it could not
// record).
func (r *run) makeAttempt(ctx workflow.Context) (attemptErr, err error) {
	r.view.Attempts, r.view.NextAttemptAt = r.attempt, nil
	r.last = DeliverResult{}
	req := DeliverInput{NotificationID: r.in.NotificationID, Attempt: r.attempt, Retry: r.in.Retry, Channel: r.in.Channel,
		After: r.after, Exclude: r.excluded, AttemptBase: r.in.AttemptBase, Generation: r.generation()}
	var future workflow.Future
	if r.fastPath() {
		req.FastPath = true
		opts := r.localOpts
		opts.Summary = r.attemptSummary(true)
		future = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(r.work, opts), DeliverActivity, req)
	} else {
		opts := r.deliverOpts
		opts.Summary = r.attemptSummary(false)
		future = workflow.ExecuteActivity(workflow.WithActivityOptions(r.work, opts), DeliverActivity, req)
	}
	r.rehold = false
	attemptErr = future.Get(r.work, &r.last)
	if attemptErr == nil && r.last.Unrecorded != nil {
		if err := r.record(ctx, *r.last.Unrecorded); err != nil {
			return nil, err
		}
	}
	return attemptErr, nil
}

// fastPath reports whether the attempt in hand goes on the fast path: the
// run's first, when nothing waited, or the one after a hold (waitHeld).
func (r *run) fastPath() bool {
	first := r.attempt == r.firstAttempt && r.in.FastPath && r.waits == 0
	return (first || r.rehold) && !r.deferred
}

// isNotAttempted reports whether a Deliver error says nothing was sent.
func isNotAttempted(err error) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == ErrNotAttempted
}
