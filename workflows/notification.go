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
func Notification(ctx workflow.Context, in NotificationInput) (NotificationResult, error) {
	r := &run{in: in, wfID: workflow.GetInfo(ctx).WorkflowExecution.ID, view: StatusView{Status: StatusProcessing}}
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (StatusView, error) { return r.view, nil }); err != nil {
		return NotificationResult{}, err
	}

	// work is cancelled by the cancel signal: it ends a timer at once and
	// cancels an in-flight attempt (the activity aborts its HTTP call).
	work, cancelWork := workflow.WithCancel(ctx)
	workflow.Go(ctx, func(gctx workflow.Context) {
		workflow.GetSignalChannel(gctx, CancelSignal).Receive(gctx, nil)
		r.view.CancelRequested = true
		cancelWork()
	})

	if in.ScheduledAt != nil && in.Resume == nil {
		if wait := in.ScheduledAt.Sub(workflow.Now(ctx)); wait > 0 {
			r.view.Status = StatusScheduled
			_ = workflow.Sleep(work, wait)
			if r.view.CancelRequested {
				return r.cancel(ctx, 0)
			}
			r.view.Status = StatusProcessing
		}
	}

	deliverCtx := workflow.WithActivityOptions(work, workflow.ActivityOptions{
		TaskQueue:           in.ActivityTaskQueue,
		StartToCloseTimeout: in.AttemptTimeout,
		HeartbeatTimeout:    heartbeatTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		WaitForCancellation: true,
	})
	localCtx := workflow.WithLocalActivityOptions(work, workflow.LocalActivityOptions{
		StartToCloseTimeout: in.AttemptTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var last DeliverResult
	// waits counts the attempts that could not begin (NotAttempted): they
	// are made again after a wait, and spend nothing. waitsHere counts this
	// run's, which bound its history.
	// A retried notification (AttemptBase > 0) gets a fresh budget of
	// attempts, numbered on after the ones made before.
	firstAttempt, lastAttempt := in.AttemptBase+1, in.AttemptBase+in.Retry.MaxAttempts
	first, waits, waitsHere := firstAttempt, 0, 0
	if in.Resume != nil {
		first, waits, r.view.LastError = in.Resume.Attempt, in.Resume.Waits, in.Resume.LastError
	}
	// deferred: the fast path sent nothing; the attempt goes through the
	// channel's activity task queue.
	deferred := false
	// after is the provider the last attempt failed at (the next one starts
	// after it on the route), hops the failovers made in a row without a
	// backoff, excluded the providers whose receipt said undelivered.
	after, hops := "", 0
	var excluded []string
	for attempt := first; attempt <= lastAttempt; attempt++ {
		if r.expired(ctx, 0) {
			return r.fail(ctx, ReasonExpired, attempt-1, last)
		}
		r.view.Attempts, r.view.NextAttemptAt = attempt, nil
		last = DeliverResult{}
		req := DeliverInput{NotificationID: in.NotificationID, Attempt: attempt, Retry: in.Retry, Channel: in.Channel,
			After: after, Exclude: excluded, AttemptBase: in.AttemptBase, Generation: r.generation()}
		var future workflow.Future
		if attempt == firstAttempt && in.FastPath && waits == 0 && !deferred {
			req.FastPath = true
			future = workflow.ExecuteLocalActivity(localCtx, DeliverActivity, req)
		} else {
			future = workflow.ExecuteActivity(deliverCtx, DeliverActivity, req)
		}
		err := future.Get(work, &last)
		if err == nil && last.Unrecorded != nil {
			if err := r.record(ctx, *last.Unrecorded); err != nil {
				return NotificationResult{}, err
			}
		}
		if r.view.CancelRequested {
			return r.cancel(ctx, attempt)
		}
		unavailable := err == nil && last.Outcome == OutcomeUnavailable
		if err != nil && isNotAttempted(err) || unavailable {
			// Nothing was sent: Redis or PostgreSQL was unreachable before
			// the attempt began, or every provider's breaker is open. Wait,
			// then make the same attempt again; an outage spends no attempt
			// and does not end in FAILED.
			waits++
			waitsHere++
			var wait time.Duration
			var why string
			if unavailable {
				// Until a breaker may half-open, spread a little so the
				// waiting notifications do not all ask at once.
				spread := time.Duration(jitterFraction(r.wfID, waits) * float64(last.RetryAfter/5))
				wait, why = min(max(last.RetryAfter+spread, minUnavailableWait), maxUnattemptedWait), last.Error
			} else {
				wait, why = min(Backoff(r.wfID, waits, in.Retry, 0), maxUnattemptedWait), err.Error()
			}
			if r.expired(ctx, wait) {
				return r.fail(ctx, ReasonExpired, attempt-1, last)
			}
			workflow.GetLogger(ctx).Warn("delivery attempt could not begin; trying again", "attempt", attempt, "error", why)
			r.view.LastError = why
			// The status query shows the wait either way; the row is
			// written only when every breaker is open. While Redis or
			// PostgreSQL is out nothing was attempted and the row keeps
			// what it showed: with a write per short wait of every waiting
			// notification, the fault suite's Redis outages saw attempts
			// miss their heartbeats and be spent (cause not pinned down).
			r.waitRetrying(ctx, work, wait, !unavailable)
			if r.view.CancelRequested {
				return r.cancel(ctx, attempt-1)
			}
			if waitsHere >= r.maxWaitsPerRun() || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
				return r.continueAsNew(ctx, Resume{Attempt: attempt, Waits: waits, LastError: r.view.LastError})
			}
			attempt--
			continue
		}
		if err != nil {
			// The attempt did not report back (worker lost, timeout, activity
			// error): it counts as a retryable failure.
			workflow.GetLogger(ctx).Warn("delivery attempt did not complete", "attempt", attempt, "error", err)
			last = DeliverResult{Outcome: OutcomeRetry, Error: err.Error()}
		}
		if last.Outcome == OutcomeDeferred {
			deferred = true
			attempt--
			continue
		}
		r.view.LastError = last.Error
		if last.Provider != "" {
			r.provider = last.Provider
		}
		switch last.Outcome {
		case OutcomeDelivered:
			return r.finish(ctx, StatusDelivered, attempt)
		case OutcomeSent:
			switch verdict, err := r.awaitReceipt(ctx, work, attempt, last); {
			case err != nil:
				return NotificationResult{}, err
			case verdict == receiptCancelled:
				return r.cancel(ctx, attempt)
			case verdict == receiptFailed:
				last = DeliverResult{Outcome: OutcomePermanent, Provider: last.Provider, Error: r.view.LastError}
				return r.fail(ctx, ReasonNoReceipt, attempt, last)
			case verdict != receiptUndelivered:
				return r.finish(ctx, Status(verdict), attempt)
			}
			// Undelivered: the next attempt goes to the next provider at once.
			excluded, after, hops = append(excluded, last.Provider), last.Provider, 0
			if attempt == lastAttempt {
				return r.fail(ctx, ReasonUndelivered, attempt, DeliverResult{Error: r.view.LastError})
			}
			continue
		case OutcomeSkipped:
			return r.finish(ctx, last.Status, attempt-1)
		case OutcomePermanent:
			if last.RouteExhausted {
				return r.fail(ctx, ReasonUndelivered, attempt-1, last)
			}
			return r.fail(ctx, ReasonPermanent, attempt, last)
		case OutcomeExpired:
			return r.fail(ctx, ReasonExpired, attempt-1, last)
		case OutcomeCancelled:
			// Deliver saw the cancel request before its signal arrived.
			r.view.CancelRequested = true
			return r.cancel(ctx, attempt)
		case OutcomeSuperseded:
			// Retried since, or gone: nothing to do, nothing to write.
			return r.superseded(ctx, attempt-1)
		}
		if attempt == lastAttempt {
			break
		}
		after = last.Provider
		if last.Alternatives > hops {
			// Another provider on the route admits sends: go there now
			// rather than wait; a round of the route ends in a backoff.
			hops++
			continue
		}
		hops = 0
		wait := Backoff(r.wfID, attempt-in.AttemptBase, in.Retry, last.RetryAfter)
		if r.expired(ctx, wait) {
			// No attempt could start before expiresAt: fail now, not later.
			return r.fail(ctx, ReasonExpired, attempt, last)
		}
		if err := r.upsert(ctx, StatusRetrying, attempt); err != nil {
			return NotificationResult{}, err
		}
		// The attempt's record showed the wait already, unless the attempt
		// did not report back or the route had a provider left to try.
		r.waitRetrying(ctx, work, wait, last.Retrying)
		if r.view.CancelRequested {
			return r.cancel(ctx, attempt)
		}
	}
	return r.fail(ctx, ReasonExhausted, lastAttempt, last)
}

