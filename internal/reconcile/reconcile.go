// Package reconcile finds notifications that fell off their path and puts
// them back: the cure for "stuck" deliveries. A notification that is not
// terminal, has no outbox row and has sat untouched is checked against
// Temporal: with no workflow it is requeued through the outbox (a lost broker
// message, a start that never happened), but only while its channel's queue
// is empty, for until then its message may simply be waiting in a backlog;
// with a workflow that ended without finishing it (terminated by an
// operator, say) it is marked FAILED with reason "abandoned" and
// dead-lettered in the same statement, unless it became terminal meanwhile.
// Sweeps page through the candidates with a cursor, so the oldest (waiting
// on a running workflow) never starve the others.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/periodic"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
)

// ReasonAbandoned is the failure reason of a notification whose workflow
// ended without bringing it to a terminal status.
const ReasonAbandoned = "abandoned"

// lockKey is the advisory lock that lets one reconciler sweep at a time.
const lockKey = 0x6469737061746368 // "dispatch"

// Config configures a Reconciler.
type Config struct {
	// Interval between scans (RETRY_SCAN_INTERVAL). Default 5s.
	Interval time.Duration
	// Limit is the most notifications checked per scan (RETRY_SCAN_LIMIT). Default 100.
	Limit int
	// After is how long a notification must sit untouched (RECONCILE_AFTER). Default 2m.
	After time.Duration
}

// QueueDepths reports the messages waiting in each channel's queue.
type QueueDepths func(ctx context.Context) (map[string]int, error)

// Reconciler scans for notifications that fell off their path.
type Reconciler struct {
	cfg      Config
	pool     *pgxpool.Pool
	temporal client.Client
	depths   QueueDepths
	repaired *prometheus.CounterVec
	log      *zap.Logger
	// wrote, when set, is called after a repair wrote outbox rows.
	wrote func()
	// cursor is where the sweep stands; it wraps to the start when a scan
	// reaches the end.
	cursor store.StaleCursor
}

// New returns a Reconciler; depths tells whether a channel's queue holds
// messages, repaired counts what it did, by action, and wrote (optional) is
// called after it wrote outbox rows (the relay's wake-up).
func New(cfg Config, pool *pgxpool.Pool, tc client.Client, depths QueueDepths, repaired *prometheus.CounterVec, wrote func(), log *zap.Logger) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 100
	}
	if cfg.After <= 0 {
		cfg.After = 2 * time.Minute
	}
	return &Reconciler{cfg: cfg, pool: pool, temporal: tc, depths: depths, repaired: repaired, wrote: wrote, log: log}
}

// Run scans every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	periodic.Run(ctx, r.cfg.Interval, r.log, "reconciler scan", func(ctx context.Context) error {
		_, err := r.Scan(ctx)
		return err
	})
	return nil
}

// Scan runs one sweep, if no other reconciler is sweeping, and returns how
// many notifications it repaired.
func (r *Reconciler) Scan(ctx context.Context) (int, error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquiring a connection: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(lockKey)).Scan(&locked); err != nil {
		return 0, fmt.Errorf("taking the reconciler lock: %w", err)
	}
	if !locked {
		return 0, nil
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(lockKey)) }()

	stale, err := store.ListStale(ctx, conn, r.cfg.After, r.cfg.Limit, r.cursor)
	if err != nil {
		return 0, err
	}
	if len(stale) < r.cfg.Limit {
		r.cursor = store.StaleCursor{} // the end: the next sweep starts over
	} else {
		r.cursor = stale[len(stale)-1].Cursor()
	}
	if len(stale) == 0 {
		return 0, nil
	}
	// A message may wait in a backlog for longer than After: a notification
	// without a workflow is requeued only when its channel's queue is empty
	// (its message cannot be there), else it would be sent twice. Unknown
	// depths requeue nothing this sweep.
	depths, err := r.depths(ctx)
	if err != nil {
		r.log.Warn("reconciler cannot see the queues; requeueing nothing this sweep", zap.Error(err))
		depths = nil
	}
	repaired := 0
	for _, n := range stale {
		waiting, known := depths[string(n.Channel)]
		action, err := r.check(ctx, n, known && waiting == 0)
		if err != nil {
			return repaired, err
		}
		if action != "" {
			repaired++
			r.repaired.WithLabelValues(action).Inc()
			r.log.Info("reconciler repaired a notification", zap.String("notification_id", n.ID.String()),
				zap.String("workflow_id", notification.WorkflowID(n.ID.String())), zap.String("channel", string(n.Channel)),
				zap.String("status", string(n.Status)), zap.String("action", action))
		}
	}
	if repaired > 0 && r.wrote != nil {
		r.wrote()
	}
	return repaired, nil
}

// requeue hands a notification without a workflow back to the outbox,
// when its channel's queue is empty (mayRequeue).
func (r *Reconciler) requeue(ctx context.Context, n store.Stale, mayRequeue bool) (string, error) {
	if !mayRequeue {
		return "", nil
	}
	ok, err := store.Requeue(ctx, r.pool, n.ID)
	if err != nil || !ok {
		return "", err
	}
	return "requeued", nil
}

// check looks at one stale notification's workflow and repairs what needs
// it; it returns the action taken, or "" when the workflow is running or
// nothing may be done yet. mayRequeue says the channel's queue is empty.
func (r *Reconciler) check(ctx context.Context, n store.Stale, mayRequeue bool) (string, error) {
	wfID := notification.WorkflowID(n.ID.String())
	described, err := r.temporal.DescribeWorkflow(ctx, wfID, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return r.requeue(ctx, n, mayRequeue)
	case err != nil:
		return "", fmt.Errorf("describing %s: %w", wfID, err)
	}
	desc := described.RawResponse
	status := desc.GetWorkflowExecutionInfo().GetStatus()
	if status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return "", nil
	}
	if generation, err := wfclient.RunGeneration(desc.GetWorkflowExecutionInfo()); err != nil {
		return "", err
	} else if generation < n.Generation {
		// The run that ended delivered an earlier generation: this one's
		// has not started, as if there were no workflow.
		return r.requeue(ctx, n, mayRequeue)
	}
	// The workflow is over but the notification is not: fail it and
	// dead-letter it, as the workflow itself would have, in one statement
	// that does nothing if it became terminal meanwhile (this snapshot may
	// be stale: delivered just now, say).
	failed, err := store.Fail(ctx, r.pool, n.ID, notification.DeadLetter{
		Reason: ReasonAbandoned, Source: notification.SourceReconciler, Attempts: n.Attempts,
		LastError: "the workflow ended (" + status.String() + ") before the notification did", FailedAt: time.Now(),
	})
	if err != nil || failed.Status != notification.StatusFailed || failed.FailureReason == nil || *failed.FailureReason != ReasonAbandoned {
		return "", err
	}
	return "abandoned", nil
}
