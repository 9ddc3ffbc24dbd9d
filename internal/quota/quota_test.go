package quota

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func newTestQuota(t *testing.T) (*Quota, *redis.Client) {
	t.Helper()
	rdb, prefix := testenv.Redis(t) // the shared Redis; its keys are deleted at cleanup
	return New(rdb, prefix+"quota:"), rdb
}

// inOneSecond runs body until all decisions it returns fall in the same
// per-second window (the window may roll over between Redis calls).
func inOneSecond(t *testing.T, body func(q *Quota, rdb *redis.Client, tenant string) []Decision) []Decision {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		q, rdb := newTestQuota(t)
		ds := body(q, rdb, fmt.Sprintf("tenant-%d", attempt))
		ids := map[int64]bool{}
		for _, d := range ds {
			if w, ok := d.Window(PolicyPerSecond); ok {
				ids[w.ID] = true
			}
		}
		if len(ids) <= 1 {
			return ds
		}
	}
	t.Fatal("second window rolled over on every attempt")
	return nil
}

func remaining(t *testing.T, d Decision, policy string) int {
	t.Helper()
	w, ok := d.Window(policy)
	require.True(t, ok, "window %s missing", policy)
	return w.Remaining
}

func TestTakeWithinQuota(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx := context.Background()
	l := Limits{PerDay: 5}
	for i := 1; i <= 5; i++ {
		d, err := q.Take(ctx, "t1", l, 1)
		require.NoError(t, err)
		assert.True(t, d.Allowed)
		assert.Equal(t, 1, d.N)
		assert.Equal(t, 5-i, remaining(t, d, PolicyPerDay))
	}
	// other tenant unaffected
	d, err := q.Take(ctx, "t2", l, 2)
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.Equal(t, 3, remaining(t, d, PolicyPerDay))
}

func TestPerSecondRefusal(t *testing.T) {
	ctx := context.Background()
	ds := inOneSecond(t, func(q *Quota, _ *redis.Client, tenant string) []Decision {
		l := Limits{PerSecond: 3}
		var out []Decision
		for i := 0; i < 4; i++ {
			d, err := q.Take(ctx, tenant, l, 1)
			require.NoError(t, err)
			out = append(out, d)
		}
		p, err := q.Peek(ctx, tenant, l)
		require.NoError(t, err)
		return append(out, p)
	})
	for i := 0; i < 3; i++ {
		assert.True(t, ds[i].Allowed)
		assert.Equal(t, 2-i, remaining(t, ds[i], PolicyPerSecond))
	}
	refused := ds[3]
	assert.False(t, refused.Allowed)
	assert.False(t, refused.TooLarge)
	assert.Equal(t, 0, refused.N)
	assert.Greater(t, refused.RetryAfter, time.Duration(0))
	assert.LessOrEqual(t, refused.RetryAfter, time.Second)
	assert.Equal(t, int64(1), refused.RetryAfterSeconds())
	assert.Equal(t, 0, remaining(t, refused, PolicyPerSecond))
	w, _ := refused.Window(PolicyPerSecond)
	assert.True(t, w.Refused)
	assert.Equal(t, int64(1), w.ResetSeconds())
	// nothing charged: counter still 3
	peek := ds[4]
	pw, _ := peek.Window(PolicyPerSecond)
	assert.Equal(t, 3, pw.Used)
	assert.Equal(t, 0, pw.Remaining)
	assert.False(t, peek.Allowed)
}

func TestBatchRefusedWhole(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx := context.Background()
	l := Limits{PerDay: 10}
	d, err := q.Take(ctx, "t", l, 7)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	assert.Equal(t, 3, remaining(t, d, PolicyPerDay))

	d, err = q.Take(ctx, "t", l, 5)
	require.NoError(t, err)
	assert.False(t, d.Allowed)
	assert.False(t, d.TooLarge)
	assert.Equal(t, 0, d.N)
	assert.Equal(t, 3, remaining(t, d, PolicyPerDay))
	w, _ := d.Window(PolicyPerDay)
	assert.Equal(t, w.Reset, d.RetryAfter, "retry when the day window ends")

	p, err := q.Peek(ctx, "t", l)
	require.NoError(t, err)
	assert.Equal(t, 3, remaining(t, p, PolicyPerDay))
	assert.True(t, p.Allowed)

	d, err = q.Take(ctx, "t", l, 3)
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.Equal(t, 0, remaining(t, d, PolicyPerDay))
}

func TestBatchTooLarge(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx := context.Background()
	d, err := q.Take(ctx, "t", Limits{PerSecond: 5, PerDay: 100}, 6)
	require.NoError(t, err)
	assert.False(t, d.Allowed)
	assert.True(t, d.TooLarge)
	assert.Zero(t, d.RetryAfter)
	assert.Equal(t, 100, remaining(t, d, PolicyPerDay), "day window not charged")
}

