package workflows

import (
	"go.temporal.io/sdk/workflow"
)

// settleSent settles an attempt the provider took but has not confirmed
// (SENT): the run waits for its receipt and ends on the verdict, or, when the
// receipt says undelivered, goes on at once to the next provider on the route.
func (r *run) settleSent(ctx workflow.Context) next {
	verdict, err := r.awaitReceipt(ctx, r.attempt, r.last)
	switch {
	case err != nil:
		return ended(NotificationResult{}, err)
	case verdict == receiptCancelled:
		return ended(r.cancel(ctx, r.made()))
	case verdict == receiptFailed:
		r.last = DeliverResult{Outcome: OutcomePermanent, Provider: r.last.Provider, Error: r.view.LastError}
		return ended(r.fail(ctx, ReasonNoReceipt, r.made(), r.last))
	case verdict != receiptUndelivered:
		return ended(r.finish(ctx, Status(verdict), r.made()))
	}
	r.excluded, r.after, r.hops = append(r.excluded, r.last.Provider), r.last.Provider, 0
	if r.attempt == r.lastAttempt {
		return ended(r.fail(ctx, ReasonUndelivered, r.made(), DeliverResult{Error: r.view.LastError}))
	}
	return nextAttempt
}

// What waiting for a receipt came to, besides a terminal status.
const (
	receiptUndelivered = "undelivered"
	receiptFailed      = "failed-no-receipt"
	receiptCancelled   = "cancelled"
)

// awaitReceipt waits for the receipt of the attempt the provider took
// (SENT), racing a durable timer of last.AwaitReceipt, and records what it
// learnt. It answers the status the notification ends with (DELIVERED, or
// one that became terminal meanwhile), or receiptUndelivered (fail over),
// receiptFailed (silence means failure) or receiptCancelled.
func (r *run) awaitReceipt(ctx workflow.Context, attempt int, last DeliverResult) (string, error) {
	r.view.Status = StatusSent
	if err := r.upsert(ctx, StatusSent, attempt); err != nil {
		return "", err
	}
	// The timer is cancelled by the cancel signal (work), which ends the
	// wait; otherwise once the receipt is settled (the order recorded
	// histories have).
	timerCtx, cancelTimer := workflow.WithCancel(r.work)
	defer cancelTimer()
	timer := workflow.NewTimerWithOptions(timerCtx, last.AwaitReceipt, workflow.TimerOptions{
		Summary: "waiting for a receipt from " + last.Provider,
	})
	got, cancelled := r.receiveReceipt(ctx, timer, attempt, last)
	if cancelled {
		return receiptCancelled, nil
	}
	settle, verdict := r.judgeReceipt(got, attempt, last)
	var status Status
	if err := r.local(ctx, SettleReceiptActivity, "record the receipt: "+string(settle.Receipt), settle, &status); err != nil {
		return "", err
	}
	if status != settle.Next && status.Terminal() {
		return string(status), nil // terminal meanwhile: it stands
	}
	r.view.Status = StatusProcessing
	return verdict, nil
}

// receiveReceipt waits for the attempt's receipt until the timer fires
// (nil: none came) or a cancel arrives. A receipt applies to the
// attempt it names only: late ones, about an earlier attempt (one that timed
// out, one at another provider, or an earlier generation's), are dropped.
// Which receipts are dropped issues no command, so histories recorded before
// receipts named their attempt (Attempt zero, taken as before) replay
// unchanged.
func (r *run) receiveReceipt(ctx workflow.Context, timer workflow.Future, attempt int, last DeliverResult) (got *Receipt, cancelled bool) {
	receipts := workflow.GetSignalChannel(ctx, ReceiptSignal)
	for got == nil {
		timedOut := false
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(receipts, func(c workflow.ReceiveChannel, _ bool) {
			var rc Receipt
			c.Receive(ctx, &rc)
			if rc.Provider == last.Provider && (rc.Attempt == attempt || rc.Attempt == 0) {
				got = &rc
			}
		})
		sel.AddFuture(timer, func(workflow.Future) { timedOut = true })
		sel.Select(ctx)
		if r.view.CancelRequested {
			return nil, true
		}
		if timedOut {
			return nil, false
		}
	}
	return got, false
}

// judgeReceipt turns the receipt (nil: none came in time) into what the
// row records and what the run does next.
func (r *run) judgeReceipt(got *Receipt, attempt int, last DeliverResult) (SettleInput, string) {
	settle := SettleInput{NotificationID: r.in.NotificationID, Attempt: attempt, Next: StatusDelivered}
	verdict := string(StatusDelivered)
	switch {
	case got == nil && last.OnNoReceipt == ReceiptFailed:
		settle.Receipt, settle.Next, verdict = ReceiptNone, StatusSent, receiptFailed
		r.view.LastError = "no receipt within " + last.AwaitReceipt.String()
	case got == nil:
		settle.Receipt = ReceiptNone
	case got.Status == ReceiptDelivered:
		settle.Receipt = ReceiptDelivered
	default:
		settle.Receipt, settle.Reason, settle.Next, verdict = ReceiptFailed, got.Reason, StatusProcessing, receiptUndelivered
		r.view.LastError = "receipt from " + last.Provider + ": " + got.Status
		if got.Reason != "" {
			r.view.LastError += " (" + got.Reason + ")"
		}
	}
	return settle, verdict
}
