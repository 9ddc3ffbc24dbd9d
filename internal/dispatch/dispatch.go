// Package dispatch joins the broker to Temporal: the Starter turns each
// queued message into its notification workflow, and NewWorkers runs the
// workflow and the per-channel delivery activities.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"dispatch-engine/activities"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/store"
	"dispatch-engine/internal/wfclient"
	"dispatch-engine/workflows"
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

// Handle is the consumer's queue.Handler. It starts workflow
// notification-<id> with REJECT_DUPLICATE, where "already started" is
// success, so a redelivered message starts nothing twice. A message for a
// notification already terminal is skipped; one that cannot be parsed or
// names no notification is poison.
func (s *Starter) Handle(ctx context.Context, d amqp.Delivery) error {
	var msg notification.Message
	if err := json.Unmarshal(d.Body, &msg); err != nil {
		s.metrics.WorkflowStarts.WithLabelValues(d.RoutingKey, "poison").Inc()
		return &queue.PoisonError{Reason: "unparseable", Err: err}
	}
	id, err := uuid.Parse(msg.ID)
	if err != nil {
		s.metrics.WorkflowStarts.WithLabelValues(d.RoutingKey, "poison").Inc()
		return &queue.PoisonError{Reason: "unparseable", Err: fmt.Errorf("notification id: %w", err)}
	}
	n, err := store.GetNotification(ctx, s.pool, id)
	if errors.Is(err, store.ErrNotFound) {
		s.metrics.WorkflowStarts.WithLabelValues(d.RoutingKey, "poison").Inc()
		return &queue.PoisonError{Reason: "unknown-id", Err: fmt.Errorf("notification %s does not exist", id)}
	}
	if err != nil {
		return err
	}
	if n.Status.Terminal() {
		s.metrics.WorkflowStarts.WithLabelValues(string(n.Channel), "skipped").Inc()
		return nil
	}
	wfID := notification.WorkflowID(id.String())
	status := notification.StatusProcessing
	scheduled := n.ScheduledAt != nil && n.ScheduledAt.After(time.Now())
	if scheduled {
		status = notification.StatusScheduled
		if err := store.MarkScheduled(ctx, s.pool, id); err != nil {
			return err
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
		return err
	}
	attrs := []temporal.SearchAttributeUpdate{
		workflows.SearchTenant.ValueSet(tenant.Name),
		workflows.SearchChannel.ValueSet(string(n.Channel)),
		workflows.SearchPriority.ValueSet(string(n.Priority)),
		workflows.SearchStatus.ValueSet(string(status)),
		workflows.SearchAttempts.ValueSet(int64(n.AttemptBase)),
	}
	if n.BatchID != nil {
		attrs = append(attrs, workflows.SearchBatchID.ValueSet(n.BatchID.String()))
	}
	// The first generation's workflow id is never reused, so a redelivered
	// message starts nothing twice. A retried notification (generation > 0)
	// is a new run of the same id, started once its previous run closed; the
	// memo says which generation a run is.
	reuse, memo := enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE, map[string]any(nil)
	if n.Generation > 0 {
		reuse, memo = enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE, map[string]any{wfclient.GenerationMemo: n.Generation}
	}
	opts := client.StartWorkflowOptions{
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
		TypedSearchAttributes: temporal.NewSearchAttributes(attrs...),
		// No recipient, not even masked: an erased notification leaves
		// nothing of its person in Temporal, whose histories carry ids only.
		StaticSummary: fmt.Sprintf("%s notification (%s)", n.Channel, n.Priority),
	}
	input := workflows.NotificationInput{
		NotificationID:    id.String(),
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
	}
	_, err = s.temporal.ExecuteWorkflow(ctx, opts, workflows.NotificationWorkflow, input)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) && n.Generation > 0 {
		// Either this generation's run started already (a redelivered
		// message), or an earlier generation's run is still open (its
		// cancel or failure not yet handled: a slow worker, a backlog of
		// workflow tasks). That run owns nothing any more: every write of
		// its activities checks its generation, so it would only end
		// SUPERSEDED. It is terminated, by its run id, and this generation
		// starts now, instead of the message coming back every second.
		superseded, serr := s.endSupersededRun(ctx, wfID, string(n.Channel), n.Generation)
		if serr != nil {
			return serr
		}
		if superseded {
			_, err = s.temporal.ExecuteWorkflow(ctx, opts, workflows.NotificationWorkflow, input)
		}
	}
	switch {
	case errors.As(err, &already) && n.Generation > 0:
		// This generation's run started already (a redelivered message),
		// or another earlier run started meanwhile (handled again).
		running, derr := s.runningGeneration(ctx, wfID)
		if derr != nil {
			return derr
		}
		if running < n.Generation {
			return fmt.Errorf("workflow %s: the run of generation %d is still open; generation %d starts after it", wfID, running, n.Generation)
		}
		s.metrics.WorkflowStarts.WithLabelValues(string(n.Channel), "duplicate").Inc()
		return nil
	case errors.As(err, &already):
		s.metrics.WorkflowStarts.WithLabelValues(string(n.Channel), "duplicate").Inc()
		return nil
	case err != nil:
		return fmt.Errorf("starting workflow %s: %w", wfID, err)
	}
	s.metrics.WorkflowStarts.WithLabelValues(string(n.Channel), "started").Inc()
	if scheduled {
		// A cancel that came before the workflow existed found no workflow
		// to signal; the flag on the row stops an attempt, but a scheduled
		// workflow would sleep until scheduledAt before one. The API writes
		// the flag before it signals, so reading it after the start catches
		// every cancel whose signal the workflow missed.
		if err := s.cancelIfRequested(ctx, id, wfID); err != nil {
			return err
		}
	}
	s.log.Debug("workflow started", zap.String("notification_id", id.String()), zap.String("workflow_id", wfID), zap.String("channel", string(n.Channel)))
	return nil
}

