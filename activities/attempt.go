package activities

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// attempt is one Deliver call's state, filled in stage by stage.
type attempt struct {
	in workflows.DeliverInput
	id uuid.UUID

	// channel, route and candidates are route's: the channel, its whole
	// route, and the providers on it this attempt may try, in order.
	channel    string
	route      []*provider.Provider
	candidates []*provider.Provider

	// p is the provider admit chose; ticket is its breaker's admission (nil
	// without breakers).
	p      *provider.Provider
	ticket *breaker.Ticket

	// slotAt is when queueSlot took the channel's slot (zero on the fast
	// path); fastPathCall is set while the attempt holds a place in
	// FastPathCalls.
	slotAt       time.Time
	fastPathCall bool

	// n is the notification begin read; log carries its fields.
	n   store.Notification
	log *zap.Logger
	// addresses are where a profile's notification goes on its channel
	// (resolve): each of a push channel's tokens; nil for a notification
	// naming its address.
	addresses []string

	// sent is set once the provider call begins; started, elapsed and sr
	// are the call's.
	sent    bool
	started time.Time
	elapsed time.Duration
	sr      provider.Result
}

// stop ends an attempt before its send with Deliver's answer: a result
// (nothing was sent: skipped, deferred, unavailable and the like) or an
// error (NotAttempted, or the activity's own cancel).
type stop struct {
	res workflows.DeliverResult
	err error
}

// answer stops the attempt with res.
func answer(res workflows.DeliverResult) *stop { return &stop{res: res} }

// halt stops the attempt with err.
func halt(err error) *stop { return &stop{err: err} }

// gone is Deliver's answer when the notification no longer exists
// (retention deleted it while its run was open): the run ends.
func gone() workflows.DeliverResult {
	return workflows.DeliverResult{Outcome: workflows.OutcomeSuperseded, Error: "the notification no longer exists"}
}

// giveBack returns, when Deliver ends, what the attempt still holds: its
// place among the fast path's calls, and a half-open breaker's probe place
// it sent nothing with.
func (a *Activities) giveBack(ctx context.Context, at *attempt) {
	if at.fastPathCall {
		<-a.FastPathCalls
	}
	if !at.sent {
		a.release(ctx, at.ticket)
	}
}
