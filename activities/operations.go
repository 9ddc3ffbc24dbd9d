package activities

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Signaler sends a signal to a workflow; a Temporal client is one.
type Signaler interface {
	SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error
}

// Operation steps are bounded in time, so the workflow sees progress and a
// lost worker's step is taken up again soon (the heartbeat timeout).
const (
	operationStepTime = 10 * time.Second
	maxOperationPage  = 500
)

// OperationStep does pages of an operation for up to operationStepTime, at
// no more than its maxPerSecond notifications a second: each page is one
// transaction (store.RunPage) that acts on its notifications and moves the
// cursor and the counts, so a step that is retried after a crash goes on
// from the last committed page and does no item twice. After a page
// commits, the workflows of the notifications it cancelled while they
// waited or delivered hear the cancel signal; the cancel flag on their rows
// already stops them (a signal lost to a crash costs only promptness).
func (a *Activities) OperationStep(ctx context.Context, in workflows.OperationStepInput) (workflows.OperationStepResult, error) {
	id, op, err := a.operation(ctx, in.OperationID)
	if err != nil {
		return workflows.OperationStepResult{}, err
	}
	perSecond := max(op.MaxPerSecond, 1)
	limit := min(perSecond, maxOperationPage)
	log := a.Log.With(zap.String("operation_id", in.OperationID), zap.String("action", op.Action))
	var res workflows.OperationStepResult
	deadline := time.Now().Add(operationStepTime)
	charge := a.retryCharge(ctx, op, log)
	for time.Now().Before(deadline) {
		started := time.Now()
		n, refund, wait := charge.take(ctx, limit)
		if wait > 0 { // the tenant's quota is spent: wait for it, up to the step's end
			activity.RecordHeartbeat(ctx, res.Processed)
			if err := pause(ctx, min(wait, time.Until(deadline))); err != nil {
				return res, err
			}
			continue
		}
		page, err := store.RunPage(ctx, a.Pool, id, n)
		refund(n - page.Succeeded) // what the page did not retry, or all of it when it failed
		if ended, err := a.pageEnded(ctx, id, page, err, &res, log); ended || err != nil {
			return res, err
		}
		a.pageDone(ctx, op, page, &res, log)
		// The pace: a page of n takes at least n/perSecond seconds.
		if err := pause(ctx, time.Duration(float64(page.Items)/float64(perSecond)*float64(time.Second))-time.Since(started)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// operation reads the operation a step works on.
func (a *Activities) operation(ctx context.Context, opID string) (uuid.UUID, store.Operation, error) {
	id, err := uuid.Parse(opID)
	if err != nil {
		return id, store.Operation{}, temporal.NewNonRetryableApplicationError("bad operation id", "BadInput", err)
	}
	op, err := store.GetOperation(ctx, a.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return id, op, temporal.NewNonRetryableApplicationError("no operation "+opID, "NotFound", err)
	}
	return id, op, err
}

// pageEnded settles a page that ended the step: an error (a page the
// database refuses fails the operation, for no retry mends it; any other is
// the step's) or the operation's last page. ended is false for any other.
func (a *Activities) pageEnded(ctx context.Context, id uuid.UUID, page store.PageResult, err error, res *workflows.OperationStepResult, log *zap.Logger) (ended bool, _ error) {
	switch {
	case err != nil && store.DataError(err):
		log.Error("operation failed", zap.Error(err))
		if ferr := store.FailOperation(ctx, a.Pool, id, err.Error()); ferr != nil {
			return true, ferr
		}
		res.Done, res.Status = true, store.OperationFailed
		return true, nil
	case err != nil:
		return true, err
	case page.Done:
		res.Done, res.Status = true, page.Status
		log.Info("operation finished", zap.String("status", page.Status))
		return true, nil
	}
	return false, nil
}

// pageDone counts a committed page, signals the workflows it cancelled, and
// heartbeats the progress.
func (a *Activities) pageDone(ctx context.Context, op store.Operation, page store.PageResult, res *workflows.OperationStepResult, log *zap.Logger) {
	res.Processed += page.Items
	a.Metrics.OperationNotifications.WithLabelValues(op.Action, "succeeded").Add(float64(page.Succeeded))
	a.Metrics.OperationNotifications.WithLabelValues(op.Action, "skipped").Add(float64(page.Items - page.Succeeded))
	for _, it := range page.Cancelled {
		a.Metrics.Terminal.WithLabelValues("cancelled", string(it.Channel), string(it.Priority), "").Inc()
	}
	a.signalCancels(ctx, page.Signal, res.Processed, log)
	activity.RecordHeartbeat(ctx, res.Processed)
}

// pause waits d (nothing when d is not positive), or until ctx is done.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Signalling a page's workflows: signalConcurrency signals at once, each
// allowed callTimeout, so a full page (maxOperationPage) is signalled within
// about a minute even when every signal times out, inside the step's
// StartToClose; and a heartbeat every signalHeartbeatEvery meanwhile, far
// inside the step's heartbeat timeout, however long the signals take.
const (
	signalConcurrency    = 16
	signalHeartbeatEvery = time.Second
)

// signalCancels sends the cancel signal to the workflows of ids,
// heartbeating progress by the clock while it does; a workflow that is gone
// or not started yet needs none (the flag stops it).
func (a *Activities) signalCancels(ctx context.Context, ids []uuid.UUID, progress any, log *zap.Logger) {
	if a.Temporal == nil || len(ids) == 0 {
		return
	}
	work := make(chan uuid.UUID)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range min(signalConcurrency, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				a.signalCancel(ctx, id, log)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	beat := time.NewTicker(signalHeartbeatEvery)
	defer beat.Stop()
	for _, id := range ids {
		for queued := false; !queued; {
			select {
			case work <- id:
				queued = true
			case <-beat.C:
				activity.RecordHeartbeat(ctx, progress)
			}
		}
	}
	close(work)
	for {
		select {
		case <-done:
			return
		case <-beat.C:
			activity.RecordHeartbeat(ctx, progress)
		}
	}
}

func (a *Activities) signalCancel(ctx context.Context, id uuid.UUID, log *zap.Logger) {
	wfID := notification.WorkflowID(id.String())
	sctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err := a.Temporal.SignalWorkflow(sctx, wfID, "", workflows.CancelSignal, nil)
	var notFound *serviceerror.NotFound
	if err != nil && !errors.As(err, &notFound) {
		log.Warn("cancel signal not delivered; the notification's cancel flag still stops it",
			zap.String("notification_id", id.String()), zap.Error(err))
	}
}

// opCharge counts the notifications a retry operation accepts again
// against its tenant's acceptance quotas, page by page: a page takes its
// size from the quota first (no more than a quota's whole window), and
// gives back what it did not retry. A spent quota makes the operation wait
// for its window to reset (a per-day quota: the next UTC day; cancel the
// operation to stop it). Redis not answering leaves the quota unenforced,
// as on the API. A nil opCharge charges nothing.
type opCharge struct {
	q      *quota.Quota
	tenant string
	limits quota.Limits
	log    *zap.Logger
}

// retryCharge is the charge of op: nil for any action but retry, a tenant
// without quotas, a worker without Quotas, or an operation whose cancel
// was requested (its next page ends it).
func (a *Activities) retryCharge(ctx context.Context, op store.Operation, log *zap.Logger) *opCharge {
	if a.Quotas == nil || op.Action != store.ActionRetry || op.CancelRequestedAt != nil {
		return nil
	}
	t, err := store.GetTenant(ctx, a.Pool, op.TenantID)
	if err != nil {
		log.Warn("the tenant's quotas could not be read; this step's retries are not counted", zap.Error(err))
		return nil
	}
	var l quota.Limits
	if t.AcceptPerSec != nil {
		l.PerSecond = *t.AcceptPerSec
	}
	if t.AcceptPerDay != nil {
		l.PerDay = *t.AcceptPerDay
	}
	if l.None() {
		return nil
	}
	return &opCharge{q: a.Quotas, tenant: t.ID.String(), limits: l, log: log}
}

// take charges up to limit notifications: n is the page size to run, and
// refund gives back the part of n not retried. When the quota has no room
// at all, n is 0 and wait is how long until it has.
func (c *opCharge) take(ctx context.Context, limit int) (n int, refund func(unused int), wait time.Duration) {
	none := func(int) {}
	if c == nil {
		return limit, none, 0
	}
	for _, q := range []int{c.limits.PerSecond, c.limits.PerDay} {
		if q > 0 {
			limit = min(limit, q)
		}
	}
	d, err := c.q.Take(ctx, c.tenant, c.limits, limit)
	if err == nil && !d.Allowed { // take what is left of the windows, if anything
		left := limit
		for _, w := range d.Windows {
			left = min(left, w.Remaining)
		}
		if left < 1 {
			return 0, none, max(d.RetryAfter, 100*time.Millisecond)
		}
		limit = left
		d, err = c.q.Take(ctx, c.tenant, c.limits, limit)
		if err == nil && !d.Allowed {
			return 0, none, max(d.RetryAfter, 100*time.Millisecond)
		}
	}
	if err != nil {
		if !errors.Is(err, quota.ErrUnavailable) {
			c.log.Warn("tenant quota not enforced: Redis did not answer", zap.Error(err))
		}
		return limit, none, 0
	}
	return limit, func(unused int) {
		if unused < 1 {
			return
		}
		if err := c.q.Refund(context.WithoutCancel(ctx), c.tenant, c.limits, unused, d); err != nil {
			c.log.Warn("tenant quota not refunded", zap.Error(err))
		}
	}, 0
}
