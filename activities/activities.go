// Package activities holds the notification workflow's activities: Deliver
// (one attempt at the provider, recorded in Postgres) and Fail (dead-letter
// queue, then FAILED). Their dependencies come in through Activities.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"dispatch-engine/internal/breaker"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/provider"
	"dispatch-engine/internal/quota"
	"dispatch-engine/internal/ratelimit"
	"dispatch-engine/internal/store"
	"dispatch-engine/workflows"
)

// Activities carries what the activities need.
type Activities struct {
	Pool *pgxpool.Pool
	// Providers are the providers and each channel's route.
	Providers *provider.Set
	// Breakers are the providers' breakers; nil without a providers file
	// (the one default provider has none).
	Breakers *breaker.Breakers
	Limiter  *ratelimit.Limiter
	// OutboxWritten, when set, wakes the outbox relay after Fail wrote a
	// dead-letter record (its polling finds the record otherwise).
	OutboxWritten func()
	Metrics       *metrics.Worker
	Log           *zap.Logger
	// SlotWait, when set, bounds one attempt's wait for a rate-limit slot;
	// it is bounded anyway to leave the provider call (HTTP.Timeout), its
	// recording and callMargin before the attempt's deadline.
	SlotWait time.Duration
	// FastPathCalls bounds the fast path's provider calls in flight in this
	// worker (its capacity, WORKER_CONCURRENCY): a fast-path attempt that
	// finds it full sends nothing and defers to the channel's activity task
	// queue, so a slow or hanging provider holds a bounded number of calls
	// and no attempt queues inside the worker. Nil defers every one.
	FastPathCalls chan struct{}
	// RecordPatience bounds how long an attempt that was made keeps trying
	// to record itself while PostgreSQL is unreachable before it hands the
	// record to the workflow (DeliverResult.Unrecorded). Defaults to
	// DefaultRecordPatience.
	RecordPatience time.Duration
	// Temporal signals the workflows an operation cancels (OperationStep);
	// nil sends no signal (their cancel flags still stop them).
	Temporal Signaler
	// Quotas counts what a retry operation retries against its tenant's
	// acceptance quotas (OperationStep); nil counts nothing.
	Quotas *quota.Quota
}

// Payload is the JSON body POSTed to the provider (and the body of a
// dead-letter message).
type Payload = notification.Payload

// parseID reads an activity input's notification id; a bad one is a bug
// that no retry mends.
func parseID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.UUID{}, temporal.NewNonRetryableApplicationError("bad notification id", "BadInput", err)
	}
	return id, nil
}

