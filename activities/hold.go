package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// WorkflowStarter starts a digest's workflow, or signals the one running.
type WorkflowStarter interface {
	SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
		options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error)
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
}

// DefaultOrderingMaxHold is how long a notification waits at most for the
// one before it in its ordering key when it sets no maxHold
// (ORDERING_MAX_HOLD).
const DefaultOrderingMaxHold = 5 * time.Minute

// hold is Deliver's stage after begin for a notification paced on its
// person's side (Recipients II). In order: one with an ordering key waits,
// before its first attempt, for the one before it to end (at most its
// maxHold, then it goes and the break is recorded); one with a digest key
// in a category that digests joins the digest instead of being sent; one
// naming a profile waits out the quiet hours that apply, unless its
// category is critical; one whose category throttles takes a slot, or
// waits for the next free one. A hold takes the begun attempt back (nothing
// is sent or counted) and answers OutcomeHeld with the time to wait and
// why. A notification with no profile, category or ordering key pays
// nothing here: no statement, no Temporal event.
func (a *Activities) hold(ctx context.Context, at *attempt) *stop {
	n := at.n
	if n.OrderingKey == nil && n.RecipientID == nil && n.Category == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if n.OrderingKey != nil && at.in.Attempt == 1 {
		if s := a.holdForOrder(cctx, at); s != nil {
			return s
		}
	}
	if n.RecipientID == nil && n.Category == nil {
		return nil
	}
	if n.DigestID != nil && *n.DigestID != n.ID {
		return a.awaitDigest(cctx, at)
	}
	return a.holdForPerson(cctx, at)
}

// holdForPerson applies what paces the notification on its person's side
// (store.PacingOf): its category's digest, the quiet hours it is due in
// (unless its category is critical), its category's throttle.
func (a *Activities) holdForPerson(ctx context.Context, at *attempt) *stop {
	n := at.n
	p, err := store.PacingOf(ctx, a.Pool, n)
	if err != nil {
		return halt(notAttempted(err))
	}
	if p.Digest != nil && n.DigestKey != nil && n.DigestID == nil {
		return a.joinDigest(ctx, at, *p.Digest)
	}
	if p.QuietHours != nil && !p.Critical {
		if s := a.holdForQuietHours(ctx, at, p); s != nil {
			return s
		}
	}
	if p.Throttle != nil {
		return a.holdForThrottle(ctx, at, *p.Throttle)
	}
	return nil
}

// held takes the begun attempt back and answers the hold: SCHEDULED until
// until, deferred by by, its timer labelled summary.
func (a *Activities) held(ctx context.Context, at *attempt, until time.Time, by, summary string, holdUntil *time.Time) *stop {
	changed, err := store.Hold(ctx, a.Pool, at.id, at.in.Generation, at.in.Attempt, until, by, holdUntil)
	if err != nil {
		return halt(notAttempted(err))
	}
	if !changed {
		// Ended or retried meanwhile (a cancel, say): the workflow's next
		// attempt finds out which, at once.
		until = time.Now()
	}
	a.Metrics.Deferred.WithLabelValues(by).Inc()
	at.log.Info("notification held past its turn", zap.String("deferred_by", by), zap.Time("until", until))
	return answer(workflows.DeliverResult{Outcome: workflows.OutcomeHeld, HeldUntil: &until, DeferredBy: by, HoldSummary: summary})
}

// holdForOrder holds the notification while the one before it in its
// ordering key is not terminal, from its first wait for at most its
// maxHold (ORDERING_MAX_HOLD when it sets none); past that, it goes and is
// marked orderingBroken.
func (a *Activities) holdForOrder(ctx context.Context, at *attempt) *stop {
	n := at.n
	ahead, status, ok, err := store.Predecessor(ctx, a.Pool, n)
	if err != nil {
		return halt(notAttempted(err))
	}
	if !ok || status.Terminal() {
		return nil
	}
	now := time.Now()
	holdUntil := n.OrderingHoldUntil
	if holdUntil == nil {
		maxHold := a.OrderingMaxHold
		if maxHold <= 0 {
			maxHold = DefaultOrderingMaxHold
		}
		if n.MaxHoldMS != nil {
			maxHold = time.Duration(*n.MaxHoldMS) * time.Millisecond
		}
		t := now.Add(maxHold)
		holdUntil = &t
	}
	if !now.Before(*holdUntil) {
		if err := store.BreakOrdering(ctx, a.Pool, at.id); err != nil {
			return halt(notAttempted(err))
		}
		a.Metrics.OrderingBroken.Inc()
		at.log.Warn("ordering broken: the notification goes before the one ahead of it in its key ended",
			zap.String("ahead", ahead.String()), zap.String("ahead_status", string(status)))
		return nil
	}
	summary := fmt.Sprintf("waiting for %s (ordering key %s, hold until %s UTC)", ahead,
		*n.OrderingKey, holdUntil.UTC().Format(time.TimeOnly))
	return a.held(ctx, at, *holdUntil, pacing.ByOrdering, summary, holdUntil)
}

