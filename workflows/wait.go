package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// waitForSchedule waits until the notification's scheduled time (a
// durable timer the cancel signal ends), unless it resumes a run that did.
// It reports whether a cancel came meanwhile.
func (r *run) waitForSchedule(ctx workflow.Context) (cancelled bool) {
	if r.in.ScheduledAt == nil || r.in.Resume != nil {
		return false
	}
	wait := r.in.ScheduledAt.Sub(workflow.Now(ctx))
	if wait <= 0 {
		return false
	}
	r.view.Status = StatusScheduled
	r.showDetails(ctx)
	_ = workflow.NewTimerWithOptions(r.work, wait, workflow.TimerOptions{
		Summary: "scheduled for " + r.in.ScheduledAt.UTC().Format(time.RFC3339),
	}).Get(r.work, nil)
	if r.view.CancelRequested {
		return true
	}
	r.view.Status = StatusProcessing
	return false
}

// waitToBegin waits after an attempt that sent nothing (Redis or PostgreSQL
// was unreachable before it began, or every provider's breaker is open),
// then makes the same attempt again: an outage spends no attempt and does
// not end in FAILED. A run that waited its share continues as new.
func (r *run) waitToBegin(ctx workflow.Context, attemptErr error, unavailable bool) next {
	r.waits++
	r.waitsHere++
	wait, why, summary := r.beginWait(attemptErr, unavailable)
	if r.expired(ctx, wait) {
		return ended(r.fail(ctx, ReasonExpired, r.madeBefore(), r.last))
	}
	workflow.GetLogger(ctx).Warn("delivery attempt could not begin; trying again", "attempt", r.attempt, "error", why)
	r.view.LastError = why
	// The status query shows the wait either way; the row is written only
	// when every breaker is open. While Redis or PostgreSQL is out nothing
	// was attempted and the row keeps what it showed: with a write per short
	// wait of every waiting notification, the fault suite's Redis outages
	// saw attempts miss their heartbeats and be spent (cause not pinned
	// down).
	r.waitRetrying(ctx, wait, !unavailable, summary)
	if r.view.CancelRequested {
		return ended(r.cancel(ctx, r.madeBefore()))
	}
	if r.waitsHere >= r.maxWaitsPerRun() || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
		return ended(r.continueAsNew(ctx, Resume{Attempt: r.attempt, Waits: r.waits, LastError: r.view.LastError}))
	}
	return sameAttempt
}

// beginWait is how long to wait before an attempt that could not begin is
// made again, why it could not, and the wait's summary.
func (r *run) beginWait(attemptErr error, unavailable bool) (wait time.Duration, why, summary string) {
	if unavailable {
		// Until a breaker may half-open, spread a little so the waiting
		// notifications do not all ask at once.
		spread := time.Duration(jitterFraction(r.wfID, r.waits) * float64(r.last.RetryAfter/5))
		wait = min(max(r.last.RetryAfter+spread, minUnavailableWait), maxUnattemptedWait)
		return wait, r.last.Error, fmt.Sprintf("all providers open: wait %s", roundWait(wait))
	}
	wait = min(Backoff(r.wfID, r.waits, r.in.Retry, 0), maxUnattemptedWait)
	return wait, attemptErr.Error(), fmt.Sprintf("attempt %d could not begin: wait %s", r.attempt, roundWait(wait))
}

// roundWait rounds a wait for a summary.
func roundWait(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// maxUnattemptedWait caps the wait before an attempt that could not begin
// is made again: the outage may end any moment.
const maxUnattemptedWait = 30 * time.Second

// minUnavailableWait is the shortest wait for a breaker to admit again.
const minUnavailableWait = 200 * time.Millisecond

// retryingRowChange versions the marking of the notification's row as
// RETRYING, with the time of the next attempt, before a wait the attempt's
// own record did not show (a failover round, an attempt that did not report
// back, an outage, every breaker open). Histories from before have no such
// local activity.
const retryingRowChange = "retrying-row"

// waitRetrying waits wait before the next attempt, showing RETRYING and its
// time in the status query and, unless shown already, on the row (best
// effort: a row that cannot be written now keeps what it showed). A cancel
// ends the wait.
func (r *run) waitRetrying(ctx workflow.Context, wait time.Duration, shown bool, summary string) {
	next := workflow.Now(ctx).Add(wait)
	r.view.Status, r.view.NextAttemptAt = StatusRetrying, &next
	r.showDetails(ctx)
	if !shown && workflow.GetVersion(ctx, retryingRowChange, workflow.DefaultVersion, 1) == 1 {
		_ = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(r.work, workflow.LocalActivityOptions{
			StartToCloseTimeout: 5 * time.Second,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
			Summary:             "mark RETRYING until " + next.UTC().Format(time.TimeOnly),
		}), MarkRetryingActivity, RetryingInput{NotificationID: r.in.NotificationID, Generation: r.generation(), NextAttemptAt: next}).Get(r.work, nil)
	}
	_ = workflow.NewTimerWithOptions(r.work, wait, workflow.TimerOptions{Summary: summary}).Get(r.work, nil)
	r.view.Status, r.view.NextAttemptAt = StatusProcessing, nil
}
