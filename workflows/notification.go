package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// heartbeatTimeout is how soon a lost worker's attempt is noticed; the
// activity heartbeats every second, well within it, and a cancel reaches it
// on a heartbeat. It was 3 s: while Redis was out, every waiting
// notification's attempt came back NotAttempted at once and was scheduled
// again, and under that burst heartbeats reached Temporal late, so attempts
// that had sent nothing timed out and were counted (the fault suite's Redis
// scenarios, on the code before and after). 10 s absorbs such a stall.
const heartbeatTimeout = 10 * time.Second

// HeartbeatThrottle is the most a delivery worker holds back an attempt's
// heartbeats (its MaxHeartbeatThrottleInterval; the SDK's own default is
// 0.8 of heartbeatTimeout): a cancel reaches an attempt on a heartbeat's
// answer, so it arrives within about this long, as it did with the 3 s
// timeout.
const HeartbeatThrottle = 2 * time.Second

// Notification delivers one notification: after an optional scheduled wait,
// it attempts delivery until one attempt is delivered, one fails permanently,
// the attempts run out or expiresAt passes; a cancel signal stops it at any
// point. Each attempt is a single Deliver activity execution
// (MaximumAttempts 1): the workflow, not Temporal's activity retry, owns the
// backoff, so every attempt is visible and recorded, and the waits are
// durable timers.
//
// The run goes through its stages: wait for the schedule (wait.go), make an
// attempt (attempt.go), settle its outcome (settle.go; a receipt, receipt.go)
// into the same attempt again, the next one, or the end (end.go, where the
// row and the search attributes get the final status). Only the loop below
// moves on to the next attempt number.
func Notification(ctx workflow.Context, in NotificationInput) (NotificationResult, error) {
	r, err := newRun(ctx, in)
	if err != nil {
		return NotificationResult{}, err
	}
	if cancelled := r.waitForSchedule(ctx); cancelled {
		return r.cancel(ctx, 0)
	}
	for {
		res, err := r.deliver(ctx)
		if !errors.Is(err, errFellBack) {
			return res, err
		}
	}
}

// deliver makes the attempts on the channel in hand until one ends the run,
// or the channel (errFellBack: the run goes on with the next one).
func (r *run) deliver(ctx workflow.Context) (NotificationResult, error) {
	for r.attempt <= r.lastAttempt {
		if r.expired(ctx, 0) {
			return r.fail(ctx, ReasonExpired, r.madeBefore(), r.last)
		}
		attemptErr, err := r.makeAttempt(ctx)
		if err != nil {
			return NotificationResult{}, err
		}
		n := r.settle(ctx, attemptErr)
		if n.end {
			return n.result, n.err
		}
		if !n.again {
			r.attempt++
		}
	}
	return r.fail(ctx, ReasonExhausted, r.lastAttempt, r.last)
}

// run is one workflow execution's state: its input, what the status query
// shows, and where the attempt loop stands.
type run struct {
	in   NotificationInput
	wfID string
	view StatusView
	// provider is the provider of the latest attempt.
	provider string
	// reason is why the run failed the notification, once it did.
	reason string

	// work is cancelled by the cancel signal: it ends a timer at once and
	// cancels an in-flight attempt (the activity aborts its HTTP call).
	work workflow.Context
	// deliverOpts run an attempt on the channel's activity task queue,
	// localOpts on the fast path (each attempt adds its summary).
	deliverOpts workflow.ActivityOptions
	localOpts   workflow.LocalActivityOptions
	// lines are the latest attempts, as the current details list them.
	lines []string

	// attempt is the number of the attempt in hand; a retried notification
	// (AttemptBase > 0) gets a fresh budget of attempts, numbered on after
	// the ones made before, from firstAttempt to lastAttempt.
	attempt, firstAttempt, lastAttempt int
	// last is what the attempt in hand came to.
	last DeliverResult
	// waits counts the attempts that could not begin (NotAttempted): they
	// are made again after a wait, and spend nothing. waitsHere counts this
	// run's, which bound its history.
	waits, waitsHere int
	// deferred: the fast path sent nothing; the attempt goes through the
	// channel's activity task queue.
	deferred bool
	// after is the provider the last attempt failed at (the next one starts
	// after it on the route), hops the failovers made in a row without a
	// backoff, excluded the providers whose receipt said undelivered.
	after    string
	hops     int
	excluded []string
	// wake is the wake signal's channel (WakeSignal); rehold is set after
	// a hold, whose next attempt goes on the fast path.
	wake   workflow.ReceiveChannel
	rehold bool
}

// newRun sets up a run: its status query, the cancel signal's handler, and
// the attempt contexts; a run continued from another resumes its count.
func newRun(ctx workflow.Context, in NotificationInput) (*run, error) {
	r := &run{in: in, wfID: workflow.GetInfo(ctx).WorkflowExecution.ID, view: StatusView{Status: StatusProcessing}}
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (StatusView, error) { return r.view, nil }); err != nil {
		return nil, err
	}
	work, cancelWork := workflow.WithCancel(ctx)
	r.work = work
	r.wake = workflow.GetSignalChannel(ctx, WakeSignal)
	workflow.Go(ctx, func(gctx workflow.Context) {
		workflow.GetSignalChannel(gctx, CancelSignal).Receive(gctx, nil)
		r.view.CancelRequested = true
		cancelWork()
	})
	r.deliverOpts = workflow.ActivityOptions{
		TaskQueue:           in.ActivityTaskQueue,
		StartToCloseTimeout: in.AttemptTimeout,
		HeartbeatTimeout:    heartbeatTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		WaitForCancellation: true,
	}
	r.localOpts = workflow.LocalActivityOptions{
		StartToCloseTimeout: in.AttemptTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	}
	r.firstAttempt, r.lastAttempt = in.AttemptBase+1, in.AttemptBase+in.Retry.MaxAttempts
	r.attempt = r.firstAttempt
	if in.Resume != nil {
		r.attempt, r.waits, r.view.LastError = in.Resume.Attempt, in.Resume.Waits, in.Resume.LastError
	}
	return r, nil
}

// made is the count of attempts made when the attempt in hand was made (it
// reached a provider, or failed trying); madeBefore, when it was not (it sent
// nothing: expired before it, skipped, superseded, or no provider left).
func (r *run) made() int       { return r.attempt }
func (r *run) madeBefore() int { return r.attempt - 1 }

// generation is the run's generation, as the activities check it.
func (r *run) generation() *int {
	g := r.in.Generation
	return &g
}

// expired reports whether expiresAt is passed, or will be after wait.
func (r *run) expired(ctx workflow.Context, wait time.Duration) bool {
	return r.in.ExpiresAt != nil && !workflow.Now(ctx).Add(wait).Before(*r.in.ExpiresAt)
}

// continueAsNew ends this run and starts the next one where it stands.
// The cancel signal is not lost: the request is on the row too, and the next
// attempt's Deliver finds it.
func (r *run) continueAsNew(ctx workflow.Context, resume Resume) (NotificationResult, error) {
	in := r.in
	in.Resume, in.FastPath = &resume, false
	return NotificationResult{}, workflow.NewContinueAsNewError(ctx, NotificationWorkflow, in)
}

func (r *run) maxWaitsPerRun() int {
	if r.in.MaxWaitsPerRun > 0 {
		return r.in.MaxWaitsPerRun
	}
	return DefaultMaxWaitsPerRun
}
