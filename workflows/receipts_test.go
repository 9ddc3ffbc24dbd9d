package workflows_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// A provider that took attempt 1 but answered too late (a timeout: the
// workflow counts it failed) and takes attempt 2 too reports on both; each
// receipt applies to its own attempt only.

func TestALateFailedReceiptForAnEarlierAttemptDoesNotFailOverTheCurrentOne(t *testing.T) {
	t.Parallel()
	env, f, s := receiptEnv(t, failedAt("a", 0), sentTo("a", time.Minute, workflows.ReceiptDelivered), delivered())
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "failed", Attempt: 1, MessageID: "m1"})
	}, 10*time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "delivered", Attempt: 2, MessageID: "m2"})
	}, 20*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 2, "no failover: the failed receipt was about attempt 1")
	require.Equal(t, []workflows.SettleInput{{NotificationID: testNotificationID, Attempt: 2, Receipt: "delivered", Next: "DELIVERED"}}, s.calls())
	require.Empty(t, f.failCalls())
}

func TestALateDeliveredReceiptForAnEarlierAttemptDoesNotDeliverTheCurrentOne(t *testing.T) {
	t.Parallel()
	env, f, s := receiptEnv(t, failedAt("a", 0), sentTo("a", time.Minute, workflows.ReceiptFailed))
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "delivered", Attempt: 1, MessageID: "m1"})
	}, 10*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusFailed, res.Status, "attempt 2 had no receipt, and its silence means failure")
	require.Equal(t, []workflows.SettleInput{{NotificationID: testNotificationID, Attempt: 2, Receipt: "none", Next: "SENT"}}, s.calls())
	require.Equal(t, workflows.ReasonNoReceipt, f.failCalls()[0].Reason)
}

func TestAReceiptFromAnEarlierGenerationChangesNothing(t *testing.T) {
	t.Parallel()
	env, f, s := receiptEnv(t, sentTo("a", time.Minute, workflows.ReceiptDelivered), delivered())
	env.RegisterDelayedCallback(func() {
		// Generation 0 made attempts 1 and 2; their receipts come late.
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "failed", Attempt: 2})
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "failed", Attempt: 1})
	}, 5*time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "delivered", Attempt: 3})
	}, 15*time.Second)
	in := testInput(testPolicy)
	in.AttemptBase, in.Generation = 2, 1

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 3}, res)
	ins, _ := f.deliverCalls()
	require.Len(t, ins, 1)
	require.Equal(t, []workflows.SettleInput{{NotificationID: testNotificationID, Attempt: 3, Receipt: "delivered", Next: "DELIVERED"}}, s.calls())
}