// runningGeneration answers the generation of the open run of wfID (0 for
// a first run, which carries no memo).
func (s *Starter) runningGeneration(ctx context.Context, wfID string) (int, error) {
	d, err := s.temporal.DescribeWorkflow(ctx, wfID, "")
	if err != nil {
		return 0, fmt.Errorf("describing workflow %s: %w", wfID, err)
	}
	return wfclient.RunGeneration(d.RawResponse.GetWorkflowExecutionInfo())
}

// endSupersededRun terminates the open run of wfID when it is of a
// generation before gen, by its run id (never a run of gen itself, which a
// redelivered message finds), and reports whether it did, or found the run
// closed meanwhile: either way gen may start now.
func (s *Starter) endSupersededRun(ctx context.Context, wfID, channel string, gen int) (bool, error) {
	d, err := s.temporal.DescribeWorkflow(ctx, wfID, "")
	if err != nil {
		return false, fmt.Errorf("describing workflow %s: %w", wfID, err)
	}
	info := d.RawResponse.GetWorkflowExecutionInfo()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return true, nil
	}
	running, err := wfclient.RunGeneration(info)
	if err != nil || running >= gen {
		return false, err
	}
	runID := info.GetExecution().GetRunId()
	err = s.temporal.TerminateWorkflow(ctx, wfID, runID, fmt.Sprintf("superseded by generation %d", gen))
	var notFound *serviceerror.NotFound
	if err != nil && !errors.As(err, &notFound) { // NotFound: it closed meanwhile
		return false, fmt.Errorf("terminating run %s of workflow %s (generation %d, superseded by %d): %w", runID, wfID, running, gen, err)
	}
	s.metrics.WorkflowStarts.WithLabelValues(channel, "superseded").Inc()
	s.log.Info("ended the run of an earlier generation, still open", zap.String("workflow_id", wfID), zap.String("run_id", runID),
		zap.Int("generation", running), zap.Int("superseded_by", gen))
	return true, nil
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

// WorkerConfig configures the Temporal workers.
type WorkerConfig struct {
	TaskQueues wfclient.TaskQueues
	// Concurrency is the most deliveries run at once per channel.
	Concurrency int
	// StopTimeout bounds how long in-flight activities may finish on stop.
	StopTimeout time.Duration
	// RateLimits is each channel's deliveries per second. Temporal holds each
	// channel's activity task queue to it, so a backlog waits in Temporal in
	// priority order instead of holding worker slots; Redis stays the exact,
	// cluster-wide guard inside the activity.
	RateLimits map[string]int
}

