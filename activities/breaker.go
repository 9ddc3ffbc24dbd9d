package activities

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// admit is Deliver's breaker admission, before anything else is touched:
// it chooses the provider, the first candidate whose breaker admits a send,
// and holds its ticket. When every breaker is open the answer is
// OutcomeUnavailable with how long until the first may admit, and the
// attempt waits (in the workflow, on a timer) having touched nothing.
func (a *Activities) admit(ctx context.Context, at *attempt) *stop {
	p, ticket, wait, err := a.choose(ctx, at.candidates)
	if err != nil {
		return halt(notAttempted(err))
	}
	if p == nil {
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeUnavailable, RetryAfter: wait,
			Error: "every provider of " + at.channel + " has its breaker open"})
	}
	at.p, at.ticket = p, ticket
	return nil
}

// choose picks the first candidate whose breaker admits a send. Without
// breakers (no providers file) that is the first. When none admits, p is
// nil and wait is how long until the first may.
func (a *Activities) choose(ctx context.Context, cands []*provider.Provider) (p *provider.Provider, t *breaker.Ticket, wait time.Duration, err error) {
	if a.Breakers == nil {
		return cands[0], nil, 0, nil
	}
	wait = -1
	for _, c := range cands {
		ticket, ok, w, err := a.Breakers.Admit(ctx, c.Name)
		if err != nil {
			return nil, nil, 0, err
		}
		if ok {
			return c, &ticket, 0, nil
		}
		if wait < 0 || w < wait {
			wait = w
		}
	}
	return nil, nil, wait, nil
}

// alternatives counts the candidates other than p whose breakers admit.
func (a *Activities) alternatives(ctx context.Context, cands []*provider.Provider, p *provider.Provider) int {
	n := 0
	for _, c := range cands {
		if c != p && (a.Breakers == nil || a.Breakers.Admits(ctx, c.Name)) {
			n++
		}
	}
	return n
}

// report is Deliver's stage after the send: it tells the provider's
// breaker how the send went. A call cancelled says nothing of the provider,
// so it only gives back a probe place. The breaker is best effort (a Redis
// that does not answer leaves it as it was).
func (a *Activities) report(ctx context.Context, at *attempt) {
	if at.ticket == nil || at.sr.Outcome == workflows.OutcomeCancelled {
		a.release(ctx, at.ticket)
		return
	}
	if err := a.Breakers.Report(context.WithoutCancel(ctx), *at.ticket, true, at.sr.ProviderFault, at.elapsed); err != nil {
		at.log.Warn("could not report to the provider's breaker", zap.Error(err))
	}
}

// release gives back a half-open breaker's probe place that sent nothing.
func (a *Activities) release(ctx context.Context, t *breaker.Ticket) {
	if t == nil || !t.Probe {
		return
	}
	if err := a.Breakers.Report(context.WithoutCancel(ctx), *t, false, false, 0); err != nil {
		a.Log.Warn("could not release a breaker probe", zap.String("provider", t.Provider), zap.Error(err))
	}
}
