// Package activities holds the workflows' activities, their dependencies
// coming in through Activities (activities.go). Deliver makes one attempt at
// the provider and records it in PostgreSQL; deliver.go reads as its stages,
// each a function on one attempt's state (attempt.go) in the file of its
// concern: route.go (the channel's providers), breaker.go (admission and
// report), slot.go (the rate-limit slot), begin.go, send.go and record.go
// (which also holds RecordAttempt, for an attempt Deliver made but could not
// record). The notification's other steps (Fail: dead-letter record, then
// FAILED; Cancel, MarkRetrying, SettleReceipt) are in bookkeeping.go, the
// operations' step, OperationStep, in operations.go.
package activities

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
	"github.com/dispatch-engine/dispatch-engine/workflows"
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
	// Unsubscribe signs the one-click unsubscribe links of emails in a
	// category that is not critical, served under PublicBaseURL (with a
	// mailto: entry to UnsubscribeMailto when set); with either unset,
	// emails carry no List-Unsubscribe.
	Unsubscribe       *unsubscribe.Signer
	PublicBaseURL     string
	UnsubscribeMailto string
	// Workflows starts digests' workflows on WorkflowTaskQueue; nil starts
	// none (a member's hold then ends on its timer).
	Workflows         WorkflowStarter
	WorkflowTaskQueue string
	// OrderingMaxHold is how long a notification waits at most for the one
	// before it in its ordering key (ORDERING_MAX_HOLD; zero:
	// DefaultOrderingMaxHold).
	OrderingMaxHold time.Duration
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

// callTimeout bounds each call to PostgreSQL inside an attempt, so a
// database that hangs (a partition, not a refusal) fails the call in time.
const callTimeout = 2 * time.Second

// heartbeatEvery paces the heartbeats of an attempt; the workflow's
// heartbeat timeout is 10 s.
const heartbeatEvery = time.Second

// keepAlive heartbeats until the returned stopBeats is called: whatever the
// attempt waits on (PostgreSQL, Redis, the provider), a lost worker is
// noticed within the heartbeat timeout and a live one is never taken for
// lost, and a cancel reaches ctx. A local activity has no heartbeats.
func keepAlive(ctx context.Context) (stopBeats func()) {
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

// notAttempted marks err as trouble before the attempt began: nothing was
// sent and the attempt was not counted.
func notAttempted(err error) error {
	return temporal.NewApplicationErrorWithCause("not attempted: "+err.Error(), workflows.ErrNotAttempted, err)
}

// nonEmpty is s, or nil for no text (a NULL column).
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
