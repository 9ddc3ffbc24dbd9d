package breaker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
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

// admitMany admits n sends at once (all in flight before any reports).
func admitMany(t *testing.T, b *breaker.Breakers, n int) []breaker.Ticket {
	t.Helper()
	tickets := make([]breaker.Ticket, n)
	for i := range tickets {
		ticket, ok, _, err := b.Admit(context.Background(), "p")
		require.NoError(t, err)
		require.True(t, ok)
		tickets[i] = ticket
	}
	return tickets
}

func TestAlternatingOutcomesOfSendsInFlightKeepTheBreakerClosed(t *testing.T) {
	w, _, changes := newBreakers(t, breaker.Settings{FailureThreshold: 5, OpenFor: time.Minute})
	ctx := context.Background()
	// Ten sends admitted while the breaker is clean, reported S F S F ...
	for i, ticket := range admitMany(t, w, 10) {
		require.NoError(t, w.Report(ctx, ticket, true, i%2 == 1, time.Millisecond))
	}
	st, err := w.Status(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, breaker.Closed, st.State, "no two failures were consecutive")
	require.Equal(t, 1, st.ConsecutiveFailures)
	require.Empty(t, *changes)
	require.NoError(t, w.Flush(ctx))
	st, err = w.Status(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 10, st.Requests)
	require.Equal(t, 5, st.Failures)
}

func TestAlternatingOutcomesAcrossWorkersKeepTheBreakerClosed(t *testing.T) {
	w1, w2, changes := newBreakers(t, breaker.Settings{FailureThreshold: 5, OpenFor: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range []*breaker.Breakers{w1, w2} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	ok1, bad2 := admitMany(t, w1, 5), admitMany(t, w2, 5)
	for i := range 5 {
		// w1's success, then (once it reached the shared state) w2's failure.
		require.NoError(t, w1.Report(ctx, ok1[i], true, false, time.Millisecond))
		require.Eventually(t, func() bool {
			st, err := w2.Status(ctx, "p")
			return err == nil && st.Requests == 2*i+1
		}, 5*time.Second, 5*time.Millisecond, "the success reaches the shared counts")
		require.NoError(t, w2.Report(ctx, bad2[i], true, true, time.Millisecond))
	}
	st, err := w1.Status(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, breaker.Closed, st.State)
	require.Equal(t, 1, st.ConsecutiveFailures)
	require.Empty(t, *changes)
}

func TestALateReportOfASendBeforeItOpenedDoesNotSettleAHalfOpenBreaker(t *testing.T) {
	for _, late := range []struct {
		name    string
		failure bool
	}{{"success", false}, {"failure", true}} {
		t.Run(late.name, func(t *testing.T) {
			w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 2, OpenFor: 200 * time.Millisecond})
			ctx := context.Background()
			fail(t, w)
			early := admitMany(t, w, 1)[0] // admitted closed, one failure behind it
			fail(t, w)
			var probe breaker.Ticket
			require.Eventually(t, func() bool {
				var ok bool
				probe, ok, _, _ = w.Admit(ctx, "p")
				return ok
			}, 5*time.Second, 10*time.Millisecond, "half-opens after openFor")
			require.True(t, probe.Probe)

			require.NoError(t, w.Report(ctx, early, true, late.failure, time.Millisecond))
			st, err := w.Status(ctx, "p")
			require.NoError(t, err)
			require.Equal(t, breaker.HalfOpen, st.State, "only the probe settles it")
			_, ok, _, err := w.Admit(ctx, "p")
			require.NoError(t, err)
			require.False(t, ok, "the probe still holds the only place")

			require.NoError(t, w.Report(ctx, probe, true, false, time.Millisecond))
			st, err = w.Status(ctx, "p")
			require.NoError(t, err)
			require.Equal(t, breaker.Closed, st.State, "the probe's success closes it")
		})
	}
}

func TestAProbeGivenUpNeitherFreesAPlaceNorSettlesTheBreaker(t *testing.T) {
	for _, late := range []struct {
		name          string
		sent, failure bool
	}{{"success", true, false}, {"failure", true, true}, {"nothing sent", false, false}} {
		t.Run(late.name, func(t *testing.T) {
			const openFor = 200 * time.Millisecond
			w, _, _ := newBreakers(t, breaker.Settings{FailureThreshold: 1, OpenFor: openFor, HalfOpenProbes: 1})
			ctx := context.Background()
			fail(t, w)
			var given breaker.Ticket
			require.Eventually(t, func() bool {
				var ok bool
				given, ok, _, _ = w.Admit(ctx, "p")
				return ok
			}, 5*time.Second, 10*time.Millisecond)
			// That probe does not report within openFor: it is given up
			// and another takes its place.
			var probe breaker.Ticket
			require.Eventually(t, func() bool {
				var ok bool
				probe, ok, _, _ = w.Admit(ctx, "p")
				return ok
			}, 5*time.Second, 10*time.Millisecond)
			require.True(t, probe.Probe)

			require.NoError(t, w.Report(ctx, given, late.sent, late.failure, time.Millisecond))
			st, err := w.Status(ctx, "p")
			require.NoError(t, err)
			require.Equal(t, breaker.HalfOpen, st.State, "the given-up probe settles nothing")
			_, ok, _, err := w.Admit(ctx, "p")
			require.NoError(t, err)
			require.False(t, ok, "the current probe keeps the only place")

			require.NoError(t, w.Report(ctx, probe, true, true, time.Millisecond))
			_, ok, _, err = w.Admit(ctx, "p")
			require.NoError(t, err)
			require.False(t, ok, "the current probe's failure opens it again")
		})
	}
}
