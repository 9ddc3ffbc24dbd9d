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

	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/store"
	"dispatch-engine/workflows"
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
	id, err := uuid.Parse(in.OperationID)
	if err != nil {
		return workflows.OperationStepResult{}, temporal.NewNonRetryableApplicationError("bad operation id", "BadInput", err)
	}
	op, err := store.GetOperation(ctx, a.Pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return workflows.OperationStepResult{}, temporal.NewNonRetryableApplicationError("no operation "+in.OperationID, "NotFound", err)
	}
	if err != nil {
		return workflows.OperationStepResult{}, err
	}
	perSecond := max(op.MaxPerSecond, 1)
	limit := min(perSecond, maxOperationPage)
	log := a.Log.With(zap.String("operation_id", in.OperationID), zap.String("action", op.Action))
	var res workflows.OperationStepResult
	deadline := time.Now().Add(operationStepTime)
	for time.Now().Before(deadline) {
		started := time.Now()
		page, err := store.RunPage(ctx, a.Pool, id, limit)
		if err != nil && store.DataError(err) {
			// The database refuses the page itself: no retry mends it.
			log.Error("operation failed", zap.Error(err))
			if ferr := store.FailOperation(ctx, a.Pool, id, err.Error()); ferr != nil {
				return res, ferr
			}
			res.Done, res.Status = true, store.OperationFailed
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if page.Done {
			res.Done, res.Status = true, page.Status
			log.Info("operation finished", zap.String("status", page.Status))
			return res, nil
		}
		res.Processed += page.Items
		a.Metrics.OperationNotifications.WithLabelValues(op.Action, "succeeded").Add(float64(page.Succeeded))
		a.Metrics.OperationNotifications.WithLabelValues(op.Action, "skipped").Add(float64(page.Items - page.Succeeded))
		for _, it := range page.Cancelled {
			a.Metrics.Terminal.WithLabelValues("cancelled", string(it.Channel), string(it.Priority), "").Inc()
		}
		a.signalCancels(ctx, page.Signal, res.Processed, log)
		activity.RecordHeartbeat(ctx, res.Processed)
		// The pace: a page of n takes at least n/perSecond seconds.
		pause := time.Duration(float64(page.Items)/float64(perSecond)*float64(time.Second)) - time.Since(started)
		if pause > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	return res, nil
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
