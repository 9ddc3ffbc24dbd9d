package activities

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
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

// fanOut sends a profile's push notification to each of its tokens, in
// the profile's order: one attempt, delivered when a token was taken. A
// token the provider says is dead is suppressed. With none taken, the
// attempt is retried when one of them may be later, else it failed for
// good; its result is the first token's of that kind.
func (a *Activities) fanOut(ctx context.Context, at *attempt, headers map[string]string) provider.Result {
	var results []provider.Result
	for _, token := range at.addresses {
		n := at.n
		n.Recipient = token
		res := a.call(ctx, at.p, n, at.in.Attempt, headers)
		a.suppressRefused(ctx, at, token, res)
		if res.Outcome == workflows.OutcomeCancelled {
			return res
		}
		results = append(results, res)
	}
	for _, outcome := range []workflows.Outcome{workflows.OutcomeDelivered, workflows.OutcomeRetry} {
		for _, res := range results {
			if res.Outcome == outcome {
				return res
			}
		}
	}
	return results[0]
}

// suppressRefused adds address to the tenant's suppression list when the
// provider said it is dead or refused (res.Suppress): a mailbox the mail
// server does not know, a number that unsubscribed or is not one, a push
// token no longer registered. Its next notification is SKIPPED.
func (a *Activities) suppressRefused(ctx context.Context, at *attempt, address string, res provider.Result) {
	if res.Suppress == "" {
		return
	}
	// The attempt's own ctx may be ending (a cancel after the answer):
	// what the provider said stands.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if err := store.Suppress(cctx, a.Pool, at.n.TenantID, string(at.n.Channel), address, res.Suppress, &at.id); err != nil {
		at.log.Warn("could not add the refused address to the suppression list", zap.String("reason", res.Suppress), zap.Error(err))
		return
	}
	a.Metrics.Suppressed.WithLabelValues(string(at.n.Channel), res.Suppress).Inc()
	at.log.Info("the provider refused the address; suppressed", zap.String("reason", res.Suppress))
}

// listUnsubscribe is the List-Unsubscribe header fields (RFC 2369, RFC
// 8058's one-click) of an email in a category that is not critical, when
// the public base URL is set; nil otherwise. An email with no category is
// transactional and carries none.
func (a *Activities) listUnsubscribe(ctx context.Context, n store.Notification) map[string]string {
	if a.Unsubscribe == nil || a.PublicBaseURL == "" || n.Channel != notification.Email || n.Category == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := store.GetCategory(cctx, a.Pool, n.TenantID, *n.Category)
	switch {
	case err == nil && c.Critical:
		return nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		// Sent without the link rather than not at all: the person can
		// still reply or complain, and the next email carries it.
		a.Log.Warn("could not read the email's category; sent without List-Unsubscribe", zap.String("notification_id", n.ID.String()), zap.Error(err))
		return nil
	}
	return a.Unsubscribe.Headers(a.PublicBaseURL, a.UnsubscribeMailto, unsubscribe.Token{
		TenantID: n.TenantID, Channel: string(n.Channel), Address: n.Recipient, Category: *n.Category,
	})
}
