package activities

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// result is Deliver's answer from the provider's, and counts the attempt:
// a refusal of our credentials (401, 403) is worth another provider when
// the route has one, and a delivery through a provider that sends receipts
// is SENT until its receipt comes.
func (a *Activities) result(at *attempt) workflows.DeliverResult {
	sr, p := at.sr, at.p
	if sr.ProviderFault && sr.Outcome == workflows.OutcomePermanent && len(at.route) > 1 {
		sr.Outcome = workflows.OutcomeRetry
	}
	res := workflows.DeliverResult{Outcome: sr.Outcome, StatusCode: sr.StatusCode, RetryAfter: sr.RetryAfter, Error: sr.Error, Provider: p.Name}
	if res.Outcome == workflows.OutcomeDelivered && p.AwaitReceipt > 0 {
		res.Outcome, res.AwaitReceipt, res.OnNoReceipt = workflows.OutcomeSent, p.AwaitReceipt, p.OnNoReceipt
	}
	a.Metrics.ProviderLatency.WithLabelValues(string(at.n.Channel), p.Name).Observe(at.elapsed.Seconds())
	a.Metrics.Attempts.WithLabelValues(string(at.n.Channel), string(res.Outcome), p.Name).Inc()
	return res
}

// record is Deliver's last stage: it records the attempt with its status
// change in one statement (finishAttempt), even if the workflow is being
// cancelled, since the attempt happened. Past RecordPatience the record goes
// back to the workflow to store (res.Unrecorded), so bookkeeping never turns
// a made attempt into another send. An activity Temporal cancelled (the
// cancel signal) answers the cancel once the attempt is recorded: the
// workflow marks the notification CANCELLED, or finds it DELIVERED.
func (a *Activities) record(ctx context.Context, at *attempt, res workflows.DeliverResult) (workflows.DeliverResult, error) {
	row := at.row(res)
	transition := a.transition(ctx, at, &res)
	if err := a.finishAttempt(ctx, row, transition); err != nil {
		at.log.Error("could not record the attempt; the workflow records it", zap.Error(err))
		res.Unrecorded = unrecorded(row, transition, at.elapsed)
	}
	a.logOutcome(at, res)
	if ctx.Err() != nil && res.Unrecorded == nil {
		return workflows.DeliverResult{}, ctx.Err()
	}
	return res, nil
}

// row is the attempt's record, answered res.
func (at *attempt) row(res workflows.DeliverResult) store.Attempt {
	row := store.Attempt{
		NotificationID:    at.id,
		Attempt:           at.in.Attempt,
		StartedAt:         at.started,
		DurationMS:        int(at.elapsed.Milliseconds()),
		Outcome:           string(res.Outcome),
		ResponseExcerpt:   nonEmpty(at.sr.Excerpt),
		Error:             nonEmpty(res.Error),
		Provider:          &at.p.Name,
		ProviderMessageID: nonEmpty(at.sr.MessageID),
	}
	if res.StatusCode != 0 {
		row.StatusCode = &res.StatusCode
	}
	return row
}

// transition is the status change the attempt answered res makes:
// DELIVERED, SENT (awaiting its receipt), RETRYING until the next attempt
// when a retry will wait for it (attempts left and no other provider
// admits now), or PROCESSING otherwise. For a retry it sets
// res.Alternatives and res.Retrying.
func (a *Activities) transition(ctx context.Context, at *attempt, res *workflows.DeliverResult) store.Transition {
	t := store.Transition{Status: notification.StatusProcessing, LastError: nonEmpty(res.Error), Generation: at.in.Generation}
	switch res.Outcome {
	case workflows.OutcomeDelivered:
		t.Status = notification.StatusDelivered
	case workflows.OutcomeSent:
		t.Status = notification.StatusSent
	case workflows.OutcomeRetry:
		in := at.in
		res.Alternatives = a.alternatives(ctx, at.candidates, at.p)
		if in.Attempt < in.AttemptBase+in.Retry.MaxAttempts && res.Alternatives == 0 {
			next := time.Now().Add(workflows.Backoff(notification.WorkflowID(in.NotificationID), in.Attempt-in.AttemptBase, in.Retry, res.RetryAfter))
			t.Status = notification.StatusRetrying
			t.NextAttemptAt = &next
			res.Retrying = true
		}
	}
	return t
}