// Deliver makes one delivery attempt: it marks the notification PROCESSING
// (or finds it terminal or expired and sends nothing), takes the channel's
// rate-limit slot just before the send (waiting for it is not an attempt),
// POSTs the notification to the provider with a stable webhook-id, classifies
// the answer, and records the attempt with its status change in one
// statement. A provider failure is a result, not an error.
//
// Every call to PostgreSQL or Redis is bounded (callTimeout, and the
// limiter's own), and the activity heartbeats from start to end, so a
// dependency that hangs rather than refuses costs time, not attempts: when
// Redis (the limiter fails closed) or PostgreSQL cannot be reached before the
// send, nothing was sent and nothing counted, and Deliver answers a
// NotAttempted error, which the workflow retries without spending an
// attempt. Once the send was made, recording it retries for RecordPatience;
// past that the result carries the record (Unrecorded) for the workflow to
// store, so bookkeeping never turns a made attempt into another send.
//
// The fast path's attempt (in.FastPath, a local activity) only takes a slot
// that is free right now and only while fewer than cap(FastPathCalls) such
// calls are in flight; otherwise it sends nothing and answers
// OutcomeDeferred, and the workflow makes the attempt through the channel's
// activity task queue, where the backlog waits in priority order.
func (a *Activities) Deliver(ctx context.Context, in workflows.DeliverInput) (workflows.DeliverResult, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return workflows.DeliverResult{}, err
	}
	defer keepAlive(ctx)()
	channel := in.Channel
	if channel == "" { // scheduled by a worker from before the channel travelled with it
		if channel, err = a.channelOf(ctx, id); errors.Is(err, store.ErrNotFound) {
			return gone(), nil
		} else if err != nil {
			return workflows.DeliverResult{}, notAttempted(err)
		}
	}
	route := a.Providers.Route(channel)
	candidates := candidates(route, in.After, in.Exclude)
	if len(candidates) == 0 {
		return workflows.DeliverResult{Outcome: workflows.OutcomePermanent, RouteExhausted: true,
			Error: "every provider on the route reported it undelivered"}, nil
	}

	// The provider first: when every breaker is open the attempt waits
	// (in the workflow, on a timer) having touched nothing.
	p, ticket, wait, err := a.choose(ctx, candidates)
	if err != nil {
		return workflows.DeliverResult{}, notAttempted(err)
	}
	if p == nil {
		return workflows.DeliverResult{Outcome: workflows.OutcomeUnavailable, RetryAfter: wait,
			Error: "every provider of " + channel + " has its breaker open"}, nil
	}
	sent := false
	defer func() {
		if !sent {
			a.release(ctx, ticket)
		}
	}()

	// An attempt through the queue waits for its slot first: the wait (for
	// as long as Redis is unreachable, say) touches nothing and spends
	// nothing. The fast path begins first, so that a retried workflow task
	// re-running it always finds it begun; its slot, if one is free, is
	// then taken just before the send.
	var slotAt time.Time
	if !in.FastPath {
		if err := a.waitForSlot(ctx, channel); err != nil {
			return workflows.DeliverResult{}, err
		}
		slotAt = time.Now()
	}

	n, refusal, err := a.begin(ctx, id, in)
	if errors.Is(err, store.ErrNotFound) {
		a.Log.Warn("the notification no longer exists; nothing sent", zap.String("notification_id", in.NotificationID))
		return gone(), nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return workflows.DeliverResult{}, ctx.Err()
		}
		return workflows.DeliverResult{}, notAttempted(err)
	}
	log := a.Log.With(zap.String("notification_id", in.NotificationID), zap.String("workflow_id", notification.WorkflowID(in.NotificationID)),
		zap.String("channel", string(n.Channel)), zap.Int("attempt", in.Attempt), zap.String("provider", p.Name),
		zap.String("tenant_id", n.TenantID.String()))
	switch refusal {
	case store.Terminal:
		log.Info("notification already terminal; nothing sent", zap.String("status", string(n.Status)))
		return workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: workflows.Status(n.Status)}, nil
	case store.Expired:
		log.Warn("notification expired before the attempt; nothing sent")
		return workflows.DeliverResult{Outcome: workflows.OutcomeExpired, Error: "expired before delivery"}, nil
	case store.Superseded:
		log.Info("the notification was retried since this run began; nothing sent", zap.Int("generation", n.Generation))
		return workflows.DeliverResult{Outcome: workflows.OutcomeSuperseded,
			Error: fmt.Sprintf("superseded by generation %d", n.Generation)}, nil
	case store.Begun:
		// The fast path's attempt began in a workflow task that was lost
		// with its worker (this is that task, retried): the provider may
		// have seen it. It counts as made, like an activity lost with its
		// worker; the next attempt goes through the queue after a backoff.
		log.Warn("the first attempt began in a lost workflow task; counting it as made")
		return workflows.DeliverResult{Outcome: workflows.OutcomeRetry, Error: "the attempt was lost with its worker"}, nil
	}

	switch {
	case in.FastPath:
		select {
		case a.FastPathCalls <- struct{}{}:
			defer func() { <-a.FastPathCalls }()
		default:
			return a.deferred(channel, "busy", "every fast-path call of this worker is busy"), nil
		}
		if !a.Limiter.TryTake(ctx, channel) {
			return a.deferred(channel, "rate-limit", "no rate-limit slot free"), nil
		}
		if p.RatePerSec > 0 && !a.Limiter.TryTake(ctx, provider.ProviderLimitKey(p.Name)) {
			// Nothing is sent on the channel's slot: it goes back.
			if err := a.Limiter.Refund(context.WithoutCancel(ctx), channel); err != nil {
				log.Warn("could not give back the channel's rate-limit slot", zap.Error(err))
			}
			return a.deferred(channel, "rate-limit", "no rate-limit slot of "+p.Name+" free"), nil
		}
	default:
		if time.Since(slotAt) > slotFreshness {
			// The database was slow to begin the attempt: a slot taken that
			// long before the send is not spent on it; a fresh one is.
			if err := a.waitForSlot(ctx, channel); err != nil {
				return workflows.DeliverResult{}, err
			}
		}
		if p.RatePerSec > 0 {
			if err := a.waitForSlot(ctx, provider.ProviderLimitKey(p.Name)); err != nil {
				return workflows.DeliverResult{}, err
			}
		}
	}

	started := time.Now()
	sent = true
	sr := a.send(ctx, p, n, in.Attempt)
	elapsed := time.Since(started)
	if ticket != nil && sr.Outcome != workflows.OutcomeCancelled {
		a.report(ctx, *ticket, sr.ProviderFault, elapsed, log)
	} else {
		a.release(ctx, ticket)
	}
	if sr.ProviderFault && sr.Outcome == workflows.OutcomePermanent && len(route) > 1 {
		// Our credentials refused (401, 403): another provider may take it.
		sr.Outcome = workflows.OutcomeRetry
	}
	res := workflows.DeliverResult{Outcome: sr.Outcome, StatusCode: sr.StatusCode, RetryAfter: sr.RetryAfter, Error: sr.Error, Provider: p.Name}
	if res.Outcome == workflows.OutcomeDelivered && p.AwaitReceipt > 0 {
		res.Outcome, res.AwaitReceipt, res.OnNoReceipt = workflows.OutcomeSent, p.AwaitReceipt, p.OnNoReceipt
	}
	a.Metrics.ProviderLatency.WithLabelValues(string(n.Channel), p.Name).Observe(elapsed.Seconds())
	a.Metrics.Attempts.WithLabelValues(string(n.Channel), string(res.Outcome), p.Name).Inc()

	attempt := store.Attempt{
		NotificationID:    id,
		Attempt:           in.Attempt,
		StartedAt:         started,
		DurationMS:        int(elapsed.Milliseconds()),
		Outcome:           string(res.Outcome),
		ResponseExcerpt:   nonEmpty(sr.Excerpt),
		Error:             nonEmpty(res.Error),
		Provider:          &p.Name,
		ProviderMessageID: nonEmpty(sr.MessageID),
	}
	if res.StatusCode != 0 {
		attempt.StatusCode = &res.StatusCode
	}
	transition := store.Transition{Status: notification.StatusProcessing, LastError: nonEmpty(res.Error), Generation: in.Generation}
	switch res.Outcome {
	case workflows.OutcomeDelivered:
		transition.Status = notification.StatusDelivered
	case workflows.OutcomeSent:
		transition.Status = notification.StatusSent
	case workflows.OutcomeRetry:
		res.Alternatives = a.alternatives(ctx, candidates, p)
		if in.Attempt < in.AttemptBase+in.Retry.MaxAttempts && res.Alternatives == 0 {
			next := time.Now().Add(workflows.Backoff(notification.WorkflowID(in.NotificationID), in.Attempt-in.AttemptBase, in.Retry, res.RetryAfter))
			transition.Status = notification.StatusRetrying
			transition.NextAttemptAt = &next
			res.Retrying = true
		}
	}
	// The attempt happened: record it even if the workflow is being
	// cancelled, retrying while PostgreSQL is unreachable.
	if err := a.finishAttempt(ctx, attempt, transition); err != nil {
		log.Error("could not record the attempt; the workflow records it", zap.Error(err))
		res.Unrecorded = unrecorded(attempt, transition, elapsed)
	}
	switch res.Outcome {
	case workflows.OutcomeDelivered:
		a.Metrics.Terminal.WithLabelValues("delivered", string(n.Channel), string(n.Priority), "").Inc()
		a.Metrics.EndToEnd.WithLabelValues(string(n.Channel), string(n.Priority)).Observe(time.Since(n.CreatedAt).Seconds())
		log.Info("delivered", zap.Int("status_code", res.StatusCode), zap.Duration("duration", elapsed))
	case workflows.OutcomeSent:
		// Not an outcome yet: the receipt's settling logs the one line.
		log.Debug("sent; awaiting the receipt", zap.Int("status_code", res.StatusCode), zap.Duration("duration", elapsed))
	default:
		log.Warn("delivery attempt failed", zap.String("outcome", string(res.Outcome)), zap.Int("status_code", res.StatusCode), zap.String("error", res.Error))
	}
	if ctx.Err() != nil && res.Unrecorded == nil {
		// Temporal cancelled the activity (the cancel signal): the workflow
		// marks the notification CANCELLED, or finds it DELIVERED.
		return workflows.DeliverResult{}, ctx.Err()
	}
	return res, nil
}

