//go:build record

package workflows_test

// Recording the replay histories in testdata/ (run after an intended change
// to the workflow's command sequence, before any such workflow runs in
// production):
//
//	go test -tags record -run TestRecordHistories -count=1 ./workflows/
//
// It runs each scenario on a real Temporal server (the one on 127.0.0.1:7233,
// or a dev server from the pinned CLI) with scripted activities, and writes
// each history as JSON.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

type scenario struct {
	name  string
	in    func(workflows.NotificationInput) workflows.NotificationInput
	steps []deliverStep
	// block makes Deliver wait (heartbeating) until it is cancelled.
	block bool
	// cancelAfter signals cancel once this many Deliver calls happened (0:
	// once the workflow is waiting on its first timer).
	cancelAfter int
	cancel      bool
	// receipt is signalled once the workflow waits for a receipt (SENT).
	receipt *workflows.Receipt
	// fallback are the channels the Fallback activity answers in turn (a
	// profile's notification); each gets a delivery queue of its own.
	fallback []string
	// holdFor sets a held step's HeldUntil this long after its call; wake
	// signals the wake once the workflow holds (SCHEDULED).
	holdFor time.Duration
	wake    bool
}

func TestRecordHistories(t *testing.T) {
	ctx := context.Background()
	srv, err := testenv.StartTemporal(ctx)
	require.NoError(t, err)
	defer srv.Stop()
	tc, err := client.Dial(client.Options{HostPort: srv.Address, Namespace: srv.Namespace, Identity: "history-recorder"})
	require.NoError(t, err)
	defer tc.Close()

	fast := workflows.RetryPolicy{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 2, MaxInterval: time.Second}
	same := func(in workflows.NotificationInput) workflows.NotificationInput { return in }
	local := func(in workflows.NotificationInput) workflows.NotificationInput {
		in.FastPath = true
		return in
	}
	profile := func(in workflows.NotificationInput) workflows.NotificationInput {
		in.FastPath, in.Fallback, in.Channel = true, true, "push"
		return in
	}
	scenarios := []scenario{
		{name: "delivered_first_attempt", in: same, steps: []deliverStep{delivered()}},
		{name: "retry_then_delivered", in: same, steps: []deliverStep{retry(503, 0), delivered()}},
		{name: "activity_error_then_delivered", in: same, steps: []deliverStep{{err: errors.New("worker lost")}, delivered()}},
		{name: "permanent_failure", in: same, steps: []deliverStep{{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "provider answered 400"}}}},
		{name: "exhausted", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			in.Retry.MaxAttempts = 2
			return in
		}, steps: []deliverStep{retry(500, 0)}},
		{name: "skipped_cancelled", in: same, steps: []deliverStep{{res: workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: "CANCELLED"}}}},
		{name: "cancel_during_backoff", in: same, steps: []deliverStep{retry(503, time.Hour)}, cancel: true, cancelAfter: 1},
		{name: "cancel_during_attempt", in: same, block: true, cancel: true, cancelAfter: 1},
		{name: "scheduled_then_delivered", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			at := time.Now().Add(300 * time.Millisecond)
			in.ScheduledAt = &at
			return in
		}, steps: []deliverStep{delivered()}},
		{name: "fast_path_delivered", in: local, steps: []deliverStep{delivered()}},
		{name: "fast_path_retry_then_delivered", in: local, steps: []deliverStep{retry(503, 0), delivered()}},
		{name: "not_attempted_then_delivered", in: same, steps: []deliverStep{notAttempted(), notAttempted(), delivered()}},
		{name: "fast_path_cancel_during_attempt", in: local, block: true, cancel: true, cancelAfter: 1},
		{name: "not_attempted_continue_as_new", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			in.MaxWaitsPerRun = 2
			return in
		}, steps: []deliverStep{notAttempted(), notAttempted(), delivered()}},
		{name: "fast_path_deferred_then_delivered", in: local, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeDeferred, Error: "no rate-limit slot free"}}, delivered()}},
		{name: "permanent_failure_local_bookkeeping", in: same, steps: []deliverStep{{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "provider answered 400"}}}},
		{name: "failover_then_delivered", in: same, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeRetry, StatusCode: 502, Error: "provider answered 502", Provider: "a", Alternatives: 1}},
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200, Provider: "b"}}}},
		{name: "every_breaker_open_then_delivered", in: local, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeUnavailable, RetryAfter: 300 * time.Millisecond, Error: "every provider of sms has its breaker open"}},
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200, Provider: "a"}}}},
		{name: "receipt_delivered", in: local, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeSent, StatusCode: 200, Provider: "a", AwaitReceipt: time.Minute, OnNoReceipt: "delivered"}}},
			receipt: &workflows.Receipt{Provider: "a", Status: "delivered"}},
		{name: "receipt_failed_then_next_provider", in: local, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeSent, StatusCode: 200, Provider: "a", AwaitReceipt: time.Minute, OnNoReceipt: "delivered"}},
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, StatusCode: 200, Provider: "b"}}},
			receipt: &workflows.Receipt{Provider: "a", Status: "failed", Reason: "unreachable"}},
		{name: "retried_generation_retry_then_delivered", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			in.AttemptBase, in.Generation, in.FastPath = 3, 1, true
			return in
		}, steps: []deliverStep{retry(503, 0), delivered()}},
		{name: "expired_before_first_attempt", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			at := time.Now().Add(-time.Second)
			in.ExpiresAt = &at
			return in
		}},
		// Since runs end as their notifications did (run-ends-as-notification)
		// and every step carries a summary.
		{name: "run_failed_permanent", in: local, steps: []deliverStep{{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "provider answered 400"}}}},
		{name: "run_canceled_during_backoff", in: same, steps: []deliverStep{retry(503, time.Hour)}, cancel: true, cancelAfter: 1},
		{name: "run_completed_retry_with_summaries", in: local, steps: []deliverStep{retry(503, 0), delivered()}},
		{name: "profile_push_permanent_falls_back_to_sms", in: profile, fallback: []string{"sms"}, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "provider answered 400"}}, delivered()}},
		{name: "profile_rerouted_then_delivered", in: profile, fallback: []string{"sms"}, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeRerouted, Channel: "sms"}}, delivered()}},
		{name: "skipped_suppressed", in: local, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: workflows.StatusSkipped, Error: "skipped: suppressed"}}}},
		// Recipients II: holds past the notification's turn.
		{name: "held_quiet_hours_then_delivered", in: local, holdFor: 500 * time.Millisecond, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeHeld, DeferredBy: "quiet-hours", HoldSummary: "quiet hours until 08:00 Europe/Istanbul"}},
			delivered()}},
		{name: "held_ordering_woken_then_delivered_releases_next", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			in.FastPath, in.Ordered = true, true
			return in
		}, holdFor: time.Hour, wake: true, steps: []deliverStep{
			{res: workflows.DeliverResult{Outcome: workflows.OutcomeHeld, DeferredBy: "ordering", HoldSummary: "waiting for a (ordering key k, hold until 15:04:05 UTC)"}},
			delivered()}},
		{name: "digest_message_settles_members", in: func(in workflows.NotificationInput) workflows.NotificationInput {
			in.FastPath, in.DigestMessage = true, true
			return in
		}, steps: []deliverStep{delivered()}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { record(t, tc, sc, fast) })
	}
}

