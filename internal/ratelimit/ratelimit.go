// Package ratelimit enforces each channel's delivery rate across every
// worker with Redis, using GCRA (go-redis/redis_rate: one Lua script per
// check, no INCR+EXPIRE races).
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Limiter waits for a channel's next delivery slot.
type Limiter struct {
	rl     *redis_rate.Limiter
	prefix string
	limits map[string]int
}

// New returns a Limiter on rdb; limits maps a channel to its per-second rate.
func New(rdb *redis.Client, keyPrefix string, limits map[string]int) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(rdb), prefix: keyPrefix, limits: limits}
}

// Limit is the GCRA limit for rate per second. Its burst is a twentieth of
// the rate, at least 2: a backlog waits in Temporal anyway, so a large burst
// buys nothing, while it would let a provider see well above its limit after
// a quiet spell; a burst of 2 absorbs the jitter between Temporal's pacing and
// this one, which would otherwise cost a fifth of the rate. Over any run of n
// deliveries the average rate stays within n/(n-burst) of the limit.
func Limit(rate int) redis_rate.Limit {
	return redis_rate.Limit{Rate: rate, Period: time.Second, Burst: max(2, rate/20)}
}

// Wait blocks until channel may make one more request and returns how long
// it waited (zero when the first check allowed it). It fails closed: while Redis cannot be reached it keeps waiting
// instead of letting the request through. tick is called on every pause, so
// a caller can heartbeat; Wait returns early only when ctx ends.
func (l *Limiter) Wait(ctx context.Context, channel string, tick func()) (time.Duration, error) {
	rate, ok := l.limits[channel]
	if !ok {
		return 0, fmt.Errorf("no rate limit configured for channel %q", channel)
	}
	limit := Limit(rate)
	key := l.prefix + "ratelimit:" + channel
	start := time.Now()
	paused := false
	for {
		pause := 500 * time.Millisecond // Redis unreachable: fail closed, retry soon
		res, err := l.rl.Allow(ctx, key, limit)
		if err == nil {
			if res.Allowed > 0 {
				if !paused {
					return 0, nil
				}
				return time.Since(start), nil
			}
			pause = res.RetryAfter
		}
		paused = true
		if tick != nil {
			tick()
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(pause):
		}
	}
}