// logOutcome logs the attempt's one line, and counts a delivery.
func (a *Activities) logOutcome(at *attempt, res workflows.DeliverResult) {
	n := at.n
	switch res.Outcome {
	case workflows.OutcomeDelivered:
		a.Metrics.Terminal.WithLabelValues("delivered", string(n.Channel), string(n.Priority), "").Inc()
		a.Metrics.EndToEnd.WithLabelValues(string(n.Channel), string(n.Priority)).Observe(time.Since(n.CreatedAt).Seconds())
		at.log.Info("delivered", zap.Int("status_code", res.StatusCode), zap.Duration("duration", at.elapsed))
	case workflows.OutcomeSent:
		// Not an outcome yet: the receipt's settling logs the one line.
		at.log.Debug("sent; awaiting the receipt", zap.Int("status_code", res.StatusCode), zap.Duration("duration", at.elapsed))
	default:
		at.log.Warn("delivery attempt failed", zap.String("outcome", string(res.Outcome)), zap.Int("status_code", res.StatusCode),
			zap.String("error", res.Error))
	}
}

// DefaultRecordPatience is RecordPatience's default.
const DefaultRecordPatience = 30 * time.Second

// recordPatience is RecordPatience, or its default.
func (a *Activities) recordPatience() time.Duration {
	if a.RecordPatience > 0 {
		return a.RecordPatience
	}
	return DefaultRecordPatience
}

// finishAttempt records the attempt, each try bounded by callTimeout,
// retrying with backoff while the database is unreachable, for
// RecordPatience and never past the activity's deadline (the cancel signal
// does not stop it: the attempt happened). A reply the database refuses as
// data is recorded without it.
func (a *Activities) finishAttempt(ctx context.Context, attempt store.Attempt, t store.Transition) error {
	deadline := time.Now().Add(a.recordPatience())
	if d, ok := ctx.Deadline(); ok && d.Add(-500*time.Millisecond).Before(deadline) {
		deadline = d.Add(-500 * time.Millisecond)
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		cctx, cancelCall := context.WithTimeout(rctx, callTimeout)
		err := store.FinishAttempt(cctx, a.Pool, attempt, t)
		cancelCall()
		if err == nil {
			return nil
		}
		if store.DataError(err) && attempt.ResponseExcerpt != nil {
			// Whatever in the reply the column refused, the attempt matters
			// more than its excerpt.
			a.Log.Warn("the provider's reply cannot be stored; recording the attempt without it",
				zap.String("notification_id", attempt.NotificationID.String()), zap.Int("attempt", attempt.Attempt), zap.Error(err))
			attempt.ResponseExcerpt = nil
			continue
		}
		a.Log.Warn("recording the attempt failed; retrying", zap.String("notification_id", attempt.NotificationID.String()),
			zap.Int("attempt", attempt.Attempt), zap.Error(err))
		select {
		case <-rctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// unrecorded is the record the workflow stores when finishAttempt could not.
func unrecorded(a store.Attempt, t store.Transition, elapsed time.Duration) *workflows.AttemptRecord {
	r := &workflows.AttemptRecord{
		NotificationID: a.NotificationID.String(),
		Attempt:        a.Attempt,
		StartedAt:      a.StartedAt,
		Duration:       elapsed,
		Outcome:        workflows.Outcome(a.Outcome),
		Status:         string(t.Status),
		NextAttemptAt:  t.NextAttemptAt,
		Generation:     t.Generation,
	}
	if a.Provider != nil {
		r.Provider = *a.Provider
	}
	if a.ProviderMessageID != nil {
		r.ProviderMessageID = *a.ProviderMessageID
	}
	if a.StatusCode != nil {
		r.StatusCode = *a.StatusCode
	}
	if a.Error != nil {
		r.Error = *a.Error
	}
	return r
}

// RecordAttempt stores an attempt that Deliver made but could not record;
// the workflow retries it until PostgreSQL takes it.
func (a *Activities) RecordAttempt(ctx context.Context, r workflows.AttemptRecord) error {
	id, err := parseID(r.NotificationID)
	if err != nil {
		return err
	}
	attempt := store.Attempt{
		NotificationID:    id,
		Attempt:           r.Attempt,
		StartedAt:         r.StartedAt,
		DurationMS:        int(r.Duration.Milliseconds()),
		Outcome:           string(r.Outcome),
		Error:             nonEmpty(r.Error),
		Provider:          nonEmpty(r.Provider),
		ProviderMessageID: nonEmpty(r.ProviderMessageID),
	}
	if r.StatusCode != 0 {
		attempt.StatusCode = &r.StatusCode
	}
	return store.FinishAttempt(ctx, a.Pool, attempt, store.Transition{
		Status: notification.Status(r.Status), LastError: nonEmpty(r.Error), NextAttemptAt: r.NextAttemptAt, Generation: r.Generation,
	})
}
