// Package ratelimit enforces each channel's delivery rate across every
// worker with Redis, using GCRA (go-redis/redis_rate: one Lua script per
// check, no INCR+EXPIRE races).
package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// checkTimeout bounds one call to Redis: a Redis that hangs (a partition,
// not a refusal) fails the check within it, and the caller waits and tries
// again, as it does while Redis refuses. The client must honour context
// deadlines (NewClient's does).
const checkTimeout = time.Second

// NewClient returns a Redis client for url (REDIS_URL) whose every call
// honours its context's deadline (go-redis otherwise waits out its own
// socket timeouts, 3 s and more, whatever the caller's deadline), with short
// dial and socket timeouts, so a Redis that stops answering fails calls in
// about a second instead of holding them.
func NewClient(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opts.ContextTimeoutEnabled = true
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = checkTimeout
	opts.WriteTimeout = checkTimeout
	opts.PoolTimeout = 2 * checkTimeout
	return redis.NewClient(opts), nil
}

// saturationHold is how long a channel counts as saturated after a request
// had to wait or was refused.
const saturationHold = time.Second

// Limiter waits for a channel's next delivery slot.
type Limiter struct {
	rdb    *redis.Client
	rl     *redis_rate.Limiter
	prefix string
	limits map[string]int
	// saturatedUntil holds, per channel, the UnixNano until which TryTake
	// refuses without asking Redis: while a backlog drains through Wait,
	// slots must go to it, in its priority order, not to newcomers.
	saturatedUntil map[string]*atomic.Int64
}

// New returns a Limiter on rdb; limits maps a channel to its per-second rate.
func New(rdb *redis.Client, keyPrefix string, limits map[string]int) *Limiter {
	l := &Limiter{rdb: rdb, rl: redis_rate.NewLimiter(rdb), prefix: keyPrefix, limits: limits, saturatedUntil: map[string]*atomic.Int64{}}
	for channel := range limits {
		l.saturatedUntil[channel] = new(atomic.Int64)
	}
	return l
}

func (l *Limiter) markSaturated(channel string) {
	if s, ok := l.saturatedUntil[channel]; ok {
		s.Store(time.Now().Add(saturationHold).UnixNano())
	}
}

// Saturated reports whether channel had to wait or was refused a slot in
// the last second, in this process: a backlog is draining through Wait.
func (l *Limiter) Saturated(channel string) bool {
	s, ok := l.saturatedUntil[channel]
	return ok && time.Now().UnixNano() < s.Load()
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

// TakeWithin is how long TryTake may wait for a slot that is about to come
// free: the spacing of a few slots at the usual rates (10 ms apiece at
// 100/s). Without it, attempts arriving a few milliseconds apart in a burst
// well under the limit would be refused, and every refusal sends an attempt
// on the slower path and marks the channel saturated for saturationHold.
// A slot further away than this is refused at once.
const TakeWithin = 100 * time.Millisecond

// TryTake takes a slot for channel if one is free now or comes free within
// TakeWithin (GCRA says exactly when), taking it only then, just before the
// caller's send. It reports false when the channel is at its limit beyond
// that or was lately (a backlog is draining through Wait), or when Redis
// cannot be reached (failing closed: the caller then takes the waiting path).
func (l *Limiter) TryTake(ctx context.Context, channel string) bool {
	rate, ok := l.limits[channel]
	if !ok || l.Saturated(channel) {
		return false
	}
	deadline := time.Now().Add(TakeWithin)
	for {
		res, err := l.allow(ctx, l.key(channel), Limit(rate))
		if err == nil && res.Allowed > 0 {
			return true
		}
		if err != nil || time.Now().Add(res.RetryAfter).After(deadline) {
			l.markSaturated(channel)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(res.RetryAfter):
		}
	}
}

// Wait blocks until channel may make one more request and returns how long
// it waited (zero when the first check allowed it). It fails closed: while
// Redis cannot be reached or does not answer (each check is bounded by
// checkTimeout) it keeps waiting instead of letting the request through.
// tick is called on every pause; Wait returns early only when ctx ends.
func (l *Limiter) Wait(ctx context.Context, channel string, tick func()) (time.Duration, error) {
	rate, ok := l.limits[channel]
	if !ok {
		return 0, fmt.Errorf("no rate limit configured for channel %q", channel)
	}
	limit := Limit(rate)
	key := l.key(channel)
	start := time.Now()
	paused := false
	for {
		pause := 500 * time.Millisecond // Redis unreachable: fail closed, retry soon
		res, err := l.allow(ctx, key, limit)
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
		l.markSaturated(channel)
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

// refund moves a GCRA key's theoretical arrival time back by one emission
// interval, never before now: the slot last taken comes free again. The
// time is kept as redis_rate keeps it (seconds since 2017, its key prefix).
var refund = redis.NewScript(`
redis.replicate_commands()
local tat = redis.call("GET", KEYS[1])
if not tat then
  return 0
end
local now = redis.call("TIME")
now = (now[1] - 1483228800) + (now[2] / 1000000)
local new_tat = tonumber(tat) - tonumber(ARGV[1])
if new_tat <= now then
  redis.call("DEL", KEYS[1])
else
  redis.call("SET", KEYS[1], new_tat, "EX", math.ceil(new_tat - now))
end
return 1
`)

// Refund gives back one slot of channel taken by TryTake or Wait whose send
// was not made (a provider's own limit refused it next), so the channel's
// rate is not spent on nothing. It is bounded by checkTimeout.
func (l *Limiter) Refund(ctx context.Context, channel string) error {
	rate, ok := l.limits[channel]
	if !ok {
		return fmt.Errorf("no rate limit configured for channel %q", channel)
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	interval := Limit(rate).Period.Seconds() / float64(Limit(rate).Rate)
	return refund.Run(ctx, l.rdb, []string{"rate:" + l.key(channel)}, interval).Err()
}

// allow asks Redis for one slot, bounded by checkTimeout.
func (l *Limiter) allow(ctx context.Context, key string, limit redis_rate.Limit) (*redis_rate.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	return l.rl.Allow(ctx, key, limit)
}

func (l *Limiter) key(channel string) string { return l.prefix + "ratelimit:" + channel }
