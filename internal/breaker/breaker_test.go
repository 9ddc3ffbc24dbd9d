package breaker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"dispatch-engine/internal/breaker"
	"dispatch-engine/internal/testenv"
)

// newBreakers returns two Breakers (two workers) sharing one Redis.
func newBreakers(t *testing.T, s breaker.Settings) (*breaker.Breakers, *breaker.Breakers, *[]breaker.Change) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	var mu sync.Mutex
	changes := &[]breaker.Change{}
	record := func(c breaker.Change) { mu.Lock(); *changes = append(*changes, c); mu.Unlock() }
	a := breaker.New(rdb, prefix, map[string]breaker.Settings{"p": s})
	b := breaker.New(rdb, prefix, map[string]breaker.Settings{"p": s})
	a.OnChange, b.OnChange = record, record
	return a, b, changes
}

func fail(t *testing.T, b *breaker.Breakers) {
	t.Helper()
	ticket, ok, _, err := b.Admit(context.Background(), "p")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.Report(context.Background(), ticket, true, true, 10*time.Millisecond))
}

func TestConsecutiveFailuresOpenTheBreakerForEveryWorker(t *testing.T) {
	w1, w2, changes := newBreakers(t, breaker.Settings{FailureThreshold: 3, OpenFor: time.Minute})
	ctx := context.Background()
	fail(t, w1)
	fail(t, w2)
	fail(t, w1)

	_, ok, wait, err := w2.Admit(ctx, "p")
	require.NoError(t, err)
	require.False(t, ok, "opened by failures in two workers, refused in either")
	require.Greater(t, wait, 50*time.Second)
	st, err := w1.Status(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, breaker.Open, st.State)
	require.Equal(t, 3, st.ConsecutiveFailures)
	require.Equal(t, []breaker.Change{{Provider: "p", From: breaker.Closed, To: breaker.Open}}, *changes, "one transition, seen once")
}

func TestASuccessResetsTheConsecutiveCount(t *testing.T) {
	w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 2, OpenFor: time.Minute})
	fail(t, w)
	ticket, _, _, err := w.Admit(context.Background(), "p")
	require.NoError(t, err)
	require.NoError(t, w.Report(context.Background(), ticket, true, false, time.Millisecond))
	fail(t, w)
	st, err := w.Status(context.Background(), "p")
	require.NoError(t, err)
	require.Equal(t, breaker.Closed, st.State)
	require.Equal(t, 4-1, st.Requests)
	require.InDelta(t, 1.0/3, *st.SuccessRatio(), 0.01)
}

func succeed(t *testing.T, b *breaker.Breakers, latency time.Duration) {
	t.Helper()
	ticket, ok, _, err := b.Admit(context.Background(), "p")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.Report(context.Background(), ticket, true, false, latency))
}

func TestAFailureRatioInTheWindowOpensIt(t *testing.T) {
	w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 100, FailureRatio: 0.5, MinRequests: 4, OpenFor: time.Minute})
	ctx := context.Background()
	succeed(t, w, time.Millisecond)
	succeed(t, w, time.Millisecond)
	require.NoError(t, w.Flush(ctx)) // as Run does every second
	fail(t, w)
	_, ok, _, err := w.Admit(ctx, "p")
	require.NoError(t, err)
	require.True(t, ok, "1 of 3 failed: below the ratio, and below minRequests")
	fail(t, w)
	_, ok, _, err = w.Admit(ctx, "p")
	require.NoError(t, err)
	require.False(t, ok, "half of 4 failed")
}

func TestSuccessesThroughACleanBreakerAreCountedWhenFlushed(t *testing.T) {
	w1, w2, _ := newBreakers(t, breaker.Settings{})
	ctx := context.Background()
	succeed(t, w1, 10*time.Millisecond)
	succeed(t, w1, 30*time.Millisecond)
	succeed(t, w2, 20*time.Millisecond)
	st, err := w1.Status(ctx, "p")
	require.NoError(t, err)
	require.Zero(t, st.Requests, "no call of their own")
	require.NoError(t, w1.Flush(ctx))
	require.NoError(t, w2.Flush(ctx))
	st, err = w2.Status(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 3, st.Requests)
	require.Equal(t, 20*time.Millisecond, st.AverageLatency)
	require.Equal(t, 1.0, *st.SuccessRatio())
}

func TestHalfOpenAdmitsBoundedProbesThenClosesOnSuccess(t *testing.T) {
	const openFor = 300 * time.Millisecond
	w1, w2, changes := newBreakers(t, breaker.Settings{FailureThreshold: 1, OpenFor: openFor, HalfOpenProbes: 1})
	ctx := context.Background()
	fail(t, w1)
	var probe breaker.Ticket
	require.Eventually(t, func() bool {
		var ok bool
		var err error
		probe, ok, _, err = w1.Admit(ctx, "p")
		return err == nil && ok
	}, 5*time.Second, 20*time.Millisecond, "half-opens after openFor")
	require.True(t, probe.Probe)
	_, ok, _, err := w2.Admit(ctx, "p")
	require.NoError(t, err)
	require.False(t, ok, "one probe at a time")
	require.NoError(t, w1.Report(ctx, probe, true, false, time.Millisecond))
	_, ok, _, err = w2.Admit(ctx, "p")
	require.NoError(t, err)
	require.True(t, ok, "closed by the probe's success")
	require.Equal(t, []breaker.State{breaker.Open, breaker.HalfOpen, breaker.Closed},
		[]breaker.State{(*changes)[0].To, (*changes)[1].To, (*changes)[2].To})
}

func TestAFailedProbeReopensIt(t *testing.T) {
	w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 1, OpenFor: 200 * time.Millisecond})
	ctx := context.Background()
	fail(t, w)
	require.Eventually(t, func() bool {
		probe, ok, _, err := w.Admit(ctx, "p")
		if err != nil || !ok {
			return false
		}
		require.NoError(t, w.Report(ctx, probe, true, true, time.Millisecond))
		return true
	}, 5*time.Second, 20*time.Millisecond)
	_, ok, _, err := w.Admit(ctx, "p")
	require.NoError(t, err)
	require.False(t, ok, "open again")
}

func TestAProbeThatNeverReportsIsGivenUp(t *testing.T) {
	w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 1, OpenFor: 200 * time.Millisecond})
	ctx := context.Background()
	fail(t, w)
	require.Eventually(t, func() bool { _, ok, _, _ := w.Admit(ctx, "p"); return ok }, 5*time.Second, 20*time.Millisecond)
	// That probe's worker died: after openFor another probe is admitted.
	require.Eventually(t, func() bool { _, ok, _, _ := w.Admit(ctx, "p"); return ok }, 5*time.Second, 20*time.Millisecond)
}