// candidates is the route in the order this attempt tries it: starting
// after the provider the previous attempt failed at, without the excluded.
func candidates(route []*provider.Provider, after string, exclude []string) []*provider.Provider {
	start := 0
	for i, p := range route {
		if p.Name == after {
			start = i + 1
		}
	}
	out := make([]*provider.Provider, 0, len(route))
	for i := range route {
		p := route[(start+i)%len(route)]
		if !slices.Contains(exclude, p.Name) {
			out = append(out, p)
		}
	}
	return out
}

// choose picks the first candidate whose breaker admits a send. Without
// breakers (no providers file) that is the first. When none admits, p is
// nil and wait is how long until the first may.
func (a *Activities) choose(ctx context.Context, cands []*provider.Provider) (p *provider.Provider, t *breaker.Ticket, wait time.Duration, err error) {
	if a.Breakers == nil {
		return cands[0], nil, 0, nil
	}
	wait = -1
	for _, c := range cands {
		ticket, ok, w, err := a.Breakers.Admit(ctx, c.Name)
		if err != nil {
			return nil, nil, 0, err
		}
		if ok {
			return c, &ticket, 0, nil
		}
		if wait < 0 || w < wait {
			wait = w
		}
	}
	return nil, nil, wait, nil
}

// alternatives counts the candidates other than p whose breakers admit.
func (a *Activities) alternatives(ctx context.Context, cands []*provider.Provider, p *provider.Provider) int {
	n := 0
	for _, c := range cands {
		if c != p && (a.Breakers == nil || a.Breakers.Admits(ctx, c.Name)) {
			n++
		}
	}
	return n
}