// maxUnattemptedWait caps the wait before an attempt that could not begin
// is made again: the outage may end any moment.
const maxUnattemptedWait = 30 * time.Second

// minUnavailableWait is the shortest wait for a breaker to admit again.
const minUnavailableWait = 200 * time.Millisecond

// retryingRowChange versions the marking of the notification's row as
// RETRYING, with the time of the next attempt, before a wait the attempt's
// own record did not show (a failover round, an attempt that did not report
// back, an outage, every breaker open). Histories from before have no such
// local activity.
const retryingRowChange = "retrying-row"

// waitRetrying waits wait before the next attempt, showing RETRYING and its
// time in the status query and, unless shown already, on the row (best
// effort: a row that cannot be written now keeps what it showed). A cancel
// ends the wait.
func (r *run) waitRetrying(ctx, work workflow.Context, wait time.Duration, shown bool) {
	next := workflow.Now(ctx).Add(wait)
	r.view.Status, r.view.NextAttemptAt = StatusRetrying, &next
	if !shown && workflow.GetVersion(ctx, retryingRowChange, workflow.DefaultVersion, 1) == 1 {
		_ = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(work, workflow.LocalActivityOptions{
			StartToCloseTimeout: 5 * time.Second,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
		}), MarkRetryingActivity, RetryingInput{NotificationID: r.in.NotificationID, Generation: r.generation(), NextAttemptAt: next}).Get(work, nil)
	}
	_ = workflow.Sleep(work, wait)
	r.view.Status, r.view.NextAttemptAt = StatusProcessing, nil
}

