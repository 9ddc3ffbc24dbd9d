package workflows_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// fallbackTo registers a Fallback activity answering channels in turn (no
// channel once they run out) and answers the calls it got.
func fallbackTo(f *fakes, channels ...string) *[]workflows.FallbackInput {
	var calls []workflows.FallbackInput
	f.env.RegisterActivityWithOptions(func(_ context.Context, in workflows.FallbackInput) (workflows.FallbackResult, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		calls = append(calls, in)
		if len(calls) > len(channels) {
			return workflows.FallbackResult{}, nil
		}
		return workflows.FallbackResult{Channel: channels[len(calls)-1]}, nil
	}, activity.RegisterOptions{Name: workflows.FallbackActivity})
	return &calls
}

func profileInput() workflows.NotificationInput {
	in := testInput(testPolicy)
	in.Channel, in.ActivityTaskQueue, in.Fallback = "push", "p-deliver-push", true
	return in
}

func TestAChannelThatFailsForGoodFallsBackToTheNextWithAFreshBudget(t *testing.T) {
	t.Parallel()
	permanent := deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "bad token"}}
	env, f := newEnv(t, permanent, retry(503, 0), delivered())
	calls := fallbackTo(f, "sms")

	res := run(t, env, profileInput())

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 3}, res)
	ins, _ := f.deliverCalls()
	require.Equal(t, []int{1, 2, 3}, attemptNumbers(ins), "attempts are numbered on across channels")
	require.Equal(t, "push", ins[0].Channel)
	require.Equal(t, "sms", ins[1].Channel)
	require.Equal(t, 1, ins[1].AttemptBase, "the sms channel's budget starts after the push attempt")
	require.Equal(t, []workflows.FallbackInput{{NotificationID: testNotificationID, Attempts: 1, Generation: gen(0)}}, *calls)
	require.Empty(t, f.failCalls(), "nothing failed: the notification moved on")
}

func TestTheLastChannelFailingFailsTheNotification(t *testing.T) {
	t.Parallel()
	permanent := deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "refused"}}
	env, f := newEnv(t, permanent)
	calls := fallbackTo(f, "sms")

	res := run(t, env, profileInput())

	require.Equal(t, workflows.StatusFailed, res.Status)
	require.Equal(t, "permanent", failedWith(t, env))
	require.Len(t, *calls, 2, "asked after push, and after sms (none left)")
	fails := f.failCalls()
	require.Len(t, fails, 1)
	require.Equal(t, "sms", fails[0].Channel)
	require.Equal(t, 2, fails[0].Attempts)
}

func TestAnExpiredNotificationDoesNotFallBack(t *testing.T) {
	t.Parallel()
	expired := deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeExpired, Error: "expired before delivery"}}
	env, f := newEnv(t, expired)
	calls := fallbackTo(f, "sms")

	res := run(t, env, profileInput())

	require.Equal(t, workflows.StatusFailed, res.Status)
	require.Empty(t, *calls)
}

func TestANotificationToAnAddressNeverFallsBack(t *testing.T) {
	t.Parallel()
	permanent := deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomePermanent, StatusCode: 400, Error: "refused"}}
	env, f := newEnv(t, permanent)
	calls := fallbackTo(f, "email")

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.StatusFailed, res.Status)
	require.Empty(t, *calls, "no Fallback: the history of an address's notification gains nothing")
}

func TestARerouteMakesTheSameAttemptOnTheOtherChannel(t *testing.T) {
	t.Parallel()
	rerouted := deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeRerouted, Channel: "sms"}}
	env, f := newEnv(t, rerouted, delivered())
	fallbackTo(f)
	in := profileInput()
	in.FastPath = true

	res := run(t, env, in)

	require.Equal(t, workflows.NotificationResult{Status: "DELIVERED", Attempts: 1}, res)
	ins, _ := f.deliverCalls()
	require.Equal(t, []int{1, 1}, attemptNumbers(ins), "nothing was spent")
	require.Equal(t, []string{"push", "sms"}, []string{ins[0].Channel, ins[1].Channel})
	require.Equal(t, []bool{true, true}, f.local, "the rerouted first attempt stays on the fast path")
}

func TestASkippedNotificationCompletesAsSkipped(t *testing.T) {
	t.Parallel()
	env, f := newEnv(t, deliverStep{res: workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: workflows.StatusSkipped, Error: "skipped: suppressed"}})

	res := run(t, env, testInput(testPolicy))

	require.Equal(t, workflows.NotificationResult{Status: "SKIPPED", Attempts: 0}, res)
	require.Empty(t, f.failCalls(), "nothing dead-lettered")
}