func TestDayRefusalDoesNotChargeSecond(t *testing.T) {
	ctx := context.Background()
	ds := inOneSecond(t, func(q *Quota, rdb *redis.Client, tenant string) []Decision {
		l := Limits{PerSecond: 100, PerDay: 3}
		a, err := q.Take(ctx, tenant, l, 3)
		require.NoError(t, err)
		b, err := q.Take(ctx, tenant, l, 1)
		require.NoError(t, err)
		p, err := q.Peek(ctx, tenant, l)
		require.NoError(t, err)
		// the raw second-window counter is exactly what the first Take charged
		w, _ := p.Window(PolicyPerSecond)
		v, err := rdb.Get(ctx, q.secondKey(tenant, w.ID)).Int()
		require.NoError(t, err)
		assert.Equal(t, 3, v)
		return []Decision{a, b, p}
	})
	assert.True(t, ds[0].Allowed)
	assert.Equal(t, 97, remaining(t, ds[0], PolicyPerSecond))
	refused := ds[1]
	assert.False(t, refused.Allowed)
	assert.False(t, refused.TooLarge)
	sw, _ := refused.Window(PolicyPerSecond)
	dw, _ := refused.Window(PolicyPerDay)
	assert.False(t, sw.Refused)
	assert.True(t, dw.Refused)
	assert.Equal(t, dw.Reset, refused.RetryAfter)
	assert.Equal(t, 97, remaining(t, ds[2], PolicyPerSecond))
	assert.Equal(t, 0, remaining(t, ds[2], PolicyPerDay))
}

func TestRefund(t *testing.T) {
	ctx := context.Background()
	ds := inOneSecond(t, func(q *Quota, rdb *redis.Client, tenant string) []Decision {
		l := Limits{PerSecond: 10, PerDay: 20}
		a, err := q.Take(ctx, tenant, l, 4)
		require.NoError(t, err)
		require.NoError(t, q.Refund(ctx, tenant, l, 4, a))
		p1, err := q.Peek(ctx, tenant, l)
		require.NoError(t, err)
		// refunding again never goes below zero
		require.NoError(t, q.Refund(ctx, tenant, l, 4, a))
		w, _ := a.Window(PolicyPerDay)
		v, err := rdb.Get(ctx, q.dayKey(tenant, w.ID)).Int()
		require.NoError(t, err)
		assert.Equal(t, 0, v)
		p2, err := q.Peek(ctx, tenant, l)
		require.NoError(t, err)
		// refunding a refused decision is a no-op
		b, err := q.Take(ctx, tenant, l, 11)
		require.NoError(t, err)
		require.NoError(t, q.Refund(ctx, tenant, l, 11, b))
		return []Decision{a, p1, p2, b}
	})
	assert.Equal(t, 6, remaining(t, ds[0], PolicyPerSecond))
	assert.Equal(t, 16, remaining(t, ds[0], PolicyPerDay))
	for _, p := range ds[1:3] {
		assert.Equal(t, 10, remaining(t, p, PolicyPerSecond))
		assert.Equal(t, 20, remaining(t, p, PolicyPerDay))
	}
	assert.True(t, ds[3].TooLarge)
}

func TestConcurrentTakes(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx := context.Background()
	l := Limits{PerSecond: 1000, PerDay: 10}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := q.Take(ctx, "t", l, 1)
			assert.NoError(t, err)
			if d.Allowed {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 10, allowed)
	p, err := q.Peek(ctx, "t", l)
	require.NoError(t, err)
	assert.Equal(t, 0, remaining(t, p, PolicyPerDay))
}