// generation is the run's generation, as the activities check it.
func (r *run) generation() *int {
	g := r.in.Generation
	return &g
}

// isNotAttempted reports whether a Deliver error says nothing was sent.
func isNotAttempted(err error) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == ErrNotAttempted
}

// run is one workflow execution's state.
type run struct {
	in   NotificationInput
	wfID string
	view StatusView
	// provider is the provider of the latest attempt.
	provider string
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
// receiptFailed (silence means failure) or receiptCancelled. A receipt
// applies to the attempt it names only: late ones, about an earlier attempt
// (one that timed out, one at another provider, or an earlier
// generation's), are dropped. Which receipts are dropped issues no command,
// so histories recorded before receipts named their attempt (Attempt zero,
// taken as before) replay unchanged.
func (r *run) awaitReceipt(ctx, work workflow.Context, attempt int, last DeliverResult) (string, error) {
	r.view.Status = StatusSent
	if err := r.upsert(ctx, StatusSent, attempt); err != nil {
		return "", err
	}
	// The timer is cancelled by the cancel signal (work), which ends the wait.
	timerCtx, cancelTimer := workflow.WithCancel(work)
	defer cancelTimer()
	timer := workflow.NewTimer(timerCtx, last.AwaitReceipt)
	receipts := workflow.GetSignalChannel(ctx, ReceiptSignal)
	var got *Receipt
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
			return receiptCancelled, nil
		}
		if timedOut {
			break
		}
	}
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
	var status Status
	if err := r.local(ctx, SettleReceiptActivity, settle, &status); err != nil {
		return "", err
	}
	if status != settle.Next && status.Terminal() {
		return string(status), nil // terminal meanwhile: it stands
	}
	r.view.Status = StatusProcessing
	return verdict, nil
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

