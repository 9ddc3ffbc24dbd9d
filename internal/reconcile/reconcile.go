// Package reconcile finds notifications that fell off their path and puts
// them back: the cure for "stuck" deliveries. A notification that is not
// terminal, has no outbox row and has sat untouched is checked against
// Temporal: with no workflow it is requeued through the outbox (a lost broker
// message, a start that never happened); with a workflow that ended without
// finishing it (terminated by an operator, say) it is dead-lettered and
// marked FAILED with reason "abandoned".
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/store"
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
	// Topology names the dead-letter exchange.
	Topology queue.Topology
}

// Reconciler scans for notifications that fell off their path.
type Reconciler struct {
	cfg      Config
	pool     *pgxpool.Pool
	temporal client.Client
	dlq      *queue.Publisher
	repaired *prometheus.CounterVec
	log      *zap.Logger
}

// New returns a Reconciler; repaired counts what it did, by action.
func New(cfg Config, pool *pgxpool.Pool, tc client.Client, dlq *queue.Publisher, repaired *prometheus.CounterVec, log *zap.Logger) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 100
	}
	if cfg.After <= 0 {
		cfg.After = 2 * time.Minute
	}
	return &Reconciler{cfg: cfg, pool: pool, temporal: tc, dlq: dlq, repaired: repaired, log: log}
}

// Run scans every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := r.Scan(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconciler scan failed; trying again next interval", zap.Error(err))
		}
	}
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

	stale, err := store.ListStale(ctx, conn, r.cfg.After, r.cfg.Limit)
	if err != nil {
		return 0, err
	}
	repaired := 0
	for _, n := range stale {
		action, err := r.check(ctx, n)
		if err != nil {
			return repaired, err
		}
		if action != "" {
			repaired++
			r.repaired.WithLabelValues(action).Inc()
			r.log.Info("reconciler repaired a notification", zap.String("notification_id", n.ID.String()),
				zap.String("workflow_id", notification.WorkflowID(n.ID.String())), zap.String("channel", n.Channel),
				zap.String("status", string(n.Status)), zap.String("action", action))
		}
	}
	return repaired, nil
}

// check looks at one stale notification's workflow and repairs what needs
// it; it returns the action taken, or "" when the workflow is running.
func (r *Reconciler) check(ctx context.Context, n store.Stale) (string, error) {
	wfID := notification.WorkflowID(n.ID.String())
	desc, err := r.temporal.DescribeWorkflowExecution(ctx, wfID, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		ok, err := store.Requeue(ctx, r.pool, n.ID)
		if err != nil || !ok {
			return "", err
		}
		return "requeued", nil
	case err != nil:
		return "", fmt.Errorf("describing %s: %w", wfID, err)
	}
	if desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return "", nil
	}
	// The workflow is over but the notification is not: dead-letter it,
	// then mark it FAILED, as the workflow itself would have.
	body, err := json.Marshal(notification.Message{ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority})
	if err != nil {
		return "", err
	}
	err = r.dlq.Publish(ctx, queue.Outgoing{
		Exchange:   r.cfg.Topology.DeadLetterExchange(),
		RoutingKey: n.Channel,
		Body:       body,
		MessageID:  n.ID.String(),
		Headers: amqp.Table{
			"x-reason":          ReasonAbandoned,
			"x-workflow-status": desc.GetWorkflowExecutionInfo().GetStatus().String(),
			"x-failed-at":       time.Now().UTC().Format(time.RFC3339Nano),
			"x-source":          "reconciler",
		},
	})
	if err != nil {
		return "", err
	}
	status, err := store.MarkFailed(ctx, r.pool, n.ID, ReasonAbandoned, "the workflow ended ("+desc.GetWorkflowExecutionInfo().GetStatus().String()+") before the notification did")
	if err != nil || status != notification.StatusFailed {
		return "", err
	}
	return "abandoned", nil
}
