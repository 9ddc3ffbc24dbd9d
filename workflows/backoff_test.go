package workflows_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

var backoffPolicy = workflows.RetryPolicy{
	MaxAttempts:        10,
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaxInterval:        30 * time.Second,
}

// cappedExponential is the wait before jitter: InitialInterval ×
// BackoffCoefficient^(attempt-1), capped at MaxInterval.
func cappedExponential(p workflows.RetryPolicy, attempt int) time.Duration {
	d := float64(p.InitialInterval) * math.Pow(p.BackoffCoefficient, float64(attempt-1))
	return time.Duration(min(d, float64(p.MaxInterval)))
}

func TestBackoffIsDeterministic(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= backoffPolicy.MaxAttempts; attempt++ {
		first := workflows.Backoff("notification-a", attempt, backoffPolicy, 0)
		for range 5 {
			require.Equal(t, first, workflows.Backoff("notification-a", attempt, backoffPolicy, 0), "attempt %d", attempt)
		}
	}
}

func TestBackoffIsBetweenHalfAndAllOfTheCappedExponential(t *testing.T) {
	t.Parallel()
	for i := range 200 {
		id := fmt.Sprintf("notification-%d", i)
		for attempt := 1; attempt <= backoffPolicy.MaxAttempts; attempt++ {
			full := cappedExponential(backoffPolicy, attempt)
			got := workflows.Backoff(id, attempt, backoffPolicy, 0)
			require.GreaterOrEqual(t, got, full/2, "%s attempt %d", id, attempt)
			require.LessOrEqual(t, got, full, "%s attempt %d", id, attempt)
		}
	}
}

func TestBackoffIsCappedAtMaxInterval(t *testing.T) {
	t.Parallel()
	// From attempt 6 on, 2^(n-1) seconds exceeds the 30s cap.
	for attempt := 6; attempt <= 60; attempt++ {
		got := workflows.Backoff("notification-capped", attempt, backoffPolicy, 0)
		require.LessOrEqual(t, got, backoffPolicy.MaxInterval, "attempt %d", attempt)
		require.GreaterOrEqual(t, got, backoffPolicy.MaxInterval/2, "attempt %d", attempt)
	}
}

func TestBackoffVariesAcrossWorkflowIDs(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for i := range 50 {
		seen[workflows.Backoff(fmt.Sprintf("notification-%d", i), 3, backoffPolicy, 0)] = true
	}
	// Jitter spreads retries of notifications that failed together.
	require.Greater(t, len(seen), 40, "distinct waits among 50 workflow ids")
}

func TestBackoffRetryAfterWinsWhenLonger(t *testing.T) {
	t.Parallel()
	const id = "notification-retry-after"
	base := workflows.Backoff(id, 2, backoffPolicy, 0)

	longer := base + 10*time.Second
	require.Equal(t, longer, workflows.Backoff(id, 2, backoffPolicy, longer))

	// The provider's wait is not bound by MaxInterval.
	require.Equal(t, 10*time.Minute, workflows.Backoff(id, 2, backoffPolicy, 10*time.Minute))

	shorter := base / 2
	require.Equal(t, base, workflows.Backoff(id, 2, backoffPolicy, shorter))
}
