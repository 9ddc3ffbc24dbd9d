package activities_test

import (
	"context"
	"maps"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// routeTo gives acts a route of webhook providers for sms, each answering
// with its status, with breakers (threshold 1) and limits in Redis.
func routeTo(t *testing.T, acts *activities.Activities, ratePerSec int, statuses ...int) []*atomic.Int32 {
	t.Helper()
	f := provider.File{Routes: map[string][]string{}, Breaker: provider.BreakerSpec{FailureThreshold: 1, OpenFor: time.Minute}}
	calls := make([]*atomic.Int32, len(statuses))
	for i, status := range statuses {
		calls[i] = new(atomic.Int32)
		n := calls[i]
		url := newRawProvider(t, func(w http.ResponseWriter, _ *http.Request) { n.Add(1); w.WriteHeader(status) })
		name := string(rune('a' + i))
		f.Providers = append(f.Providers, provider.Spec{Name: name, Kind: provider.KindWebhook, URL: url, RatePerSec: ratePerSec})
		f.Routes[string(notification.SMS)] = append(f.Routes[string(notification.SMS)], name)
	}
	set, err := provider.NewSet(&f, provider.Defaults{Timeout: 5 * time.Second, IdleConns: 4})
	require.NoError(t, err)
	rdb, prefix := testenv.Redis(t)
	limits := map[string]int{string(notification.SMS): 1000, string(notification.Email): 1000, string(notification.Push): 1000}
	maps.Copy(limits, set.Rates())
	acts.Providers, acts.Breakers, acts.Limiter = set, breaker.New(rdb, prefix, set.BreakerSettings()), ratelimit.New(rdb, prefix, limits)
	return calls
}

func TestAProviderFailureOffersTheNextProviderAtOnce(t *testing.T) {
	acts := newActivities(t, "")
	calls := routeTo(t, acts, 0, http.StatusBadGateway, http.StatusOK)
	n := createNotification(t, acts.Pool)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, "a", res.Provider)
	require.Equal(t, 1, res.Alternatives, "b admits")

	res = deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 2, Retry: deliverPolicy, Channel: string(n.Channel), After: "a"})
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)
	require.Equal(t, "b", res.Provider)
	log := attempts(t, acts.Pool, n.ID)
	require.Equal(t, "a", *log[0].Provider)
	require.Equal(t, "b", *log[1].Provider)

	// a's breaker opened (threshold 1): a new notification goes straight to b.
	m := createNotification(t, acts.Pool)
	res = deliver(t, acts, workflows.DeliverInput{NotificationID: m.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(m.Channel)})
	require.Equal(t, "b", res.Provider)
	require.EqualValues(t, 1, calls[0].Load(), "no request to the open provider")
}

func TestEveryBreakerOpenSendsNothingAndCountsNothing(t *testing.T) {
	acts := newActivities(t, "")
	calls := routeTo(t, acts, 0, http.StatusServiceUnavailable)
	first := createNotification(t, acts.Pool)
	deliver(t, acts, workflows.DeliverInput{NotificationID: first.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(first.Channel)})

	n := createNotification(t, acts.Pool)
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	require.Equal(t, workflows.OutcomeUnavailable, res.Outcome)
	require.Greater(t, res.RetryAfter, 50*time.Second, "until the breaker may half-open")
	require.EqualValues(t, 1, calls[0].Load())
	require.Empty(t, attempts(t, acts.Pool, n.ID))
	stored, err := acts.Pool.Query(context.Background(), `SELECT 1 FROM notifications WHERE id = $1 AND attempts = 0 AND status = 'ACCEPTED'`, n.ID)
	require.NoError(t, err)
	require.True(t, stored.Next(), "the notification was not touched")
	stored.Close()
}

func TestAProvidersOwnRateLimitDefersTheFastPath(t *testing.T) {
	acts := newActivities(t, "")
	calls := routeTo(t, acts, 1, http.StatusOK) // 1/s, a burst of 2 (ratelimit.Limit); the channel allows 1000/s
	var deferred []string
	for range 5 {
		n := createNotification(t, acts.Pool)
		res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel), FastPath: true})
		if res.Outcome == workflows.OutcomeDeferred {
			deferred = append(deferred, res.Error)
		}
	}
	require.NotEmpty(t, deferred, "the provider's limit holds on top of the channel's")
	require.Contains(t, deferred[0], "of a free")
	require.LessOrEqual(t, int(calls[0].Load()), 5-len(deferred), "a deferred attempt sent nothing")
}
