package workflows_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// settled records the SettleReceipt calls.
type settled struct {
	mu  sync.Mutex
	ins []workflows.SettleInput
}

func (s *settled) settle(_ context.Context, in workflows.SettleInput) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ins = append(s.ins, in)
	return string(in.Next), nil
}

func (s *settled) calls() []workflows.SettleInput {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]workflows.SettleInput(nil), s.ins...)
}

func failedAt(provider string, alternatives int) deliverStep {
	return deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeRetry, StatusCode: 502, Error: "provider answered 502",
		Provider: provider, Alternatives: alternatives}}
}

func sentTo(provider string, wait time.Duration, onNoReceipt string) deliverStep {
	return deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeSent, StatusCode: 200, Provider: provider,
		AwaitReceipt: wait, OnNoReceipt: onNoReceipt}}
}

func TestFailoverMakesTheNextAttemptAtOnceAtTheNextProvider(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, failedAt("a", 1), deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, Provider: "b"}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 2}, attemptNumbers(ins))
	require.Equal(t, "a", ins[1].After, "the second attempt starts after the provider that failed")
	require.Zero(t, at[1].Sub(at[0]), "no backoff when another provider admits")
}

func TestARoundOfTheRouteEndsInABackoff(t *testing.T) {
	t.Parallel()
	// a fails (b admits), b fails (a admits): that was the round; back off.
	env, f := newEnv(t, failedAt("a", 1), failedAt("b", 1), delivered())

	run(t, env, testInput(testPolicy))

	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 2, 3}, attemptNumbers(ins))
	require.Zero(t, at[1].Sub(at[0]))
	require.Equal(t, workflows.Backoff(testWorkflowID, 2, testPolicy, 0), at[2].Sub(at[1]))
	require.Equal(t, "b", ins[2].After)
}

func TestEveryBreakerOpenWaitsWithoutSpendingAnAttempt(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeUnavailable, RetryAfter: 8 * time.Second,
		Error: "every provider of sms has its breaker open"}}, delivered())

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []int{1, 1}, attemptNumbers(ins), "the same attempt, made again")
	wait := at[1].Sub(at[0])
	require.GreaterOrEqual(t, wait, 8*time.Second, "waits until a breaker may half-open")
	require.Less(t, wait, 10*time.Second)
	require.Empty(t, f.failCalls())
}

// receiptEnv is newEnv with SettleReceipt registered.
func receiptEnv(t *testing.T, steps ...deliverStep) (*testsuite.TestWorkflowEnvironment, *fakes, *settled) {
	env, f := newEnv(t, steps...)
	s := &settled{}
	env.RegisterActivityWithOptions(s.settle, activity.RegisterOptions{Name: workflows.SettleReceiptActivity})
	return env, f, s
}

func TestReceiptDeliveredMakesItDelivered(t *testing.T) {
	t.Parallel()
	env, f, s := receiptEnv(t, sentTo("a", time.Minute, "delivered"))
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "other", Status: "failed"})
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "delivered"})
	}, 10*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	require.Equal(t, []workflows.SettleInput{{NotificationID: testNotificationID, Attempt: 1, Receipt: "delivered", Next: "DELIVERED"}}, s.calls(),
		"a receipt from another provider is dropped")
	require.Empty(t, f.failCalls())
}

func TestFailedReceiptFailsOverToTheNextProvider(t *testing.T) {
	t.Parallel()
	env, f, s := receiptEnv(t, sentTo("a", time.Minute, "delivered"), deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeDelivered, Provider: "b"}})
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(workflows.ReceiptSignal, workflows.Receipt{Provider: "a", Status: "failed", Reason: "unreachable handset"})
	}, 5*time.Second)

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 2}, res)
	ins, at := f.deliverCalls()
	require.Equal(t, []string{"a"}, ins[1].Exclude)
	require.Equal(t, 5*time.Second, at[1].Sub(at[0]), "the next provider at once after the receipt")
	require.Equal(t, workflows.StatusProcessing, s.calls()[0].Next)
	require.Equal(t, "failed", s.calls()[0].Receipt)
}

func TestNoReceiptInTimeFollowsTheProvidersSetting(t *testing.T) {
	t.Parallel()
	t.Run("delivered", func(t *testing.T) {
		env, f, s := receiptEnv(t, sentTo("a", 30*time.Second, "delivered"))
		res := run(t, env, testInput(testPolicy))
		require.Equal(t, workflows.StatusDelivered, res.Status)
		require.Equal(t, "none", s.calls()[0].Receipt)
		require.Empty(t, f.failCalls())
	})
	t.Run("failed", func(t *testing.T) {
		env, f, s := receiptEnv(t, sentTo("a", 30*time.Second, "failed"))
		res := run(t, env, testInput(testPolicy))
		require.Equal(t, workflows.StatusFailed, res.Status)
		require.Equal(t, "none", s.calls()[0].Receipt)
		require.Equal(t, workflows.ReasonNoReceipt, f.failCalls()[0].Reason)
	})
}

func TestEveryProviderUndeliveredFails(t *testing.T) {
	t.Parallel()
	env, f, _ := receiptEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, RouteExhausted: true,
		Error: "every provider on the route reported it undelivered"}})
	res := run(t, env, testInput(testPolicy))
	require.Equal(t, workflows.StatusFailed, res.Status)
	require.Equal(t, workflows.ReasonUndelivered, f.failCalls()[0].Reason)
}
