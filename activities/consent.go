package activities

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// skip ends the attempt begun, and the notification, as SKIPPED with
// reason: its address is suppressed, its person opted out of its category,
// or none of its channels has an address. Nothing is sent, no attempt is
// counted, nothing is dead-lettered.
func (a *Activities) skip(ctx context.Context, at *attempt, reason string) *stop {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	status, err := store.Skip(cctx, a.Pool, at.id, at.in.Generation, at.in.Attempt, reason)
	cancel()
	if errors.Is(err, store.ErrNotFound) {
		return answer(gone())
	}
	if err != nil {
		return halt(notAttempted(err))
	}
	if status == notification.StatusSkipped {
		n := at.n
		a.Metrics.Terminal.WithLabelValues("skipped", string(n.Channel), string(n.Priority), reason).Inc()
		at.log.Info("notification skipped; nothing sent", zap.String("reason", reason))
	}
	return answer(workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: workflows.Status(status),
		Error: "skipped: " + reason})
}

// resolve is begin's step for a notification naming a recipient profile:
// it finds the channel the notification may go on now and its addresses
// (store.ResolveRecipient). On the channel in hand, the attempt goes on to
// them (each of a push channel's tokens); on another, nothing is sent and
// the workflow makes the same attempt there (OutcomeRerouted); on none, the
// notification is SKIPPED.
func (a *Activities) resolve(ctx context.Context, at *attempt) *stop {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := store.ResolveRecipient(cctx, a.Pool, at.n, false)
	if err != nil {
		return halt(notAttempted(err))
	}
	if !res.Found() {
		return a.skip(ctx, at, res.Refusal)
	}
	takeBack := 0
	if res.Channel != at.channel {
		takeBack = at.in.Attempt
	}
	if _, err := store.UseChannel(cctx, a.Pool, at.id, at.in.Generation, res.Channel, res.Addresses[0], takeBack); err != nil {
		return halt(notAttempted(err))
	}
	if res.Channel != at.channel {
		at.log.Info("the recipient's notification goes on another channel", zap.String("to", res.Channel))
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeRerouted, Channel: res.Channel})
	}
	at.n.Recipient, at.addresses = res.Addresses[0], res.Addresses
	return nil
}

// Fallback moves a profile's notification on from the channel in hand,
// which ended without a delivery, to the next of its channels it may go on
// (store.ResolveRecipient), and answers it; with none left it answers no
// channel and changes nothing.
func (a *Activities) Fallback(ctx context.Context, in workflows.FallbackInput) (workflows.FallbackResult, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return workflows.FallbackResult{}, err
	}
	n, err := store.GetNotification(ctx, a.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return workflows.FallbackResult{}, nil
	}
	if err != nil {
		return workflows.FallbackResult{}, err
	}
	if n.Status.Terminal() || (in.Generation != nil && n.Generation != *in.Generation) {
		return workflows.FallbackResult{}, nil
	}
	res, err := store.ResolveRecipient(ctx, a.Pool, n, true)
	if err != nil || !res.Found() {
		return workflows.FallbackResult{}, err
	}
	moved, err := store.UseChannel(ctx, a.Pool, id, in.Generation, res.Channel, res.Addresses[0], 0)
	if err != nil || !moved {
		return workflows.FallbackResult{}, err
	}
	a.Log.Info("notification falls back to its next channel", zap.String("notification_id", in.NotificationID),
		zap.String("from", string(n.Channel)), zap.String("to", res.Channel), zap.Int("attempts", in.Attempts))
	return workflows.FallbackResult{Channel: res.Channel}, nil
}
