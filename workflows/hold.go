package workflows

import (
	"go.temporal.io/sdk/workflow"
)

// waitHeld waits out a hold (OutcomeHeld): the attempt in hand found the
// notification must wait past its turn on its person's side (quiet hours,
// a throttle, a digest, the one before it in its ordering key), sent
// nothing and spent nothing, and showed it SCHEDULED until HeldUntil. The
// wait is a durable timer whose summary says why, ended early by the
// cancel signal or a wake signal (the one before it ended, or its digest's
// message did); then the same attempt is made again, which reads the row
// and decides anew. expiresAt still wins: a hold it would outlast fails the
// notification now, nothing sent.
func (r *run) waitHeld(ctx workflow.Context) next {
	until := workflow.Now(ctx)
	if r.last.HeldUntil != nil {
		until = *r.last.HeldUntil
	}
	wait := until.Sub(workflow.Now(ctx))
	if r.expired(ctx, max(wait, 0)) {
		if r.last.DeferredBy != deferredByOrdering {
			return ended(r.fail(ctx, ReasonExpired, r.madeBefore(), r.last))
		}
		// The one ahead may end before then (a wake): wait no longer than
		// expiresAt, whose attempt then finds it expired.
		until, wait = *r.in.ExpiresAt, r.in.ExpiresAt.Sub(workflow.Now(ctx))
	}
	r.waits++
	r.waitsHere++
	r.view.Status, r.view.NextAttemptAt, r.view.DeferredBy = StatusScheduled, &until, r.last.DeferredBy
	r.showDetails(ctx)
	if wait > 0 {
		timerCtx, cancelTimer := workflow.WithCancel(r.work)
		timer := workflow.NewTimerWithOptions(timerCtx, wait, workflow.TimerOptions{Summary: r.last.HoldSummary})
		woken := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.AddReceive(r.wake, func(c workflow.ReceiveChannel, _ bool) {
			c.Receive(ctx, nil)
			woken = true
		})
		sel.Select(ctx)
		if woken {
			cancelTimer()
		}
	}
	// Wakes that came meanwhile are answered by the attempt below.
	for r.wake.ReceiveAsync(nil) {
	}
	if r.view.CancelRequested {
		return ended(r.cancel(ctx, r.madeBefore()))
	}
	r.view.Status, r.view.NextAttemptAt, r.view.DeferredBy = StatusProcessing, nil, ""
	// The attempt after a hold goes on the fast path: its hold sent
	// nothing, and a waiting notification should not queue behind the
	// channel's backlog once its turn comes (the fast path defers to the
	// queue when no slot is free).
	r.rehold = true
	if r.waitsHere >= r.maxWaitsPerRun() || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
		return ended(r.continueAsNew(ctx, Resume{Attempt: r.attempt, Waits: r.waits, LastError: r.view.LastError}))
	}
	return sameAttempt
}

// deferredByOrdering is DeliverResult.DeferredBy for a notification that
// waits for the one before it in its ordering key.
const deferredByOrdering = "ordering"

// afterEnd moves on what waits for the notification that just ended: the
// next in its ordering key, and, for a digest's message, the digest's
// members. Only such notifications run these steps.
func (r *run) afterEnd(ctx workflow.Context) error {
	in := ReleaseInput{NotificationID: r.in.NotificationID}
	if r.in.DigestMessage {
		if err := r.local(ctx, SettleDigestActivity, "end the digest's members as its message ended", in, nil); err != nil {
			return err
		}
	}
	if r.in.Ordered {
		return r.local(ctx, ReleaseOrderingActivity, "wake the next in its ordering key", in, nil)
	}
	return nil
}
