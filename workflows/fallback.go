package workflows

import (
	"errors"
	"strings"

	"go.temporal.io/sdk/workflow"
)

// errFellBack ends a channel's attempts, not the run: the notification
// moved on to its next channel (fallback), and the run's loop goes on
// there. It never leaves the workflow.
var errFellBack = errors.New("fell back to the next channel")

// fallsBack reports whether a channel that ended without a delivery for
// reason may hand the notification on to its next channel: only a profile's
// notification with more than one channel (NotificationInput.Fallback)
// does, and not once it expired.
func (r *run) fallsBack(reason string) bool {
	if !r.in.Fallback {
		return false
	}
	switch reason {
	case ReasonExhausted, ReasonPermanent, ReasonUndelivered, ReasonNoReceipt:
		return true
	}
	return false
}

// fallback asks for the notification's next channel (the Fallback local
// activity: its first channel after the one in hand with an address the
// person did not opt out of and that is not suppressed) and, when there is
// one, moves the run on to it: errFellBack. With none left it answers nil
// and the notification fails as its last channel did.
func (r *run) fallback(ctx workflow.Context, attempts int) error {
	var next FallbackResult
	err := r.local(ctx, FallbackActivity, "fall back from "+r.in.Channel, FallbackInput{
		NotificationID: r.in.NotificationID,
		Attempts:       attempts,
		Generation:     r.generation(),
	}, &next)
	if err != nil {
		return err
	}
	if next.Channel == "" {
		return nil
	}
	r.lines = append(r.lines, r.in.Channel+" ended without a delivery: falling back to "+next.Channel)
	r.useChannel(next.Channel)
	// The next channel's attempts have a budget of their own, numbered on.
	r.in.AttemptBase = attempts
	r.firstAttempt, r.lastAttempt = attempts+1, attempts+r.in.Retry.MaxAttempts
	r.attempt = r.firstAttempt
	r.after, r.hops, r.excluded, r.deferred = "", 0, nil, false
	r.in.FastPath = false
	if err := workflow.UpsertTypedSearchAttributes(ctx, SearchChannel.ValueSet(next.Channel)); err != nil {
		return err
	}
	return errFellBack
}

// useChannel points the run's attempts at channel's delivery task queue
// (the queues are named after their channel: deliver-sms, ...).
func (r *run) useChannel(channel string) {
	r.in.ActivityTaskQueue = strings.TrimSuffix(r.in.ActivityTaskQueue, r.in.Channel) + channel
	r.deliverOpts.TaskQueue = r.in.ActivityTaskQueue
	r.in.Channel = channel
}
