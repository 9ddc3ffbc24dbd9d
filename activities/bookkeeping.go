package activities

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Fail marks the notification FAILED and, in the same statement, writes
// its dead-letter record to the outbox, which the relay publishes to the
// channel's dead-letter queue: a notification is dead-lettered exactly when
// it failed, and one that became terminal meanwhile (delivered, cancelled)
// keeps that status, which Fail returns.
func (a *Activities) Fail(ctx context.Context, in workflows.FailInput) (string, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return "", err
	}
	n, err := store.FailGeneration(ctx, a.Pool, id, in.Generation, notification.DeadLetter{
		Reason: in.Reason, Source: notification.SourceWorkflow, Attempts: in.Attempts,
		LastStatus: in.LastStatusCode, LastError: in.LastError, FailedAt: time.Now(),
	})
	if errors.Is(err, store.ErrNotFound) {
		a.Log.Warn("the notification no longer exists; nothing to fail", zap.String("notification_id", in.NotificationID))
		return string(workflows.StatusSuperseded), nil
	}
	if err != nil {
		return "", err
	}
	if in.Generation != nil && n.Generation != *in.Generation {
		a.Log.Info("the notification was retried since; its earlier run fails nothing", zap.String("notification_id", in.NotificationID),
			zap.Int("generation", n.Generation))
		return string(workflows.StatusSuperseded), nil
	}
	if n.Status != notification.StatusFailed || n.FailureReason == nil || *n.FailureReason != in.Reason {
		return string(n.Status), nil
	}
	if a.OutboxWritten != nil {
		a.OutboxWritten()
	}
	a.Metrics.Terminal.WithLabelValues("failed", string(n.Channel), string(n.Priority), in.Reason).Inc()
	a.Log.Warn("notification failed and dead-lettered", zap.String("notification_id", in.NotificationID),
		zap.String("workflow_id", notification.WorkflowID(in.NotificationID)), zap.String("channel", string(n.Channel)),
		zap.String("reason", in.Reason), zap.Int("attempt", in.Attempts))
	return string(n.Status), nil
}

// Cancel marks the notification CANCELLED after the workflow stopped on a
// cancel signal, and returns the status it ends with: one that became
// terminal first (delivered just before the cancel) stands.
func (a *Activities) Cancel(ctx context.Context, in workflows.CancelInput) (string, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return "", err
	}
	n, err := store.GetNotification(ctx, a.Pool, id)
	if err == nil {
		var status notification.Status
		status, err = store.MarkGenerationCancelled(ctx, a.Pool, id, in.Generation)
		if err == nil {
			return a.cancelled(in, n, status), nil
		}
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSuperseded) {
		// Retried since (a later generation's run owns it), or gone: this
		// run's cancel changes nothing.
		a.Log.Info("the notification is no longer this run's; nothing cancelled", zap.String("notification_id", in.NotificationID),
			zap.Error(err))
		return string(workflows.StatusSuperseded), nil
	}
	return "", err
}

// cancelled logs and counts a cancel that Cancel made, and answers status.
func (a *Activities) cancelled(in workflows.CancelInput, n store.Notification, status notification.Status) string {
	if status == notification.StatusCancelled && !n.Status.Terminal() {
		a.Metrics.Terminal.WithLabelValues("cancelled", string(n.Channel), string(n.Priority), "").Inc()
		a.Log.Info("notification cancelled", zap.String("notification_id", in.NotificationID),
			zap.String("workflow_id", notification.WorkflowID(in.NotificationID)), zap.String("channel", string(n.Channel)),
			zap.Int("attempt", in.Attempts))
	}
	return string(status)
}

// MarkRetrying shows the notification RETRYING until in.NextAttemptAt while
// its workflow waits for the next attempt; a notification terminal, with a
// cancel request, of another generation or gone is left as it is.
func (a *Activities) MarkRetrying(ctx context.Context, in workflows.RetryingInput) error {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err = store.MarkRetrying(cctx, a.Pool, id, in.Generation, in.NextAttemptAt)
	return err
}

// SettleReceipt records a provider's receipt (or its absence) on the
// attempt and moves the SENT notification to in.Next, and returns the
// status it ends with: one no longer SENT (cancelled meanwhile) stands.
func (a *Activities) SettleReceipt(ctx context.Context, in workflows.SettleInput) (string, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return "", err
	}
	status, err := store.SettleReceipt(ctx, a.Pool, id, in.Attempt, in.Receipt, in.Reason, notification.Status(in.Next))
	if err != nil {
		return "", err
	}
	if status == notification.StatusDelivered && in.Next == workflows.StatusDelivered {
		n, err := store.GetNotification(ctx, a.Pool, id)
		if err == nil {
			a.Metrics.Terminal.WithLabelValues("delivered", string(n.Channel), string(n.Priority), "").Inc()
			a.Metrics.EndToEnd.WithLabelValues(string(n.Channel), string(n.Priority)).Observe(time.Since(n.CreatedAt).Seconds())
		}
	}
	a.Log.Info("receipt settled", zap.String("notification_id", in.NotificationID), zap.Int("attempt", in.Attempt),
		zap.String("receipt", in.Receipt), zap.String("status", string(status)))
	return string(status), nil
}
