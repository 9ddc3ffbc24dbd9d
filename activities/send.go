package activities

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// send is Deliver's provider call: from here on the attempt is made, and
// counts, whatever the answer.
func (a *Activities) send(ctx context.Context, at *attempt) {
	at.started = time.Now()
	at.sent = true
	headers := a.listUnsubscribe(ctx, at.n)
	if len(at.addresses) > 1 {
		at.sr = a.fanOut(ctx, at, headers)
	} else {
		at.sr = a.call(ctx, at.p, at.n, at.in.Attempt, headers)
		a.suppressRefused(ctx, at, at.n.Recipient, at.sr)
	}
	at.elapsed = time.Since(at.started)
}

// call sends the attempt to p, its payload carrying a stable webhook-id.
// While the call lasts longer than cancelPoll it also watches the row for a
// cancel request, so a cancel aborts the call even before its signal reaches
// the workflow (a fast-path attempt runs inside a workflow task, which takes
// the signal only when the task ends). A delivery is a delivery, whatever
// happens to ctx after the provider took it.
func (a *Activities) call(ctx context.Context, p *provider.Provider, n store.Notification, attempt int, headers map[string]string) provider.Result {
	payload := n.Payload(attempt)
	payload.MessageID = notification.MessageID(payload.ID, attempt) // what a receipt names
	body, err := json.Marshal(payload)
	if err != nil {
		return provider.Result{Outcome: workflows.OutcomePermanent, Error: "encoding payload: " + err.Error()}
	}
	callCtx, cancelCall := context.WithCancelCause(ctx)
	defer cancelCall(nil)
	done := make(chan struct{})
	defer close(done)
	go a.watchCancel(callCtx, n.ID, done, cancelCall)

	m := provider.Message{NotificationID: n.ID.String(), Attempt: attempt, Channel: string(n.Channel), Recipient: n.Recipient,
		Content: n.Content, Payload: body, Headers: headers}
	if n.Subject != nil {
		m.Subject = *n.Subject
	}
	if n.HTML != nil {
		m.HTML = *n.HTML
	}
	res := p.Sender.Send(callCtx, m)
	if res.Outcome != workflows.OutcomeDelivered && callCtx.Err() != nil {
		// Aborted by a cancel (through Temporal or on the row); the
		// provider may have seen the request, but it did not answer.
		return provider.Result{Outcome: workflows.OutcomeCancelled, Error: "cancelled during the provider call"}
	}
	return res
}

// cancelPoll is how often a provider call still in flight checks the row for
// a cancel request; calls that answer sooner never check.
const cancelPoll = 500 * time.Millisecond

// watchCancel polls the notification's cancel request every cancelPoll until
// done, and aborts the call when one is found.
func (a *Activities) watchCancel(ctx context.Context, id uuid.UUID, done <-chan struct{}, abort context.CancelCauseFunc) {
	t := time.NewTicker(cancelPoll)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		requested, err := store.CancelRequested(cctx, a.Pool, id)
		cancel()
		if err == nil && requested {
			abort(errCancelRequested)
			return
		}
	}
}

// errCancelRequested is the cause a call aborted by a cancel request on the
// row ends with.
var errCancelRequested = errors.New("cancel requested")
