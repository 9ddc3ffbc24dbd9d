package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"
)

// next is what follows a settled attempt: the same attempt again (nothing
// was spent), the next attempt, or the end of the run with its result.
type next struct {
	again, end bool
	result     NotificationResult
	err        error
}

var (
	nextAttempt = next{}
	sameAttempt = next{again: true}
)

// ended ends the run with the result of one of its ending steps.
func ended(result NotificationResult, err error) next {
	return next{end: true, result: result, err: err}
}

// settle decides what follows the attempt in hand, from its error and what
// it came to (r.last): a cancel ends the run; an attempt that could not
// begin is made again after a wait; one deferred by the fast path is made
// again on the task queue; a final outcome ends the run; a failed attempt
// moves on to the next.
func (r *run) settle(ctx workflow.Context, attemptErr error) next {
	r.noteAttempt(ctx, attemptErr)
	if r.view.CancelRequested {
		return ended(r.cancel(ctx, r.made()))
	}
	unavailable := attemptErr == nil && r.last.Outcome == OutcomeUnavailable
	if attemptErr != nil && isNotAttempted(attemptErr) || unavailable {
		return r.waitToBegin(ctx, attemptErr, unavailable)
	}
	if attemptErr != nil {
		// The attempt did not report back (worker lost, timeout, activity
		// error): it counts as a retryable failure.
		workflow.GetLogger(ctx).Warn("delivery attempt did not complete", "attempt", r.attempt, "error", attemptErr)
		r.last = DeliverResult{Outcome: OutcomeRetry, Error: attemptErr.Error()}
	}
	if r.last.Outcome == OutcomeDeferred {
		r.deferred = true
		return sameAttempt
	}
	if r.last.Outcome == OutcomeHeld {
		return r.waitHeld(ctx)
	}
	if r.last.Outcome == OutcomeRerouted && r.last.Channel != "" {
		// A profile's notification goes on another channel: nothing was
		// sent, and the same attempt is made there.
		r.useChannel(r.last.Channel)
		if err := workflow.UpsertTypedSearchAttributes(ctx, SearchChannel.ValueSet(r.last.Channel)); err != nil {
			return ended(NotificationResult{}, err)
		}
		return sameAttempt
	}
	r.view.LastError = r.last.Error
	if r.last.Provider != "" {
		r.provider = r.last.Provider
	}
	if n, final := r.settleFinal(ctx); final {
		return n
	}
	return r.retry(ctx)
}

// settleFinal ends the run on an outcome that leaves nothing to retry:
// delivered, sent (its receipt decides), skipped, permanent, expired,
// cancelled or superseded. final is false for the others.
func (r *run) settleFinal(ctx workflow.Context) (n next, final bool) {
	switch r.last.Outcome {
	case OutcomeDelivered:
		return ended(r.finish(ctx, StatusDelivered, r.made())), true
	case OutcomeSent:
		return r.settleSent(ctx), true
	case OutcomeSkipped:
		return ended(r.finish(ctx, r.last.Status, r.madeBefore())), true
	case OutcomePermanent:
		if r.last.RouteExhausted {
			return ended(r.fail(ctx, ReasonUndelivered, r.madeBefore(), r.last)), true
		}
		return ended(r.fail(ctx, ReasonPermanent, r.made(), r.last)), true
	case OutcomeExpired:
		return ended(r.fail(ctx, ReasonExpired, r.madeBefore(), r.last)), true
	case OutcomeCancelled:
		// Deliver saw the cancel request before its signal arrived.
		r.view.CancelRequested = true
		return ended(r.cancel(ctx, r.made())), true
	case OutcomeSuperseded:
		// Retried since, or gone: nothing to do, nothing to write.
		return ended(r.superseded(ctx, r.madeBefore())), true
	}
	return nextAttempt, false
}

// retry moves on from a failed attempt: after the run's last one the loop
// ends (exhausted); another provider on the route that admits sends is tried
// at once (a failover; a round of the route ends in a backoff); otherwise
// the next attempt waits its backoff, shown as RETRYING.
func (r *run) retry(ctx workflow.Context) next {
	if r.attempt == r.lastAttempt {
		return nextAttempt
	}
	r.after = r.last.Provider
	if r.last.Alternatives > r.hops {
		r.hops++
		return nextAttempt
	}
	r.hops = 0
	wait := Backoff(r.wfID, r.attempt-r.in.AttemptBase, r.in.Retry, r.last.RetryAfter)
	if r.expired(ctx, wait) {
		// No attempt could start before expiresAt: fail now, not later.
		return ended(r.fail(ctx, ReasonExpired, r.made(), r.last))
	}
	if err := r.upsert(ctx, StatusRetrying, r.made()); err != nil {
		return ended(NotificationResult{}, err)
	}
	// The attempt's record showed the wait already, unless the attempt
	// did not report back or the route had a provider left to try.
	r.waitRetrying(ctx, wait, r.last.Retrying, fmt.Sprintf("backoff %s before attempt %d", roundWait(wait), r.attempt+1))
	if r.view.CancelRequested {
		return ended(r.cancel(ctx, r.made()))
	}
	return nextAttempt
}
