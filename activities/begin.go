package activities

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// begin is Deliver's stage on the row: store.BeginGenerationAttempt,
// bounded by callTimeout, marks the notification PROCESSING for this
// attempt, or refuses and nothing is sent: the notification is terminal,
// expired, of a later generation (retried since this run began), or gone.
// The fast path's attempt begins only a notification no attempt began for
// yet; one that finds its own attempt begun is a retried workflow task.
func (a *Activities) begin(ctx context.Context, at *attempt) *stop {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	n, refusal, err := store.BeginGenerationAttempt(cctx, a.Pool, at.id, at.in.Generation, at.in.Attempt, at.in.FastPath)
	cancel()
	if errors.Is(err, store.ErrNotFound) {
		a.Log.Warn("the notification no longer exists; nothing sent", zap.String("notification_id", at.in.NotificationID))
		return answer(gone())
	}
	if err != nil {
		if ctx.Err() != nil {
			return halt(ctx.Err())
		}
		return halt(notAttempted(err))
	}
	at.n = n
	at.log = a.Log.With(zap.String("notification_id", at.in.NotificationID),
		zap.String("workflow_id", notification.WorkflowID(at.in.NotificationID)),
		zap.String("channel", string(n.Channel)), zap.Int("attempt", at.in.Attempt), zap.String("provider", at.p.Name),
		zap.String("tenant_id", n.TenantID.String()))
	switch refusal {
	case store.Terminal:
		at.log.Info("notification already terminal; nothing sent", zap.String("status", string(n.Status)))
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: workflows.Status(n.Status)})
	case store.Expired:
		at.log.Warn("notification expired before the attempt; nothing sent")
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeExpired, Error: "expired before delivery"})
	case store.Superseded:
		at.log.Info("the notification was retried since this run began; nothing sent", zap.Int("generation", n.Generation))
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeSuperseded,
			Error: fmt.Sprintf("superseded by generation %d", n.Generation)})
	case store.Refused:
		return a.skip(ctx, at, *n.SkipReason)
	case store.Begun:
		// The fast path's attempt began in a workflow task that was lost
		// with its worker (this is that task, retried): the provider may
		// have seen it. It counts as made, like an activity lost with its
		// worker; the next attempt goes through the queue after a backoff.
		at.log.Warn("the first attempt began in a lost workflow task; counting it as made")
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeRetry, Error: "the attempt was lost with its worker"})
	}
	if n.RecipientID != nil {
		return a.resolve(ctx, at)
	}
	return nil
}