// holdForQuietHours holds the notification until the end of the quiet
// hours it is due in, in its person's timezone.
func (a *Activities) holdForQuietHours(ctx context.Context, at *attempt, p store.Pacing) *stop {
	loc, err := pacing.Location(p.Timezone)
	if err != nil {
		// The API accepts IANA names only; one this build does not know is
		// kept in UTC rather than not honoured at all.
		loc = time.UTC
	}
	inside, end := p.QuietHours.Until(time.Now(), loc)
	if !inside {
		return nil
	}
	summary := fmt.Sprintf("quiet hours until %s %s", end.In(loc).Format("15:04"), loc)
	return a.held(ctx, at, end, pacing.ByQuietHours, summary, nil)
}

// holdForThrottle takes a slot of the category's throttle for the
// notification's recipient, or holds it until the next one frees.
func (a *Activities) holdForThrottle(ctx context.Context, at *attempt, t pacing.Throttle) *stop {
	n := at.n
	ok, next, err := store.TakeThrottleSlot(ctx, a.Pool, n.TenantID, *n.Category, store.RecipientKey(n), at.id, t)
	if err != nil {
		return halt(notAttempted(err))
	}
	if ok {
		return nil
	}
	summary := "throttle: next slot " + next.UTC().Format("15:04:05") + " UTC"
	return a.held(ctx, at, next, pacing.ByThrottle, summary, nil)
}

// joinDigest makes the notification a member of its digest and holds it
// until the digest's message ends (its workflow is woken then), starting
// the digest's workflow when it opened the digest, and flushing it now
// when it filled it. Every member asks for the workflow to be started (a
// start of one running is refused and ignored), so a worker lost between
// the join and the start loses no digest.
func (a *Activities) joinDigest(ctx context.Context, at *attempt, d pacing.Digest) *stop {
	j, ok, err := store.JoinDigest(ctx, a.Pool, at.n, at.in.Generation, at.in.Attempt, d)
	if err != nil {
		return halt(notAttempted(err))
	}
	if !ok {
		now := time.Now()
		return answer(workflows.DeliverResult{Outcome: workflows.OutcomeHeld, HeldUntil: &now, DeferredBy: pacing.ByDigest})
	}
	if err := a.startDigest(ctx, j); err != nil {
		// The member is in; its hold's end (the window's close plus a
		// margin) makes the attempt again, which starts the workflow.
		at.log.Warn("could not start the digest's workflow; the member's next attempt will", zap.Error(err))
	}
	a.Metrics.Deferred.WithLabelValues(pacing.ByDigest).Inc()
	at.log.Info("notification joined a digest", zap.String("digest_id", j.DigestID.String()), zap.Time("closes_at", j.ClosesAt))
	// The member waits for the message to end (a wake); the margin past
	// the close only bounds a wake that was lost.
	until := j.ClosesAt.Add(digestWakeMargin)
	return answer(workflows.DeliverResult{Outcome: workflows.OutcomeHeld, HeldUntil: &until, DeferredBy: pacing.ByDigest,
		HoldSummary: "digest window closes " + j.ClosesAt.UTC().Format("15:04:05") + " UTC"})
}

