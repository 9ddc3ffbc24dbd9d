package activities

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// queueSlot is Deliver's rate-limit stage before the attempt begins: an
// attempt through the queue waits for the channel's slot first, so that the
// wait (for as long as Redis is unreachable, say) touches nothing and spends
// nothing. The fast path begins first, so that a retried workflow task
// re-running it always finds it begun; it takes its slots in sendSlot.
func (a *Activities) queueSlot(ctx context.Context, at *attempt) *stop {
	if at.in.FastPath {
		return nil
	}
	if err := a.waitForSlot(ctx, at.channel); err != nil {
		return halt(err)
	}
	at.slotAt = time.Now()
	return nil
}

// sendSlot is Deliver's rate-limit stage just before the send, once the
// attempt began. Through the queue, it replaces a channel slot taken more
// than slotFreshness ago (the database was slow to begin the attempt) and
// waits for the provider's own slot, if it has a rate. The fast path takes
// only what is free right now (fastPathSlot).
func (a *Activities) sendSlot(ctx context.Context, at *attempt) *stop {
	if at.in.FastPath {
		return a.fastPathSlot(ctx, at)
	}
	if time.Since(at.slotAt) > slotFreshness {
		if err := a.waitForSlot(ctx, at.channel); err != nil {
			return halt(err)
		}
	}
	if at.p.RatePerSec > 0 {
		if err := a.waitForSlot(ctx, provider.ProviderLimitKey(at.p.Name)); err != nil {
			return halt(err)
		}
	}
	return nil
}

// fastPathSlot admits the fast path's attempt (in.FastPath, a local
// activity) to its send only while fewer than cap(FastPathCalls) such calls
// are in flight and a rate-limit slot of the channel (and of the provider,
// if it has a rate) is free right now; otherwise it sends nothing and
// answers OutcomeDeferred, and the workflow makes the attempt through the
// channel's activity task queue, where the backlog waits in priority order.
func (a *Activities) fastPathSlot(ctx context.Context, at *attempt) *stop {
	select {
	case a.FastPathCalls <- struct{}{}:
		at.fastPathCall = true // given back when Deliver ends (giveBack)
	default:
		return answer(a.deferred(at.channel, "busy", "every fast-path call of this worker is busy"))
	}
	if !a.Limiter.TryTake(ctx, at.channel) {
		return answer(a.deferred(at.channel, "rate-limit", "no rate-limit slot free"))
	}
	if at.p.RatePerSec > 0 && !a.Limiter.TryTake(ctx, provider.ProviderLimitKey(at.p.Name)) {
		// Nothing is sent on the channel's slot: it goes back.
		if err := a.Limiter.Refund(context.WithoutCancel(ctx), at.channel); err != nil {
			at.log.Warn("could not give back the channel's rate-limit slot", zap.Error(err))
		}
		return answer(a.deferred(at.channel, "rate-limit", "no rate-limit slot of "+at.p.Name+" free"))
	}
	return nil
}

// deferred is the fast path's answer when it may not send now.
func (a *Activities) deferred(channel, reason, why string) workflows.DeliverResult {
	a.Metrics.FastPathDeferred.WithLabelValues(channel, reason).Inc()
	return workflows.DeliverResult{Outcome: workflows.OutcomeDeferred, Error: why}
}

// slotFreshness is how long a rate-limit slot may precede its send: one
// taken earlier (a slow database between the two) is replaced by a fresh
// one, so sends cannot bunch up past the limit.
const slotFreshness = 250 * time.Millisecond

// callMargin is kept free beyond the provider call's timeout at the end of
// an attempt: a wait for the rate limit gives up early enough that a slot it
// gets still leaves the whole call and its recording inside the attempt's
// deadline, so a long wait ends as NotAttempted, never as a timed-out attempt.
const callMargin = 2 * time.Second

// waitForSlot waits for the rate limit of key, a channel or a provider (not
// an attempt: nothing is sent meanwhile). While Redis is unreachable or
// hangs the limiter keeps waiting (it fails closed, each check bounded); a
// wait that outlasts the attempt's time (or SlotWait) ends as NotAttempted.
func (a *Activities) waitForSlot(ctx context.Context, key string) error {
	waitCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline.Add(-(a.Providers.MaxTimeout() + callMargin + a.recordPatience())))
		defer cancel()
	}
	if a.SlotWait > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(waitCtx, a.SlotWait)
		defer cancel()
	}
	waited, err := a.Limiter.Wait(waitCtx, key, nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return notAttempted(fmt.Errorf("waiting %s for the rate limit: %w", waited.Round(time.Millisecond), err))
	}
	a.Metrics.RateLimitWait.WithLabelValues(key).Observe(waited.Seconds())
	if waited > 0 {
		a.Metrics.RateLimitWaits.WithLabelValues(key).Inc()
	}
	return nil
}
