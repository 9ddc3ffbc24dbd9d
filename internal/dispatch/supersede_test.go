package dispatch_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/dispatch"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

var (
	temporalOnce sync.Once
	temporalSrv  *testenv.Temporal
	temporalErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if temporalSrv != nil {
		temporalSrv.Stop()
	}
	os.Exit(code)
}

// sharedTemporal is one Temporal server for the package's tests that need
// one (the dev server from the pinned CLI unless one answers already).
func sharedTemporal(t *testing.T) client.Client {
	t.Helper()
	temporalOnce.Do(func() { temporalSrv, temporalErr = testenv.StartTemporal(context.Background()) })
	require.NoError(t, temporalErr)
	tc, err := client.Dial(client.Options{HostPort: temporalSrv.Address, Namespace: temporalSrv.Namespace})
	require.NoError(t, err)
	t.Cleanup(tc.Close)
	return tc
}

type neverSaturated struct{}

func (neverSaturated) Saturated(string) bool { return false }

// A bulk cancel then a bulk retry of a backlog whose first runs are still
// open (no worker takes their workflow tasks here: a worker slow to, or a
// backlog of tasks, does the same). Each retried generation's message ends
// the open run of the earlier generation and starts its own at once,
// instead of coming back every second and holding the channel's consumer
// slots: a new notification queued behind them starts too.
func TestRetriesWhoseEarlierRunsAreOpenDoNotHoldTheChannel(t *testing.T) {
	ctx := context.Background()
	tc := sharedTemporal(t)
	pool, _ := testenv.Pool(t)
	topo := testenv.Topology(t)
	queues := wfclient.TaskQueues{Prefix: testenv.Name("sup") + "-"}
	m := metrics.NewWorker()
	starter := dispatch.NewStarter(dispatch.StarterConfig{TaskQueues: queues, Retry: workflows.RetryPolicy{MaxAttempts: 3,
		InitialInterval: time.Second, BackoffCoefficient: 2, MaxInterval: time.Minute}, AttemptTimeout: 30 * time.Second},
		pool, tc, neverSaturated{}, m, zap.NewNop())
	t.Cleanup(func() { terminateAll(tc, queues) })

	create := func() store.Notification {
		n, err := store.CreateNotification(ctx, pool, store.NewNotification{ID: uuid.Must(uuid.NewV7()), Channel: notification.SMS,
			Priority: notification.Normal, Recipient: "+14155550123", Content: "hello"})
		require.NoError(t, err)
		return n
	}
	message := func(n store.Notification) queue.Outgoing {
		body, err := json.Marshal(notification.Message{ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority})
		require.NoError(t, err)
		return queue.Outgoing{Exchange: topo.Exchange(), RoutingKey: string(n.Channel), Body: body, MessageID: n.ID.String()}
	}

	const backlog = 6
	var retried []store.Notification
	for range backlog {
		n := create()
		// Generation 0's run starts, and stays open.
		require.NoError(t, starter.Handle(ctx, delivery(t, notification.Message{ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority})))
		_, _, err := store.RequestCancel(ctx, pool, n.ID)
		require.NoError(t, err)
		n, _, err = store.RetryNotification(ctx, pool, n.ID, nil)
		require.NoError(t, err)
		retried = append(retried, n)
	}
	fresh := create()

	pub := queue.NewPublisher(testenv.Shared(t).RabbitMQURL, topo)
	t.Cleanup(func() { _ = pub.Close() })
	consumer := queue.NewConsumer(queue.ConsumerConfig{URL: testenv.Shared(t).RabbitMQURL, Topology: topo,
		Channels: []notification.Channel{notification.SMS}, Concurrency: 2}, starter.Handle, pub, zap.NewNop())
	msgs := make([]queue.Outgoing, 0, backlog+1)
	for _, n := range retried {
		msgs = append(msgs, message(n))
	}
	require.NoError(t, pub.Publish(ctx, append(msgs, message(fresh))...))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = consumer.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	require.Eventually(t, func() bool {
		_, err := tc.DescribeWorkflow(ctx, notification.WorkflowID(fresh.ID.String()), "")
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "the new notification's workflow never started behind the retries")
	for _, n := range retried {
		require.Eventually(t, func() bool {
			d, err := tc.DescribeWorkflow(ctx, notification.WorkflowID(n.ID.String()), "")
			if err != nil {
				return false
			}
			g, err := wfclient.RunGeneration(d.RawResponse.GetWorkflowExecutionInfo())
			return err == nil && g == 1 && d.RawResponse.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
		}, 20*time.Second, 50*time.Millisecond, "generation 1 of %s never started", n.ID)
	}
	require.Equal(t, float64(backlog), workflowStarts(t, m, string(notification.SMS), "superseded"), "each earlier run was ended once")
}

// A redelivered message of a generation whose run is open ends nothing.
func TestRedeliveredRetryMessageLeavesItsOwnRunAlone(t *testing.T) {
	ctx := context.Background()
	tc := sharedTemporal(t)
	pool, _ := testenv.Pool(t)
	queues := wfclient.TaskQueues{Prefix: testenv.Name("sup") + "-"}
	m := metrics.NewWorker()
	starter := dispatch.NewStarter(dispatch.StarterConfig{TaskQueues: queues, Retry: workflows.RetryPolicy{MaxAttempts: 3,
		InitialInterval: time.Second, BackoffCoefficient: 2, MaxInterval: time.Minute}, AttemptTimeout: 30 * time.Second},
		pool, tc, neverSaturated{}, m, zap.NewNop())
	t.Cleanup(func() { terminateAll(tc, queues) })
	n, err := store.CreateNotification(ctx, pool, store.NewNotification{ID: uuid.Must(uuid.NewV7()), Channel: notification.SMS,
		Priority: notification.Normal, Recipient: "+14155550123", Content: "hello"})
	require.NoError(t, err)
	msg := notification.Message{ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority}
	require.NoError(t, starter.Handle(ctx, delivery(t, msg)))
	_, _, err = store.RequestCancel(ctx, pool, n.ID)
	require.NoError(t, err)
	_, _, err = store.RetryNotification(ctx, pool, n.ID, nil)
	require.NoError(t, err)

	require.NoError(t, starter.Handle(ctx, delivery(t, msg)))
	first, err := tc.DescribeWorkflow(ctx, notification.WorkflowID(n.ID.String()), "")
	require.NoError(t, err)
	require.NoError(t, starter.Handle(ctx, delivery(t, msg)), "the same generation again: a duplicate")
	again, err := tc.DescribeWorkflow(ctx, notification.WorkflowID(n.ID.String()), "")
	require.NoError(t, err)

	require.Equal(t, first.RawResponse.GetWorkflowExecutionInfo().GetExecution().GetRunId(), again.RawResponse.GetWorkflowExecutionInfo().GetExecution().GetRunId())
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, again.RawResponse.GetWorkflowExecutionInfo().GetStatus())
	require.Equal(t, 1.0, workflowStarts(t, m, string(notification.SMS), "duplicate"))
	require.Equal(t, 1.0, workflowStarts(t, m, string(notification.SMS), "superseded"))
}

// terminateAll ends the test's runs still open on queues.
func terminateAll(tc client.Client, queues wfclient.TaskQueues) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	page, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: "TaskQueue = '" + queues.Workflows() + "' AND ExecutionStatus = 'Running'",
	})
	if err != nil {
		return
	}
	for _, e := range page.GetExecutions() {
		_ = tc.TerminateWorkflow(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId(), "test finished")
	}
}