// awaitDigest holds a member of a digest again: its wake was lost, or its
// worker with it. While the digest gathers, its workflow is started (if the
// member that opened it could not) and the member waits for its close;
// once flushed, the member waits for the message to end, which ends it.
func (a *Activities) awaitDigest(ctx context.Context, at *attempt) *stop {
	d, err := store.GetDigest(ctx, a.Pool, *at.n.DigestID)
	if err != nil {
		return halt(notAttempted(err))
	}
	summary := "digest window closes " + d.ClosesAt.UTC().Format("15:04:05") + " UTC"
	if d.FlushedAt == nil {
		if err := a.startDigest(ctx, store.Joined{DigestID: d.ID, ClosesAt: d.ClosesAt, Full: d.Items >= d.MaxItems}); err != nil {
			return halt(notAttempted(err))
		}
		return a.held(ctx, at, d.ClosesAt.Add(digestWakeMargin), pacing.ByDigest, summary, nil)
	}
	until := time.Now().Add(digestWakeMargin)
	return answer(workflows.DeliverResult{Outcome: workflows.OutcomeHeld, HeldUntil: &until, DeferredBy: pacing.ByDigest,
		HoldSummary: "digest message " + d.ID.String() + " sending"})
}

// digestWakeMargin is how long past its digest's close a member waits for
// the wake before it looks for itself.
const digestWakeMargin = 5 * time.Minute

// startDigest starts the digest's workflow (a full digest's with the flush
// signal).
func (a *Activities) startDigest(ctx context.Context, j store.Joined) error {
	if a.Workflows == nil {
		return errors.New("no Temporal client to start digests with")
	}
	in := workflows.DigestInput{DigestID: j.DigestID.String(), ClosesAt: j.ClosesAt}
	opts := client.StartWorkflowOptions{
		ID:                       DigestWorkflowID(j.DigestID),
		TaskQueue:                a.WorkflowTaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		StaticSummary:            "digest " + j.DigestID.String(),
	}
	var err error
	if j.Full {
		_, err = a.Workflows.SignalWithStartWorkflow(ctx, opts.ID, workflows.DigestFlushSignal, nil, opts, workflows.DigestWorkflow, in)
	} else {
		_, err = a.Workflows.ExecuteWorkflow(ctx, opts, workflows.DigestWorkflow, in)
	}
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil
	}
	return err
}

// DigestWorkflowID is the id of a digest's workflow.
func DigestWorkflowID(id uuid.UUID) string { return "digest-" + id.String() }

// FlushDigest closes a digest and makes its message (store.FlushDigest),
// and wakes the relay to hand it on.
func (a *Activities) FlushDigest(ctx context.Context, in workflows.DigestInput) (workflows.DigestFlushResult, error) {
	id, err := parseID(in.DigestID)
	if err != nil {
		return workflows.DigestFlushResult{}, err
	}
	items, err := store.FlushDigest(ctx, a.Pool, id)
	if err != nil {
		return workflows.DigestFlushResult{}, err
	}
	if items > 0 && a.OutboxWritten != nil {
		a.OutboxWritten()
	}
	a.Log.Info("digest flushed", zap.String("digest_id", in.DigestID), zap.Int("items", items))
	return workflows.DigestFlushResult{Items: items}, nil
}

// SettleDigest ends a digest's members as its message ended
// (store.SettleDigest) and wakes each member's workflow, which then finds
// its notification ended.
func (a *Activities) SettleDigest(ctx context.Context, in workflows.ReleaseInput) error {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return err
	}
	members, err := store.SettleDigest(ctx, a.Pool, id)
	if err != nil {
		return err
	}
	for _, m := range members {
		a.wake(ctx, m)
	}
	return nil
}

// ReleaseOrdering wakes the notification after an ended one in its
// ordering key, which may be waiting for it.
func (a *Activities) ReleaseOrdering(ctx context.Context, in workflows.ReleaseInput) error {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return err
	}
	next, ok, err := store.Successor(ctx, a.Pool, id)
	if err != nil || !ok {
		return err
	}
	a.wake(ctx, next)
	return nil
}

// wake signals a notification's workflow to end its hold. A workflow not
// started yet or ended is not woken: its first attempt, or nothing, reads
// the row. The wake is a hint, so one that fails is logged, not retried:
// the hold ends on its timer anyway.
func (a *Activities) wake(ctx context.Context, id uuid.UUID) {
	if a.Temporal == nil {
		return
	}
	err := a.Temporal.SignalWorkflow(ctx, notification.WorkflowID(id.String()), "", workflows.WakeSignal, nil)
	var notFound *serviceerror.NotFound
	if err != nil && !errors.As(err, &notFound) {
		a.Log.Warn("could not wake a waiting notification", zap.String("notification_id", id.String()), zap.Error(err))
	}
}