// bookkeepingChange versions where Fail and Cancel run: local activities in
// the workflow's own task now, activities on the channel's rate-limited
// delivery task queue before (where a cancel or a FAILED mark waited behind
// the whole backlog and spent rate slots). Histories from before keep the
// activity.
const bookkeepingChange = "bookkeeping-local"

// bookkeep runs one of the activities that must reach a terminal state:
// they retry until they succeed, and run on ctx, which the cancel signal
// does not cancel.
func (r *run) bookkeep(ctx workflow.Context, name string, arg, result any) error {
	if workflow.GetVersion(ctx, bookkeepingChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:           r.in.ActivityTaskQueue,
			StartToCloseTimeout: 30 * time.Second,
			RetryPolicy:         bookkeepingRetry,
		}), name, arg).Get(ctx, result)
	}
	return r.local(ctx, name, arg, result)
}

// local runs a bookkeeping activity as a local activity: no task queue, no
// rate limit, no extra workflow task.
func (r *run) local(ctx workflow.Context, name string, arg, result any) error {
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         bookkeepingRetry,
	}), name, arg).Get(ctx, result)
}

var bookkeepingRetry = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    time.Minute,
}

// record stores an attempt Deliver made but could not record.
func (r *run) record(ctx workflow.Context, a AttemptRecord) error {
	return r.local(ctx, RecordAttemptActivity, a, nil)
}

// fail dead-letters the notification and marks it FAILED. If the row became
// terminal meanwhile (say, cancelled), that status stands and is reported.
func (r *run) fail(ctx workflow.Context, reason string, attempts int, last DeliverResult) (NotificationResult, error) {
	var status Status
	err := r.bookkeep(ctx, FailActivity, FailInput{
		NotificationID: r.in.NotificationID,
		Channel:        r.in.Channel,
		Reason:         reason,
		Attempts:       attempts,
		LastStatusCode: last.StatusCode,
		LastError:      last.Error,
		Generation:     r.generation(),
	}, &status)
	if err != nil {
		return NotificationResult{}, err
	}
	return r.finish(ctx, status, attempts)
}

// cancel marks the notification CANCELLED (unless it is already terminal,
// whose status then stands).
func (r *run) cancel(ctx workflow.Context, attempts int) (NotificationResult, error) {
	var status Status
	err := r.bookkeep(ctx, CancelActivity, CancelInput{
		NotificationID: r.in.NotificationID,
		Attempts:       attempts,
		Generation:     r.generation(),
	}, &status)
	if err != nil {
		return NotificationResult{}, err
	}
	return r.finish(ctx, status, attempts)
}

// superseded ends a run that no longer owns its notification (retried
// since, or gone): nothing is written to it.
func (r *run) superseded(ctx workflow.Context, attempts int) (NotificationResult, error) {
	workflow.GetLogger(ctx).Info("the notification is no longer this run's; ending", "generation", r.in.Generation)
	return r.finish(ctx, StatusSuperseded, attempts)
}

// finish records the terminal status as search attributes (in the same
// workflow task as completion, so it costs no extra round trip).
func (r *run) finish(ctx workflow.Context, status Status, attempts int) (NotificationResult, error) {
	r.view.Status, r.view.Attempts, r.view.NextAttemptAt = status, attempts, nil
	if err := r.upsert(ctx, status, attempts); err != nil {
		return NotificationResult{}, err
	}
	return NotificationResult{Status: status, Attempts: attempts}, nil
}

func (r *run) upsert(ctx workflow.Context, status Status, attempts int) error {
	updates := []temporal.SearchAttributeUpdate{
		SearchStatus.ValueSet(string(status)),
		SearchAttempts.ValueSet(int64(attempts)),
	}
	if r.provider != "" {
		updates = append(updates, SearchProvider.ValueSet(r.provider))
	}
	return workflow.UpsertTypedSearchAttributes(ctx, updates...)
}
