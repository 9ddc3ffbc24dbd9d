// Package quota enforces per-tenant acceptance quotas in Redis and renders
// them as the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers,
// drafts 08 and later: the "RateLimit-Policy" and "RateLimit" Structured Field
// Lists).
//
// Two fixed windows can be configured per tenant:
//
//   - policy "per-second": window of 1 s, one counter per epoch second
//     (window id = unix seconds);
//   - policy "per-day": window of 86400 s, one counter per UTC day
//     (window id = unix seconds / 86400).
//
// Header examples for Limits{PerSecond: 10, PerDay: 10000}:
//
//	RateLimit-Policy: "per-second";q=10;w=1, "per-day";q=10000;w=86400
//	RateLimit: "per-second";r=3;t=1, "per-day";r=9876;t=5000
//
// q is the quota, w the window in seconds, r the remaining quota units
// (never negative) and t the seconds until the window resets, rounded up.
//
// Windows are taken from the Redis server clock (TIME inside the script),
// so several API processes agree on window boundaries whatever their own
// clocks say. All of a tenant's keys share one hash tag
// (prefix + "{" + tenant + "}"), so they live in one cluster slot.
package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Policy identifiers used in the RateLimit and RateLimit-Policy fields.
const (
	PolicyPerSecond = "per-second"
	PolicyPerDay    = "per-day"
)

const (
	secondWindow = 1
	dayWindow    = 86400
	// Key expiry margins past the end of the window.
	secondMargin = 2
	dayMargin    = 60
)

// ErrInvalidCount is returned when Take or Refund is called with n < 1.
var ErrInvalidCount = errors.New("quota: count must be at least 1")

// Limits are a tenant's quotas. A value <= 0 means no quota of that kind.
type Limits struct{ PerSecond, PerDay int }

// None reports whether no quota is configured at all.
func (l Limits) None() bool { return l.PerSecond <= 0 && l.PerDay <= 0 }

// Window is the state of one configured quota window.
type Window struct {
	Policy    string        // PolicyPerSecond or PolicyPerDay
	Quota     int           // q
	Seconds   int           // w: window length in seconds
	ID        int64         // window id (epoch second, or epoch day)
	Used      int           // counter value after this decision
	Remaining int           // max(0, Quota-Used)
	Reset     time.Duration // time until this window ends (> 0)
	Refused   bool          // this window had no room for the request
}

// ResetSeconds is the t parameter: seconds until the window ends, rounded up
// (at least 1).
func (w Window) ResetSeconds() int64 { return ceilSeconds(w.Reset) }