// report tells the provider's breaker how the send went; the breaker is
// best effort (a Redis that does not answer leaves it as it was).
func (a *Activities) report(ctx context.Context, t breaker.Ticket, failure bool, elapsed time.Duration, log *zap.Logger) {
	if err := a.Breakers.Report(context.WithoutCancel(ctx), t, true, failure, elapsed); err != nil {
		log.Warn("could not report to the provider's breaker", zap.Error(err))
	}
}

// release gives back a half-open breaker's probe place that sent nothing.
func (a *Activities) release(ctx context.Context, t *breaker.Ticket) {
	if t == nil || !t.Probe {
		return
	}
	if err := a.Breakers.Report(context.WithoutCancel(ctx), *t, false, false, 0); err != nil {
		a.Log.Warn("could not release a breaker probe", zap.String("provider", t.Provider), zap.Error(err))
	}
}

// gone is Deliver's answer when the notification no longer exists
// (retention deleted it while its run was open): the run ends.
func gone() workflows.DeliverResult {
	return workflows.DeliverResult{Outcome: workflows.OutcomeSuperseded, Error: "the notification no longer exists"}
}

// deferred is the fast path's answer when it may not send now.
func (a *Activities) deferred(channel, reason, why string) workflows.DeliverResult {
	a.Metrics.FastPathDeferred.WithLabelValues(channel, reason).Inc()
	return workflows.DeliverResult{Outcome: workflows.OutcomeDeferred, Error: why}
}

// slotFreshness is how long a rate-limit slot may precede its send: one
// taken earlier (a slow database between the two) is replaced by a fresh
// one, so sends cannot bunch up past the limit.
const slotFreshness = 250 * time.Millisecond

// channelOf reads a notification's channel, bounded by callTimeout.
func (a *Activities) channelOf(ctx context.Context, id uuid.UUID) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	n, err := store.GetNotification(cctx, a.Pool, id)
	return string(n.Channel), err
}

// callTimeout bounds each call to PostgreSQL inside an attempt, so a
// database that hangs (a partition, not a refusal) fails the call in time.
const callTimeout = 2 * time.Second

// heartbeatEvery paces the heartbeats of an attempt; the workflow's
// heartbeat timeout is 10 s.
const heartbeatEvery = time.Second

// keepAlive heartbeats until the returned stop is called: whatever the
// attempt waits on (PostgreSQL, Redis, the provider), a lost worker is
// noticed within the heartbeat timeout and a live one is never taken for
// lost, and a cancel reaches ctx. A local activity has no heartbeats.
func keepAlive(ctx context.Context) (stop func()) {
	if activity.GetInfo(ctx).IsLocalActivity {
		return func() {}
	}
	// The first heartbeat after heartbeatEvery: the timeout counts from the
	// start, and an attempt that ends sooner (nearly all) sends none.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	return func() { close(done) }
}

