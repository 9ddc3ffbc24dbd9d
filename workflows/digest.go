package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Digest gathers one digest: its members join it in PostgreSQL (each
// member's own workflow waits, SCHEDULED, for the digest's message to end);
// this run waits for the window to close, or for the member that filled
// it (the flush signal), then flushes it: the members not cancelled become
// one message, a notification of its own that the outbox hands on like any
// other, whose workflow ends the members as it ends. A digest whose every
// member was cancelled sends nothing.
func Digest(ctx workflow.Context, in DigestInput) (DigestFlushResult, error) {
	flush := workflow.GetSignalChannel(ctx, DigestFlushSignal)
	workflow.SetCurrentDetails(ctx, "**gathering** · window closes at "+in.ClosesAt.UTC().Format(time.TimeOnly)+" UTC")
	if wait := in.ClosesAt.Sub(workflow.Now(ctx)); wait > 0 {
		timerCtx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimerWithOptions(timerCtx, wait, workflow.TimerOptions{
			Summary: "digest window closes " + in.ClosesAt.UTC().Format("15:04:05") + " UTC",
		})
		full := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.AddReceive(flush, func(c workflow.ReceiveChannel, _ bool) {
			c.Receive(ctx, nil)
			full = true
		})
		sel.Select(ctx)
		if full {
			cancelTimer()
		}
	}
	var res DigestFlushResult
	err := workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		Summary:             "flush: make the digest's message",
	}), FlushDigestActivity, in).Get(ctx, &res)
	if err != nil {
		return res, err
	}
	if res.Items == 0 {
		workflow.SetCurrentDetails(ctx, "**flushed** · every member was cancelled: nothing sent")
	} else {
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("**flushed** · %d item(s) in message %s", res.Items, in.DigestID))
	}
	return res, nil
}