// Decision is the result of Take or Peek.
type Decision struct {
	// Allowed: the request fits (Take: it was charged).
	Allowed bool
	// TooLarge: the request is bigger than one of the quotas and can never
	// be accepted whole; RetryAfter is then 0. Answer 413/422, not 429.
	TooLarge bool
	// RetryAfter: when refused (and not TooLarge), the time until every
	// refusing window has ended; fixed windows start empty, so the request
	// fits then.
	RetryAfter time.Duration
	// N is the amount charged by Take (0 when refused, and for Peek).
	N int
	// Windows holds the configured windows, per-second first. Empty when
	// Limits.None().
	Windows []Window
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds (for the
// Retry-After header); 0 when not refused or TooLarge.
func (d Decision) RetryAfterSeconds() int64 {
	if d.RetryAfter <= 0 {
		return 0
	}
	return ceilSeconds(d.RetryAfter)
}

// Window returns the window for a policy name, if configured.
func (d Decision) Window(policy string) (Window, bool) {
	for _, w := range d.Windows {
		if w.Policy == policy {
			return w, true
		}
	}
	return Window{}, false
}

// Policy renders the RateLimit-Policy field value, "" when no limits.
func (d Decision) Policy() string {
	parts := make([]string, 0, len(d.Windows))
	for _, w := range d.Windows {
		parts = append(parts, fmt.Sprintf("%q;q=%d;w=%d", w.Policy, w.Quota, w.Seconds))
	}
	return strings.Join(parts, ", ")
}

// State renders the RateLimit field value, "" when no limits.
func (d Decision) State() string {
	parts := make([]string, 0, len(d.Windows))
	for _, w := range d.Windows {
		r := w.Remaining
		if r < 0 {
			r = 0
		}
		parts = append(parts, fmt.Sprintf("%q;r=%d;t=%d", w.Policy, r, w.ResetSeconds()))
	}
	return strings.Join(parts, ", ")
}

// ErrUnavailable is returned, at once, by every call made within Pause of
// a call that Redis did not answer (an error or no answer within
// CallTimeout): the caller skips the quota without waiting on Redis again.
var ErrUnavailable = errors.New("quota: Redis did not answer a moment ago; not asked again yet")

// CallTimeout bounds each call to Redis, and Pause is how long calls fail
// at once after one that Redis did not answer. A silent Redis (packets
// dropped) thus costs a request at most CallTimeout, and then nothing until
// the pause is over, when one call tries again.
const (
	CallTimeout = 200 * time.Millisecond
	Pause       = 2 * time.Second
)

// Quota enforces Limits in Redis.
type Quota struct {
	rdb    redis.UniversalClient
	prefix string
	// downUntil is the UnixNano before which calls fail with ErrUnavailable.
	downUntil atomic.Int64
}

// New returns a Quota storing its counters under prefix (e.g. "dispatch:quota:").
func New(rdb redis.UniversalClient, prefix string) *Quota {
	return &Quota{rdb: rdb, prefix: prefix}
}

// call runs fn against Redis within CallTimeout, unless Redis failed a
// call less than Pause ago. A failure starts a pause, unless the caller
// cancelled its context (a client gone says nothing about Redis); a
// deadline, the caller's or CallTimeout, is Redis not answering in time.
func (q *Quota) call(ctx context.Context, fn func(ctx context.Context) error) error {
	if time.Now().UnixNano() < q.downUntil.Load() {
		return ErrUnavailable
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	err := fn(cctx)
	if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
		q.downUntil.Store(time.Now().Add(Pause).UnixNano())
	}
	return err
}

// takeScript checks (and, when ARGV[4] == "1", charges) both windows
// atomically. KEYS[1] is the tenant's key base; the window keys are
// KEYS[1]..":s:"..<epoch second> and KEYS[1]..":d:"..<epoch day>, derived
// from the server clock and sharing KEYS[1]'s hash tag.
// Returns {now_sec, now_usec, sec_count, day_count, ok}.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1])
local usec = tonumber(t[2])
local lsec = tonumber(ARGV[1])
local lday = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local charge = ARGV[4] == '1'
local day = math.floor(now / 86400)
local skey = KEYS[1] .. ':s:' .. t[1]
local dkey = KEYS[1] .. ':d:' .. string.format('%d', day)
local sc, dc = 0, 0
if lsec > 0 then sc = tonumber(redis.call('GET', skey) or '0') end
if lday > 0 then dc = tonumber(redis.call('GET', dkey) or '0') end
local ok = 1
if lsec > 0 and sc + n > lsec then ok = 0 end
if lday > 0 and dc + n > lday then ok = 0 end
if ok == 1 and charge then
  if lsec > 0 then
    sc = redis.call('INCRBY', skey, n)
    redis.call('EXPIREAT', skey, now + 1 + ` + strconv.Itoa(secondMargin) + `)
  end
  if lday > 0 then
    dc = redis.call('INCRBY', dkey, n)
    redis.call('EXPIREAT', dkey, (day + 1) * 86400 + ` + strconv.Itoa(dayMargin) + `)
  end
end
return {now, usec, sc, dc, ok}
`)

// refundScript decrements each KEYS[i] by ARGV[1], never below 0, and never
// creates a key (an expired window has nothing to give back).
var refundScript = redis.NewScript(`
local n = tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  local v = tonumber(redis.call('GET', k) or '0')
  if v > 0 then
    if v > n then redis.call('DECRBY', k, n) else redis.call('DECRBY', k, v) end
  end
end
return 0
`)

func (q *Quota) base(tenant string) string { return q.prefix + "{" + tenant + "}" }

func (q *Quota) secondKey(tenant string, id int64) string {
	return q.base(tenant) + ":s:" + strconv.FormatInt(id, 10)
}

func (q *Quota) dayKey(tenant string, id int64) string {
	return q.base(tenant) + ":d:" + strconv.FormatInt(id, 10)
}

// Take counts n notifications for tenant against both windows atomically:
// either every configured window has room for n and all are charged, or
// nothing is charged and the Decision is refused (a batch is refused whole).
// With Limits.None() it is always allowed and Redis is not touched.
func (q *Quota) Take(ctx context.Context, tenant string, l Limits, n int) (Decision, error) {
	if n < 1 {
		return Decision{}, ErrInvalidCount
	}
	if l.None() {
		return Decision{Allowed: true, N: n}, nil
	}
	return q.run(ctx, tenant, l, n, true)
}

// Peek reports the state without charging anything. Allowed reports whether
// a Take of 1 would currently fit; N is 0.
func (q *Quota) Peek(ctx context.Context, tenant string, l Limits) (Decision, error) {
	if l.None() {
		return Decision{Allowed: true}, nil
	}
	return q.run(ctx, tenant, l, 1, false)
}

// Refund gives back n notifications taken earlier by the Take that returned
// at (e.g. the request failed after Take and nothing was stored). It
// decrements exactly the window keys that Take charged (at.Windows ids),
// never below 0; windows that have since expired are left alone. Refunding
// a refused or Peek decision is a no-op.
func (q *Quota) Refund(ctx context.Context, tenant string, l Limits, n int, at Decision) error {
	if n < 1 {
		return ErrInvalidCount
	}
	if l.None() || !at.Allowed || at.N == 0 {
		return nil
	}
	keys := make([]string, 0, 2)
	for _, w := range at.Windows {
		switch w.Policy {
		case PolicyPerSecond:
			keys = append(keys, q.secondKey(tenant, w.ID))
		case PolicyPerDay:
			keys = append(keys, q.dayKey(tenant, w.ID))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	err := q.call(ctx, func(ctx context.Context) error { return refundScript.Run(ctx, q.rdb, keys, n).Err() })
	if err != nil {
		return fmt.Errorf("quota refund: %w", err)
	}
	return nil
}

func (q *Quota) run(ctx context.Context, tenant string, l Limits, n int, charge bool) (Decision, error) {
	sec, day := max(l.PerSecond, 0), max(l.PerDay, 0)
	flag := "0"
	if charge {
		flag = "1"
	}
	var res []int64
	err := q.call(ctx, func(ctx context.Context) (err error) {
		res, err = takeScript.Run(ctx, q.rdb, []string{q.base(tenant)}, sec, day, n, flag).Int64Slice()
		return err
	})
	if err != nil {
		return Decision{}, fmt.Errorf("quota take: %w", err)
	}
	if len(res) != 5 {
		return Decision{}, fmt.Errorf("quota take: unexpected reply %v", res)
	}
	nowSec, nowUsec, sc, dc, ok := res[0], res[1], res[2], res[3], res[4] == 1
	now := time.Unix(nowSec, nowUsec*1000)

	d := Decision{Allowed: ok}
	if ok && charge {
		d.N = n
	}
	add := func(policy string, limit, seconds int, used int64) {
		id := nowSec / int64(seconds)
		end := time.Unix((id+1)*int64(seconds), 0)
		w := Window{
			Policy:    policy,
			Quota:     limit,
			Seconds:   seconds,
			ID:        id,
			Used:      int(used),
			Remaining: max(limit-int(used), 0),
			Reset:     end.Sub(now),
			Refused:   !ok && used+int64(n) > int64(limit),
		}
		if w.Refused {
			if n > limit {
				d.TooLarge = true
			}
			d.RetryAfter = max(d.RetryAfter, w.Reset)
		}
		d.Windows = append(d.Windows, w)
	}
	if sec > 0 {
		add(PolicyPerSecond, sec, secondWindow, sc)
	}
	if day > 0 {
		add(PolicyPerDay, day, dayWindow, dc)
	}
	if d.TooLarge {
		d.RetryAfter = 0
	}
	return d, nil
}

func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
