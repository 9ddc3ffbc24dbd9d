package activities

import (
	"context"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Deliver makes one delivery attempt: it chooses the provider, takes the
// rate-limit slot (waiting for it is not an attempt), marks the notification
// PROCESSING (or finds it terminal or expired and sends nothing), sends it
// with a stable webhook-id, and records the attempt with its status change
// in one statement. A provider failure is a result, not an error.
//
// Each stage is a function of its own, in the order below. Trouble before
// the send (Redis, which the limiter fails closed on, or PostgreSQL
// unreachable or hanging) sends nothing and counts nothing: Deliver answers
// a NotAttempted error, which the workflow retries without spending an
// attempt. Once the send was made, the attempt is recorded or handed to the
// workflow to record (record), never sent again. The activity heartbeats
// from start to end (keepAlive), so a dependency that hangs rather than
// refuses costs time, not attempts.
func (a *Activities) Deliver(ctx context.Context, in workflows.DeliverInput) (workflows.DeliverResult, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return workflows.DeliverResult{}, err
	}
	defer keepAlive(ctx)()
	at := &attempt{in: in, id: id}
	defer a.giveBack(ctx, at)

	// Before the send, each stage may end the attempt with Deliver's answer.
	for _, stage := range []func(context.Context, *attempt) *stop{
		a.route,     // the providers this attempt may try
		a.admit,     // the first of them whose breaker admits a send
		a.queueSlot, // through the queue: the channel's rate-limit slot
		a.begin,     // the row: PROCESSING, or why nothing is sent
		a.hold,      // the person's side: ordering, digest, quiet hours, throttle
		a.sendSlot,  // the slots taken just before the send
	} {
		if s := stage(ctx, at); s != nil {
			return s.res, s.err
		}
	}
	a.send(ctx, at)   // the provider call
	a.report(ctx, at) // its breaker learns how it went
	return a.record(ctx, at, a.result(at))
}