// NewWorkers returns the workflow worker and one activity worker per
// channel, not yet started.
func NewWorkers(tc client.Client, cfg WorkerConfig, acts *activities.Activities) []worker.Worker {
	wf := worker.New(tc, cfg.TaskQueues.Workflows(), worker.Options{
		WorkerStopTimeout:      cfg.StopTimeout,
		DisableEagerActivities: true,
		// The activities are registered here only to run as local
		// activities (the fast path's first attempt, and the bookkeeping:
		// Fail, Cancel, RecordAttempt); this worker polls no activity tasks.
		// The fast path's provider calls are bounded by the activities'
		// FastPathCalls, which defers rather than queues, so the local
		// activity slots (the SDK's default) never hold bookkeeping back.
		LocalActivityWorkerOnly: true,
	})
	wf.RegisterWorkflowWithOptions(workflows.Notification, workflowRegisterOptions())
	registerActivities(wf, acts)
	ops := worker.New(tc, cfg.TaskQueues.Operations(), worker.Options{
		WorkerStopTimeout: cfg.StopTimeout,
		// A step paces itself; a few at once keep several operations going.
		MaxConcurrentActivityExecutionSize: 4,
	})
	registerOperations(ops, acts)
	workers := []worker.Worker{wf, ops}
	for _, channel := range notification.Channels {
		w := worker.New(tc, cfg.TaskQueues.Deliver(string(channel)), worker.Options{
			MaxConcurrentActivityExecutionSize: cfg.Concurrency,
			TaskQueueActivitiesPerSecond:       float64(cfg.RateLimits[string(channel)]),
			// The worker takes tasks no faster than the channel may send, so
			// a backlog stays in Temporal, in priority order, rather than in
			// slots waiting on Redis ahead of later, more urgent work.
			WorkerActivitiesPerSecond: float64(cfg.RateLimits[string(channel)]),
			WorkerStopTimeout:         cfg.StopTimeout,
			// A cancel reaches an attempt on a heartbeat's answer.
			MaxHeartbeatThrottleInterval: workflows.HeartbeatThrottle,
		})
		registerActivities(w, acts)
		workers = append(workers, w)
	}
	return workers
}

// EnsureSearchAttributes registers the workflows' custom search attributes
// on the namespace; attributes that exist already are fine.
func EnsureSearchAttributes(ctx context.Context, tc client.Client, namespace string) error {
	attrs := map[string]enumspb.IndexedValueType{
		workflows.SearchStatus.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchChannel.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchPriority.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchAttempts.GetName(): enumspb.INDEXED_VALUE_TYPE_INT,
		workflows.SearchBatchID.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchProvider.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchTenant.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
	existing, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("listing search attributes: %w", err)
	}
	for name := range existing.GetCustomAttributes() {
		delete(attrs, name)
	}
	if len(attrs) == 0 {
		return nil
	}
	_, err = tc.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: attrs,
	})
	var exists *serviceerror.AlreadyExists
	if err != nil && !errors.As(err, &exists) && !strings.Contains(err.Error(), "already") {
		return fmt.Errorf("adding search attributes: %w", err)
	}
	return nil
}

// RegisterSearchAttributes calls EnsureSearchAttributes until it succeeds,
// with backoff (1s doubling to 30s), until ctx ends or the namespace refuses
// the operator call (Temporal Cloud: register them there by hand). Until
// then workflow starts are refused and their messages wait in the queue.
func RegisterSearchAttributes(ctx context.Context, tc client.Client, namespace string, log *zap.Logger) error {
	backoff := time.Second
	for {
		err := EnsureSearchAttributes(ctx, tc, namespace)
		var denied *serviceerror.PermissionDenied
		switch {
		case err == nil:
			log.Info("search attributes registered")
			return nil
		case errors.As(err, &denied):
			log.Error("may not register search attributes; register them on the namespace by hand", zap.Error(err))
			return err
		}
		log.Warn("could not register search attributes yet; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
