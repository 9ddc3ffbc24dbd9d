package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestWaitLetsTheBurstThroughThenMakesTheNextWait(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix, map[string]int{"sms": 5})
	ctx := context.Background()
	burst := ratelimit.Limit(5).Burst

	for i := range burst {
		waited, err := l.Wait(ctx, "sms", nil)
		require.NoError(t, err)
		require.Zero(t, waited, "request %d is within the burst", i+1)
	}
	ticks := 0
	waited, err := l.Wait(ctx, "sms", func() { ticks++ })
	require.NoError(t, err)
	require.Positive(t, waited, "the request after the burst waits for its slot")
	require.Positive(t, ticks, "the caller was told about the pause")
}

func TestChannelsAreLimitedSeparately(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix, map[string]int{"sms": 1, "email": 1})
	ctx := context.Background()
	for range ratelimit.Limit(1).Burst {
		_, err := l.Wait(ctx, "sms", nil)
		require.NoError(t, err)
	}
	waited, err := l.Wait(ctx, "email", nil)
	require.NoError(t, err)
	require.Zero(t, waited, "sms traffic does not spend email's budget")
}

func TestWaitFailsClosedWhileRedisIsDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	l := ratelimit.New(rdb, "t:", map[string]int{"sms": 100})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()

	ticks := 0
	_, err := l.Wait(ctx, "sms", func() { ticks++ })
	require.ErrorIs(t, err, context.DeadlineExceeded, "no request goes through without Redis")
	require.Positive(t, ticks)
}

func TestUnknownChannelIsAnError(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix, map[string]int{"sms": 1})
	_, err := l.Wait(context.Background(), "fax", nil)
	require.Error(t, err)
}

// TestTryTakeWaitsOnlyForASlotAboutToComeFree: at 100/s a slot comes free
// every 10 ms, within TakeWithin, so a burst past the GCRA burst is paced,
// not refused; at 1/s the next slot is a second away and is refused at once.
func TestTryTakeWaitsOnlyForASlotAboutToComeFree(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix, map[string]int{"sms": 100})
	ctx := context.Background()
	for i := range ratelimit.Limit(100).Burst + 3 {
		require.True(t, l.TryTake(ctx, "sms"), "slot %d comes free within %s", i+1, ratelimit.TakeWithin)
	}
	require.False(t, l.Saturated("sms"), "a paced burst does not saturate the channel")
}

func TestTryTakeRefusesASlotFarAway(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	l := ratelimit.New(rdb, prefix, map[string]int{"push": 1})
	ctx := context.Background()
	for i := range ratelimit.Limit(1).Burst {
		require.True(t, l.TryTake(ctx, "push"), "slot %d is free", i+1)
	}
	start := time.Now()
	require.False(t, l.TryTake(ctx, "push"), "the channel is at its limit")
	require.Less(t, time.Since(start), 500*time.Millisecond, "a slot a second away is refused at once, not waited for")
	require.False(t, l.TryTake(ctx, "fax"), "no slot for an unknown channel")
}

func TestTryTakeFailsClosedWhileRedisIsDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	l := ratelimit.New(rdb, "t:", map[string]int{"sms": 100})
	require.False(t, l.TryTake(context.Background(), "sms"))
}
