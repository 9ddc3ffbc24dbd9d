package activities_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// slowSignaler plays a Temporal frontend that takes its time over every
// signal (a loaded cluster), and records the signals it was sent.
type slowSignaler struct {
	each time.Duration
	mu   sync.Mutex
	got  []string
}

func (s *slowSignaler) SignalWorkflow(ctx context.Context, workflowID, _, _ string, _ any) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.each):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, workflowID)
	return nil
}

func (s *slowSignaler) signalled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// A cancel page of notifications in flight is followed by a cancel signal
// to each of their workflows. However long that takes, the step heartbeats
// all along (by the clock, not after the last signal), so the step is not
// timed out by its heartbeat timeout meanwhile, and it signals them all.
func TestOperationStepHeartbeatsWhileItSignals(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	const inFlight = 40
	for range inFlight {
		n := createNotification(t, pool)
		_, err := pool.Exec(ctx, `UPDATE notifications SET status = 'PROCESSING' WHERE id = $1`, n.ID)
		require.NoError(t, err)
	}
	processing := notification.StatusProcessing
	op, _, err := store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionCancel,
		Filter: store.OperationFilter{Status: &processing}, MaxPerSecond: 5000})
	require.NoError(t, err)
	require.EqualValues(t, inFlight, op.Matched)

	signaler := &slowSignaler{each: 1500 * time.Millisecond}
	acts := &activities.Activities{Pool: pool, Temporal: signaler, Metrics: metrics.NewWorker(), Log: zap.NewNop()}

	clock := &heartbeatClock{}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: []interceptor.WorkerInterceptor{clock}})
	env.RegisterActivityWithOptions(acts.OperationStep, activity.RegisterOptions{Name: workflows.OperationStepActivity})
	started := time.Now()
	val, err := env.ExecuteActivity(workflows.OperationStepActivity, workflows.OperationStepInput{OperationID: op.ID.String()})
	require.NoError(t, err)
	var res workflows.OperationStepResult
	require.NoError(t, val.Get(&res))
	ended := time.Now()

	require.Len(t, signaler.signalled(), inFlight, "every workflow in flight hears the cancel")
	beats := clock.times()
	points := append(append([]time.Time{started}, beats...), ended)
	var longest time.Duration
	for i := 1; i < len(points); i++ {
		longest = max(longest, points[i].Sub(points[i-1]))
	}
	require.Less(t, longest, 3*time.Second,
		"the step went %s without a heartbeat (heartbeats %d over %s)", longest, len(beats), ended.Sub(started))
}

// heartbeatClock records when an activity records a heartbeat (before the
// SDK batches heartbeats for the server).
type heartbeatClock struct {
	interceptor.WorkerInterceptorBase
	mu sync.Mutex
	at []time.Time
}

func (h *heartbeatClock) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &heartbeatInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, clock: h}
}

func (h *heartbeatClock) times() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.at)
}

type heartbeatInbound struct {
	interceptor.ActivityInboundInterceptorBase
	clock *heartbeatClock
}

func (i *heartbeatInbound) Init(outbound interceptor.ActivityOutboundInterceptor) error {
	return i.Next.Init(&heartbeatOutbound{ActivityOutboundInterceptorBase: interceptor.ActivityOutboundInterceptorBase{Next: outbound}, clock: i.clock})
}

type heartbeatOutbound struct {
	interceptor.ActivityOutboundInterceptorBase
	clock *heartbeatClock
}

func (o *heartbeatOutbound) RecordHeartbeat(ctx context.Context, details ...any) {
	o.clock.mu.Lock()
	o.clock.at = append(o.clock.at, time.Now())
	o.clock.mu.Unlock()
	o.Next.RecordHeartbeat(ctx, details...)
}