// begin is store.BeginAttempt bounded by callTimeout. The fast path's
// attempt begins only a notification no attempt began for yet.
func (a *Activities) begin(ctx context.Context, id uuid.UUID, in workflows.DeliverInput) (store.Notification, store.Refusal, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return store.BeginGenerationAttempt(cctx, a.Pool, id, in.Generation, in.Attempt, in.FastPath)
}

// callMargin is kept free beyond the provider call's timeout at the end of
// an attempt: a wait for the rate limit gives up early enough that a slot it
// gets still leaves the whole call and its recording inside the attempt's
// deadline, so a long wait ends as NotAttempted, never as a timed-out attempt.
const callMargin = 2 * time.Second

// waitForSlot waits for the channel's rate limit (not an attempt: nothing
// is sent meanwhile). While Redis is unreachable or hangs the limiter keeps
// waiting (it fails closed, each check bounded); a wait that outlasts the
// attempt's time ends as NotAttempted.
func (a *Activities) waitForSlot(ctx context.Context, channel string) error {
	waitCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline.Add(-(a.Providers.MaxTimeout() + callMargin + a.recordPatience())))
		defer cancel()
	}
	if a.SlotWait > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(waitCtx, a.SlotWait)
		defer cancel()
	}
	waited, err := a.Limiter.Wait(waitCtx, channel, nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return notAttempted(fmt.Errorf("waiting %s for the rate limit: %w", waited.Round(time.Millisecond), err))
	}
	a.Metrics.RateLimitWait.WithLabelValues(channel).Observe(waited.Seconds())
	if waited > 0 {
		a.Metrics.RateLimitWaits.WithLabelValues(channel).Inc()
	}
	return nil
}

// notAttempted marks err as trouble before the attempt began: nothing was
// sent and the attempt was not counted.
func notAttempted(err error) error {
	return temporal.NewApplicationErrorWithCause("not attempted: "+err.Error(), workflows.ErrNotAttempted, err)
}

// DefaultRecordPatience is RecordPatience's default.
const DefaultRecordPatience = 30 * time.Second

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

// send sends the attempt to p. While the call lasts longer than
// cancelPoll it also watches the row for a cancel request, so a cancel
// aborts the call even before its signal reaches the workflow (a fast-path
// attempt runs inside a workflow task, which takes the signal only when the
// task ends). A delivery is a delivery, whatever happens to ctx after the
// provider took it.
func (a *Activities) send(ctx context.Context, p *provider.Provider, n store.Notification, attempt int) provider.Result {
	payload := n.Payload(attempt)
	payload.MessageID = notification.MessageID(payload.ID, attempt) // what a receipt names
	body, err := json.Marshal(payload)
	if err != nil {
		return provider.Result{Outcome: workflows.OutcomePermanent, Error: "encoding payload: " + err.Error()}
	}
	callCtx, cancelCall := context.WithCancelCause(ctx)
	defer cancelCall(nil)
	done := make(chan struct{})
	defer close(done)
	go a.watchCancel(callCtx, n.ID, done, cancelCall)

	m := provider.Message{NotificationID: n.ID.String(), Attempt: attempt, Channel: string(n.Channel), Recipient: n.Recipient,
		Content: n.Content, Payload: body}
	if n.Subject != nil {
		m.Subject = *n.Subject
	}
	res := p.Sender.Send(callCtx, m)
	if res.Outcome != workflows.OutcomeDelivered && callCtx.Err() != nil {
		// Aborted by a cancel (through Temporal or on the row); the
		// provider may have seen the request, but it did not answer.
		return provider.Result{Outcome: workflows.OutcomeCancelled, Error: "cancelled during the provider call"}
	}
	return res
}

// cancelPoll is how often a provider call still in flight checks the row for
// a cancel request; calls that answer sooner never check.
const cancelPoll = 500 * time.Millisecond

// watchCancel polls the notification's cancel request every cancelPoll until
// done, and aborts the call when one is found.
func (a *Activities) watchCancel(ctx context.Context, id uuid.UUID, done <-chan struct{}, abort context.CancelCauseFunc) {
	t := time.NewTicker(cancelPoll)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		requested, err := store.CancelRequested(cctx, a.Pool, id)
		cancel()
		if err == nil && requested {
			abort(errCancelRequested)
			return
		}
	}
}

var errCancelRequested = errors.New("cancel requested")

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

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
