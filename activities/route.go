package activities

import (
	"context"
	"errors"
	"slices"

	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// route is Deliver's first stage: it finds the attempt's channel and the
// providers on its route this attempt may try (candidates). With none left
// (each reported the notification undelivered) the notification is
// undeliverable: the answer is permanent, RouteExhausted.
func (a *Activities) route(ctx context.Context, at *attempt) *stop {
	at.channel = at.in.Channel
	if at.channel == "" { // scheduled by a worker from before the channel travelled with it
		channel, err := a.channelOf(ctx, at.id)
		if errors.Is(err, store.ErrNotFound) {
			return answer(gone())
		}
		if err != nil {
			return halt(notAttempted(err))
		}
		at.channel = channel
	}
	at.route = a.Providers.Route(at.channel)
	at.candidates = candidates(at.route, at.in.After, at.in.Exclude)
	if len(at.candidates) == 0 {
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomePermanent, RouteExhausted: true,
			Error: "every provider on the route reported it undelivered"})
	}
	return nil
}

// channelOf reads a notification's channel, bounded by callTimeout.
func (a *Activities) channelOf(ctx context.Context, id uuid.UUID) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	n, err := store.GetNotification(cctx, a.Pool, id)
	return string(n.Channel), err
}

// candidates is the route in the order this attempt tries it: starting
// after the provider the previous attempt failed at, without the excluded.
func candidates(route []*provider.Provider, after string, exclude []string) []*provider.Provider {
	start := 0
	for i, p := range route {
		if p.Name == after {
			start = i + 1
		}
	}
	out := make([]*provider.Provider, 0, len(route))
	for i := range route {
		p := route[(start+i)%len(route)]
		if !slices.Contains(exclude, p.Name) {
			out = append(out, p)
		}
	}
	return out
}
