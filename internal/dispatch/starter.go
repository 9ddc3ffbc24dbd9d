package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// StarterConfig configures a Starter.
type StarterConfig struct {
	TaskQueues wfclient.TaskQueues
	Retry      workflows.RetryPolicy
	// AttemptTimeout is the Deliver activity's start-to-close timeout.
	AttemptTimeout time.Duration
	// FastPath has the workflow run the first attempt as a local activity,
	// inside its first task, unless the channel is saturated
	// (DELIVERY_FAST_PATH). The attempt takes its rate-limit slot itself,
	// just before the send.
	FastPath bool
}

// Limiter tells whether a channel's slots are all taken lately.
type Limiter interface {
	Saturated(channel string) bool
}

// Starter starts the workflow of each queued notification.
type Starter struct {
	cfg      StarterConfig
	pool     *pgxpool.Pool
	temporal client.Client
	limiter  Limiter
	tenants  tenants
	metrics  *metrics.Worker
	log      *zap.Logger
}

// NewStarter returns a Starter; limiter is used on the fast path.
func NewStarter(cfg StarterConfig, pool *pgxpool.Pool, tc client.Client, limiter Limiter, m *metrics.Worker, log *zap.Logger) *Starter {
	return &Starter{cfg: cfg, pool: pool, temporal: tc, limiter: limiter, metrics: m, log: log}
}

// The results dispatch_workflow_starts_total counts, by channel.
const (
	resultStarted    = "started"
	resultDuplicate  = "duplicate"  // the run was there already
	resultSkipped    = "skipped"    // the notification is terminal
	resultPoison     = "poison"     // unparseable, or no such notification
	resultSuperseded = "superseded" // an earlier generation's run was ended
)

// workflowStart is one notification's workflow start: the row it is for,
// and what ExecuteWorkflow is given.
type workflowStart struct {
	n         store.Notification
	wfID      string
	scheduled bool
	opts      client.StartWorkflowOptions
	input     workflows.NotificationInput
}

// Handle is the consumer's queue.Handler. It starts workflow
// notification-<id> with REJECT_DUPLICATE, where "already started" is
// success, so a redelivered message starts nothing twice. A message for a
// notification already terminal is skipped; one that cannot be parsed or
// names no notification is poison.
func (s *Starter) Handle(ctx context.Context, d amqp.Delivery) error {
	n, err := s.readNotification(ctx, d)
	if err != nil {
		return err
	}
	if n.Status.Terminal() {
		s.count(string(n.Channel), resultSkipped)
		return nil
	}
	ws, err := s.prepare(ctx, n)
	if err != nil {
		return err
	}
	result, err := s.start(ctx, ws)
	if err != nil {
		return err
	}
	s.count(string(n.Channel), result)
	if result != resultStarted {
		return nil
	}
	if ws.scheduled {
		// A cancel that came before the workflow existed found no workflow
		// to signal; the flag on the row stops an attempt, but a scheduled
		// workflow would sleep until scheduledAt before one. The API writes
		// the flag before it signals, so reading it after the start catches
		// every cancel whose signal the workflow missed.
		if err := s.cancelIfRequested(ctx, n.ID, ws.wfID); err != nil {
			return err
		}
	}
	s.log.Debug("workflow started", zap.String("notification_id", n.ID.String()), zap.String("workflow_id", ws.wfID), zap.String("channel", string(n.Channel)))
	return nil
}

// readNotification reads the row a message names. A message that cannot be
// parsed, or names no notification, is poison.
func (s *Starter) readNotification(ctx context.Context, d amqp.Delivery) (store.Notification, error) {
	var msg notification.Message
	if err := json.Unmarshal(d.Body, &msg); err != nil {
		return store.Notification{}, s.poison(d, "unparseable", err)
	}
	id, err := uuid.Parse(msg.ID)
	if err != nil {
		return store.Notification{}, s.poison(d, "unparseable", fmt.Errorf("notification id: %w", err))
	}
	n, err := store.GetNotification(ctx, s.pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Notification{}, s.poison(d, "unknown-id", fmt.Errorf("notification %s does not exist", id))
	}
	return n, err
}

// poison counts a poison message on the channel it came from and returns
// the error that sends it to the dead letters.
func (s *Starter) poison(d amqp.Delivery, reason string, err error) error {
	s.count(d.RoutingKey, resultPoison)
	return &queue.PoisonError{Reason: reason, Err: err}
}

