package dispatch

import (
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

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
	wf.RegisterWorkflowWithOptions(workflows.Digest, workflow.RegisterOptions{Name: workflows.DigestWorkflow})
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