func TestConcurrentTakesPerSecond(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx := context.Background()
	l := Limits{PerSecond: 5}
	var mu sync.Mutex
	perWindow := map[int64]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := q.Take(ctx, "t", l, 1)
			assert.NoError(t, err)
			if d.Allowed {
				w, _ := d.Window(PolicyPerSecond)
				mu.Lock()
				perWindow[w.ID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for id, n := range perWindow {
		assert.LessOrEqual(t, n, 5, "window %d", id)
	}
	if len(perWindow) == 1 {
		for _, n := range perWindow {
			assert.Equal(t, 5, n)
		}
	}
}

func TestHeaderFormat(t *testing.T) {
	d := Decision{
		Allowed: true,
		Windows: []Window{
			{Policy: PolicyPerSecond, Quota: 10, Seconds: 1, Remaining: 3, Reset: 400 * time.Millisecond},
			{Policy: PolicyPerDay, Quota: 10000, Seconds: 86400, Remaining: 9876, Reset: 4999*time.Second + time.Millisecond},
		},
	}
	assert.Equal(t, `"per-second";q=10;w=1, "per-day";q=10000;w=86400`, d.Policy())
	assert.Equal(t, `"per-second";r=3;t=1, "per-day";r=9876;t=5000`, d.State())

	d = Decision{Windows: []Window{{Policy: PolicyPerDay, Quota: 5, Seconds: 86400, Remaining: -2, Reset: 10 * time.Second}}}
	assert.Equal(t, `"per-day";q=5;w=86400`, d.Policy())
	assert.Equal(t, `"per-day";r=0;t=10`, d.State())
}

func TestNoLimits(t *testing.T) {
	q := New(nil, "unused:") // a nil client would panic if Redis were touched
	ctx := context.Background()
	assert.True(t, Limits{}.None())
	assert.False(t, Limits{PerDay: 1}.None())
	for i := 0; i < 3; i++ {
		d, err := q.Take(ctx, "t", Limits{}, 1000)
		require.NoError(t, err)
		assert.True(t, d.Allowed)
		assert.Equal(t, "", d.Policy())
		assert.Equal(t, "", d.State())
	}
	p, err := q.Peek(ctx, "t", Limits{})
	require.NoError(t, err)
	assert.True(t, p.Allowed)
	assert.Equal(t, "", p.Policy())
	require.NoError(t, q.Refund(ctx, "t", Limits{}, 1, p))
}

func TestInvalidCount(t *testing.T) {
	q := New(nil, "unused:")
	_, err := q.Take(context.Background(), "t", Limits{PerDay: 1}, 0)
	assert.ErrorIs(t, err, ErrInvalidCount)
}

func TestLiveHeaders(t *testing.T) {
	q, _ := newTestQuota(t)
	d, err := q.Take(context.Background(), "t", Limits{PerSecond: 10, PerDay: 10000}, 1)
	require.NoError(t, err)
	dw, _ := d.Window(PolicyPerDay)
	assert.Equal(t, `"per-second";q=10;w=1, "per-day";q=10000;w=86400`, d.Policy())
	assert.Equal(t, fmt.Sprintf(`"per-second";r=9;t=1, "per-day";r=9999;t=%d`, dw.ResetSeconds()), d.State())
	assert.Equal(t, dw.ID, time.Now().Unix()/86400, "day id is the UTC day (clocks on one host)")
	assert.LessOrEqual(t, dw.ResetSeconds(), int64(86400))
}

// TestASilentRedisCostsOneCallTimeoutThenNothingForAPause: Redis stops
// answering (packets dropped): a Take gives up within CallTimeout, the
// calls that follow fail at once for Pause without asking Redis, and after
// the pause Redis is asked again.
func TestASilentRedisCostsOneCallTimeoutThenNothingForAPause(t *testing.T) {
	_, prefix := testenv.Redis(t)
	opts, err := redis.ParseURL(testenv.Shared(t).RedisURL)
	require.NoError(t, err)
	proxy := testenv.NewProxy(t, opts.Addr)
	opts.Addr = proxy.Addr()
	opts.ContextTimeoutEnabled = true // as ratelimit.NewClient sets it
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	t.Cleanup(proxy.Heal)
	q := New(rdb, prefix+"quota:")
	ctx := context.Background()
	l := Limits{PerSecond: 100}
	_, err = q.Take(ctx, "silent", l, 1)
	require.NoError(t, err)

	proxy.Partition()
	start := time.Now()
	_, err = q.Take(ctx, "silent", l, 1)
	require.Error(t, err)
	require.Less(t, time.Since(start), CallTimeout+100*time.Millisecond, "the first call gives up within CallTimeout")
	start = time.Now()
	_, err = q.Peek(ctx, "silent", l)
	require.ErrorIs(t, err, ErrUnavailable)
	require.Less(t, time.Since(start), 10*time.Millisecond, "the next call does not ask Redis")

	proxy.Heal()
	require.Eventually(t, func() bool {
		_, err := q.Take(ctx, "silent", l, 1)
		return err == nil
	}, Pause+5*time.Second, 50*time.Millisecond, "asked again after the pause")
}

// TestACallerThatGivesUpDoesNotPauseTheQuota: a caller's own cancelled
// context fails its call, but says nothing about Redis: the next caller
// asks Redis.
func TestACallerThatGivesUpDoesNotPauseTheQuota(t *testing.T) {
	q, _ := newTestQuota(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := q.Take(ctx, "gone", Limits{PerDay: 5}, 1)
	require.Error(t, err)
	_, err = q.Take(context.Background(), "gone", Limits{PerDay: 5}, 1)
	require.NoError(t, err)
}