// prepare builds the workflow start of a notification not yet terminal. A
// notification scheduled for later is marked SCHEDULED first.
func (s *Starter) prepare(ctx context.Context, n store.Notification) (*workflowStart, error) {
	status := notification.StatusProcessing
	scheduled := n.ScheduledAt != nil && n.ScheduledAt.After(time.Now())
	if scheduled {
		status = notification.StatusScheduled
		if err := store.MarkScheduled(ctx, s.pool, n.ID); err != nil {
			return nil, err
		}
	}
	// Fast path: unless the channel was saturated lately, let the workflow
	// run the first attempt at once, inside its first task; that attempt
	// takes a slot only if one is free when it sends, and otherwise defers
	// to the queue. When the channel is saturated, start the workflow
	// normally: the attempt then waits in the channel's activity task queue,
	// in priority order, for Temporal's and Redis's limits. No slot is taken
	// here: one paid long before its send (a backlog of workflow tasks,
	// a retried task) could burst past the limit.
	fastPath := s.cfg.FastPath && !scheduled && !s.limiter.Saturated(string(n.Channel))
	tenant, err := s.tenants.get(ctx, s.pool, n.TenantID)
	if err != nil {
		return nil, err
	}
	wfID := notification.WorkflowID(n.ID.String())
	return &workflowStart{
		n:         n,
		wfID:      wfID,
		scheduled: scheduled,
		opts:      s.startOptions(n, wfID, tenant, status),
		input:     s.workflowInput(n, fastPath),
	}, nil
}

// startOptions are the options of a notification's workflow start: its id
// and reuse policy, its priority and fairness, its search attributes.
func (s *Starter) startOptions(n store.Notification, wfID string, tenant store.Tenant, status notification.Status) client.StartWorkflowOptions {
	// The first generation's workflow id is never reused, so a redelivered
	// message starts nothing twice. A retried notification (generation > 0)
	// is a new run of the same id, started once its previous run closed; the
	// memo says which generation a run is.
	reuse, memo := enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE, map[string]any(nil)
	if n.Generation > 0 {
		reuse, memo = enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE, map[string]any{wfclient.GenerationMemo: n.Generation}
	}
	return client.StartWorkflowOptions{
		ID:                                       wfID,
		TaskQueue:                                s.cfg.TaskQueues.Workflows(),
		WorkflowIDReusePolicy:                    reuse,
		Memo:                                     memo,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		// The worker lives in this process: the first workflow task runs here
		// without a round trip through the task queue.
		EnableEagerStart: true,
		// Priority orders a channel's backlog; within a priority, the
		// tenant's fairness key and weight share the channel among tenants
		// (DESIGN §13). The activities inherit both.
		Priority: temporal.Priority{
			PriorityKey:    notification.TemporalPriorityKey(n.Priority),
			FairnessKey:    tenant.Name,
			FairnessWeight: tenant.Weight,
		},
		TypedSearchAttributes: searchAttributes(n, tenant, status),
		// No recipient, not even masked: an erased notification leaves
		// nothing of its person in Temporal, whose histories carry ids only
		// (so a summary or a detail never names one either).
		StaticSummary: fmt.Sprintf("%s notification (%s) of tenant %s", n.Channel, n.Priority, tenant.Name),
	}
}

// workflowInput is the input of a notification's workflow.
func (s *Starter) workflowInput(n store.Notification, fastPath bool) workflows.NotificationInput {
	return workflows.NotificationInput{
		NotificationID:    n.ID.String(),
		Channel:           string(n.Channel),
		Priority:          string(n.Priority),
		ActivityTaskQueue: s.cfg.TaskQueues.Deliver(string(n.Channel)),
		Retry:             s.cfg.Retry,
		AttemptTimeout:    s.cfg.AttemptTimeout,
		ScheduledAt:       n.ScheduledAt,
		ExpiresAt:         n.ExpiresAt,
		FastPath:          fastPath,
		AttemptBase:       n.AttemptBase,
		Generation:        n.Generation,
		Fallback:          n.RecipientID != nil && len(n.Channels) > 1,
		Ordered:           n.OrderingKey != nil,
		DigestMessage:     n.DigestID != nil && *n.DigestID == n.ID,
	}
}

// start starts the workflow and answers resultStarted, or resultDuplicate
// when its run was there already (see alreadyStarted).
func (s *Starter) start(ctx context.Context, ws *workflowStart) (string, error) {
	err := s.execute(ctx, ws)
	switch {
	case isAlreadyStarted(err):
		return s.alreadyStarted(ctx, ws)
	case err != nil:
		return "", err
	}
	return resultStarted, nil
}

// execute asks Temporal to start the workflow.
func (s *Starter) execute(ctx context.Context, ws *workflowStart) error {
	if _, err := s.temporal.ExecuteWorkflow(ctx, ws.opts, workflows.NotificationWorkflow, ws.input); err != nil {
		return fmt.Errorf("starting workflow %s: %w", ws.wfID, err)
	}
	return nil
}

// cancelIfRequested signals the cancel to a just-started workflow whose
// notification has a cancel request.
func (s *Starter) cancelIfRequested(ctx context.Context, id uuid.UUID, wfID string) error {
	requested, err := store.CancelRequested(ctx, s.pool, id)
	if err != nil || !requested {
		return err
	}
	if err := s.temporal.SignalWorkflow(ctx, wfID, "", workflows.CancelSignal, nil); err != nil {
		return fmt.Errorf("signalling the cancel requested before workflow %s started: %w", wfID, err)
	}
	return nil
}

// count counts one message's result on channel.
func (s *Starter) count(channel, result string) {
	s.metrics.WorkflowStarts.WithLabelValues(channel, result).Inc()
}