func record(t *testing.T, tc client.Client, sc scenario, policy workflows.RetryPolicy) {
	in := sc.in(testInput(policy))
	// The delivery queues are named after their channel, as the workflow
	// expects when it moves to another one.
	base := testenv.Name("record-") + "-deliver-"
	queue := base + in.Channel
	var (
		mu    sync.Mutex
		calls int
	)
	called := make(chan int, 16)
	w := worker.New(tc, queue, worker.Options{Identity: "history-recorder"})
	w.RegisterWorkflowWithOptions(workflows.Notification, workflow.RegisterOptions{Name: workflows.NotificationWorkflow})
	deliver := func(ctx context.Context, in workflows.DeliverInput) (workflows.DeliverResult, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		called <- n
		if sc.block {
			for ctx.Err() == nil {
				activity.RecordHeartbeat(ctx)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			return workflows.DeliverResult{}, ctx.Err()
		}
		step := sc.steps[min(n, len(sc.steps))-1]
		if step.res.Outcome == workflows.OutcomeHeld && step.res.HeldUntil == nil {
			until := time.Now().Add(sc.holdFor)
			step.res.HeldUntil = &until
		}
		return step.res, step.err
	}
	w.RegisterActivityWithOptions(deliver, activity.RegisterOptions{Name: workflows.DeliverActivity})
	fellBack := 0
	w.RegisterActivityWithOptions(func(context.Context, workflows.FallbackInput) (workflows.FallbackResult, error) {
		mu.Lock()
		defer mu.Unlock()
		fellBack++
		if fellBack > len(sc.fallback) {
			return workflows.FallbackResult{}, nil
		}
		return workflows.FallbackResult{Channel: sc.fallback[fellBack-1]}, nil
	}, activity.RegisterOptions{Name: workflows.FallbackActivity})
	for _, ch := range sc.fallback {
		cw := worker.New(tc, base+ch, worker.Options{Identity: "history-recorder"})
		cw.RegisterActivityWithOptions(deliver, activity.RegisterOptions{Name: workflows.DeliverActivity})
		require.NoError(t, cw.Start())
		defer cw.Stop()
	}
	w.RegisterActivityWithOptions(func(context.Context, workflows.FailInput) (string, error) { return "FAILED", nil },
		activity.RegisterOptions{Name: workflows.FailActivity})
	w.RegisterActivityWithOptions(func(context.Context, workflows.CancelInput) (string, error) { return "CANCELLED", nil },
		activity.RegisterOptions{Name: workflows.CancelActivity})
	w.RegisterActivityWithOptions(func(_ context.Context, in workflows.SettleInput) (string, error) { return string(in.Next), nil },
		activity.RegisterOptions{Name: workflows.SettleReceiptActivity})
	// Unregistered, a local activity fails at once and leaves no marker, a
	// history no real worker writes (and which would not replay).
	w.RegisterActivityWithOptions(func(context.Context, workflows.RetryingInput) error { return nil },
		activity.RegisterOptions{Name: workflows.MarkRetryingActivity})
	w.RegisterActivityWithOptions(func(context.Context, workflows.AttemptRecord) error { return nil },
		activity.RegisterOptions{Name: workflows.RecordAttemptActivity})
	w.RegisterActivityWithOptions(func(context.Context, workflows.ReleaseInput) error { return nil },
		activity.RegisterOptions{Name: workflows.ReleaseOrderingActivity})
	w.RegisterActivityWithOptions(func(context.Context, workflows.ReleaseInput) error { return nil },
		activity.RegisterOptions{Name: workflows.SettleDigestActivity})
	require.NoError(t, w.Start())
	defer w.Stop()

	in.ActivityTaskQueue = queue
	id := "notification-" + sc.name + "-" + queue
	run, err := tc.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: id, TaskQueue: queue}, workflows.NotificationWorkflow, in)
	require.NoError(t, err)
	// The first run's history: Get follows a continue-as-new to the last.
	firstRun := run.GetRunID()
	if sc.cancel {
		for n := range called {
			if n >= sc.cancelAfter {
				break
			}
		}
		if !sc.block {
			// Wait until the workflow sleeps on its backoff timer.
			require.Eventually(t, func() bool {
				v, err := tc.QueryWorkflow(context.Background(), id, "", workflows.StatusQuery)
				if err != nil {
					return false
				}
				var view workflows.StatusView
				return v.Get(&view) == nil && view.Status == "RETRYING"
			}, 10*time.Second, 20*time.Millisecond)
		}
		require.NoError(t, tc.SignalWorkflow(context.Background(), id, "", workflows.CancelSignal, nil))
	}
	if sc.wake {
		require.Eventually(t, func() bool {
			v, err := tc.QueryWorkflow(context.Background(), id, "", workflows.StatusQuery)
			var view workflows.StatusView
			return err == nil && v.Get(&view) == nil && view.Status == "SCHEDULED"
		}, 10*time.Second, 20*time.Millisecond)
		require.NoError(t, tc.SignalWorkflow(context.Background(), id, "", workflows.WakeSignal, nil))
	}
	if sc.receipt != nil {
		require.Eventually(t, func() bool {
			v, err := tc.QueryWorkflow(context.Background(), id, "", workflows.StatusQuery)
			var view workflows.StatusView
			return err == nil && v.Get(&view) == nil && view.Status == "SENT"
		}, 10*time.Second, 20*time.Millisecond)
		require.NoError(t, tc.SignalWorkflow(context.Background(), id, "", workflows.ReceiptSignal, *sc.receipt))
	}
	var res workflows.NotificationResult
	if err := run.Get(context.Background(), &res); err != nil {
		// A FAILED or CANCELLED notification's run fails or is canceled.
		var ok bool
		res, ok = workflows.ResultOfError(err)
		require.True(t, ok, "the run ended with %v", err)
	}

	var events []*historypb.HistoryEvent
	iter := tc.GetWorkflowHistory(context.Background(), id, firstRun, false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		events = append(events, ev)
	}
	raw, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&historypb.History{Events: events})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join("testdata", sc.name+".json"), append(raw, '\n'), 0o644))
	t.Logf("%s: %s after %d events", sc.name, res.Status, len(events))
}
