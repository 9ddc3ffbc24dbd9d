// Package breaker keeps a circuit breaker per provider in Redis, shared by
// every worker: each admission and each report is one Lua script, atomic in
// Redis and timed by Redis's clock, so workers agree on the state without a
// lock and without trusting their own clocks.
//
// gobreaker's DistributedCircuitBreaker was the library to prefer; it holds
// a Redis mutex around the whole call it guards (so every send to a
// provider, cluster-wide, would wait for the one before it) and takes no
// context. Here admission and report are separate steps around the send.
package breaker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is a breaker's state.
type State int

// The states, as the gauge dispatch_provider_breaker_state shows them.
const (
	Closed   State = 0
	HalfOpen State = 1
	Open     State = 2
)

func (s State) String() string {
	switch s {
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	default:
		return "closed"
	}
}

// Settings shape one breaker. New fills zero fields with the defaults.
type Settings struct {
	// FailureThreshold consecutive failures open the breaker. Defaults to
	// DefaultFailureThreshold.
	FailureThreshold int
	// FailureRatio, when above zero, also opens it once MinRequests were
	// made in the current Window and at least this share of them failed.
	FailureRatio float64
	// MinRequests before FailureRatio applies. Defaults to DefaultMinRequests.
	MinRequests int
	// Window is the span of the counts behind FailureRatio and Status.
	// Defaults to DefaultWindow.
	Window time.Duration
	// OpenFor is how long an open breaker refuses before it half-opens.
	// Defaults to DefaultOpenFor.
	OpenFor time.Duration
	// HalfOpenProbes is how many sends a half-open breaker admits at once;
	// a probe that never reports (its worker died) is given up after
	// OpenFor, and its report, should it come after all, only counts.
	// Defaults to 1.
	HalfOpenProbes int
}

// Defaults of Settings.
const (
	DefaultFailureThreshold = 5
	DefaultMinRequests      = 20
	DefaultWindow           = time.Minute
	DefaultOpenFor          = 10 * time.Second
)

func (s Settings) withDefaults() Settings {
	if s.FailureThreshold <= 0 {
		s.FailureThreshold = DefaultFailureThreshold
	}
	if s.MinRequests <= 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.Window <= 0 {
		s.Window = DefaultWindow
	}
	if s.OpenFor <= 0 {
		s.OpenFor = DefaultOpenFor
	}
	if s.HalfOpenProbes <= 0 {
		s.HalfOpenProbes = 1
	}
	return s
}

// Change is a transition one call made; exactly one caller cluster-wide
// sees each transition, so logging it there logs it once.
type Change struct {
	Provider string
	From, To State
}

// Breakers are the breakers of a set of providers.
//
// Outcomes count in the order they are reported. A success that is not a
// probe's changes no state, only the counts and the consecutive failures,
// so it does not wait for Redis: it joins the provider's tally, which Run
// sends at once (the successes reported while a call is out go together
// in the next). A failure or a probe's report is sent by its caller, after
// the tally of the successes this process reported before it: in Redis
// every success resets the consecutive failures before any failure
// reported after it counts.
type Breakers struct {
	rdb      *redis.Client
	prefix   string
	settings map[string]Settings
	// mu guards tallies: per provider, the successes reported and not yet
	// sent to Redis.
	mu      sync.Mutex
	tallies map[string]*tally
	// sending holds, per provider, the right to send its tally and
	// reports, so a tally and the report after it reach Redis in order.
	sending map[string]*sync.Mutex
	// kick wakes Run when a tally has something to send.
	kick chan struct{}
	// OnChange, when set, is called on every transition this process made,
	// and OnState on every state this process saw.
	OnChange func(Change)
	OnState  func(provider string, s State)
}

// New returns the breakers of the providers named in settings, their
// state kept under keyPrefix in rdb.
func New(rdb *redis.Client, keyPrefix string, settings map[string]Settings) *Breakers {
	s := make(map[string]Settings, len(settings))
	sending := make(map[string]*sync.Mutex, len(settings))
	for name, v := range settings {
		s[name] = v.withDefaults()
		sending[name] = &sync.Mutex{}
	}
	return &Breakers{rdb: rdb, prefix: keyPrefix, settings: s, tallies: map[string]*tally{},
		sending: sending, kick: make(chan struct{}, 1)}
}

// Providers are the names of the providers with a breaker.
func (b *Breakers) Providers() []string {
	names := make([]string, 0, len(b.settings))
	for name := range b.settings {
		names = append(names, name)
	}
	return names
}

// tally counts sends and their latency.
type tally struct {
	requests  int64
	latencyMS int64
}

// FlushEvery is how often Run tries again to send tallies Redis did not
// take.
const FlushEvery = time.Second

// Run sends this process's tallies of successful sends to Redis as they
// come, until ctx ends, then once more. While Redis does not take them,
// it tries again every FlushEvery.
func (b *Breakers) Run(ctx context.Context) error {
	t := time.NewTicker(FlushEvery)
	defer t.Stop()
	kick := b.kick
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
			defer cancel()
			_ = b.Flush(fctx)
			return nil
		case <-t.C:
		case <-kick:
		}
		if err := b.Flush(ctx); err != nil {
			kick = nil // wait for the ticker, not for every success
		} else {
			kick = b.kick
		}
	}
}

// Flush sends this process's tallies to Redis now; a tally Redis did not
// take is kept for the next flush.
func (b *Breakers) Flush(ctx context.Context) error {
	var errs []error
	for provider := range b.settings {
		if err := b.send(ctx, provider, Ticket{Provider: provider}, outcomeNone, 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// The outcomes report.lua takes.
const (
	outcomeNone     = 0 // only the tally
	outcomeReleased = 1 // nothing was sent: a probe's place given back
	outcomeSuccess  = 2
	outcomeFailure  = 3
)

// send sends provider's tally, then outcome (of ticket t, latency its
// send's), in one call; with outcomeNone and no tally, nothing. A tally
// Redis did not take is kept.
func (b *Breakers) send(ctx context.Context, provider string, t Ticket, outcome int, latency time.Duration) error {
	st := b.settings[provider]
	lock := b.sending[provider]
	lock.Lock()
	defer lock.Unlock()
	b.mu.Lock()
	oks := b.tallies[provider]
	delete(b.tallies, provider)
	b.mu.Unlock()
	if oks == nil {
		if outcome == outcomeNone {
			return nil
		}
		oks = &tally{}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := reportScript.Run(ctx, b.rdb, []string{b.key(provider)},
		outcome, flag(t.Probe), t.lease, latency.Milliseconds(),
		st.FailureThreshold, strconv.FormatFloat(st.FailureRatio, 'f', -1, 64), st.MinRequests,
		st.Window.Milliseconds(), st.OpenFor.Milliseconds(), oks.requests, oks.latencyMS).Int64Slice()
	if err != nil {
		b.add(provider, oks.requests, oks.latencyMS)
		return fmt.Errorf("breaker of %s: %w", provider, err)
	}
	b.seen(provider, State(res[1]), State(res[0]))
	return nil
}

func (b *Breakers) add(provider string, requests, latencyMS int64) {
	if requests == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.tallies[provider]
	if t == nil {
		t = &tally{}
		b.tallies[provider] = t
	}
	t.requests += requests
	t.latencyMS += latencyMS
}

// Ticket is an admission; it goes back with the report.
type Ticket struct {
	Provider string
	// Probe: admitted by a half-open breaker.
	Probe bool
	// lease numbers the half-open period a probe was admitted in; once it
	// ended (the probe was given up) its report is not a probe's.
	lease int64
}

//go:embed admit.lua
var admitSource string

//go:embed report.lua
var reportSource string

var (
	admitScript  = redis.NewScript(admitSource)
	reportScript = redis.NewScript(reportSource)
)

// callTimeout bounds one script call.
const callTimeout = time.Second

func (b *Breakers) key(provider string) string { return b.prefix + "breaker:" + provider }

// Admit asks provider's breaker to let one send through. When it refuses,
// wait is how long until it may admit again (the rest of OpenFor, or of a
// half-open probe's lease).
func (b *Breakers) Admit(ctx context.Context, provider string) (t Ticket, ok bool, wait time.Duration, err error) {
	s, known := b.settings[provider]
	if !known {
		return Ticket{}, false, 0, fmt.Errorf("no breaker for provider %q", provider)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := admitScript.Run(ctx, b.rdb, []string{b.key(provider)},
		s.OpenFor.Milliseconds(), s.HalfOpenProbes).Int64Slice()
	if err != nil {
		return Ticket{}, false, 0, fmt.Errorf("breaker of %s: %w", provider, err)
	}
	allowed, state, from := res[0] == 1, State(res[1]), State(res[2])
	b.seen(provider, from, state)
	t = Ticket{Provider: provider, Probe: allowed && state == HalfOpen, lease: res[5]}
	return t, allowed, time.Duration(res[3]) * time.Millisecond, nil
}

// Report tells the breaker how an admitted send went: failure is the
// provider's fault (timeouts, connection errors, 5xx, refused
// credentials); anything else, a message the provider refused included,
// is a success for the breaker. sent is false when nothing was sent after
// all (the probe's place is given back). Only a probe settles a half-open
// breaker; a send admitted before only counts. A success that is not a
// probe's changes no state: it joins the tally Run sends (see Breakers),
// so it does not wait for Redis; anything else is sent now, after the
// successes this process reported before it.
func (b *Breakers) Report(ctx context.Context, t Ticket, sent, failure bool, latency time.Duration) error {
	if _, known := b.settings[t.Provider]; !known {
		return fmt.Errorf("no breaker for provider %q", t.Provider)
	}
	switch {
	case sent && !failure && !t.Probe:
		b.add(t.Provider, 1, latency.Milliseconds())
		select {
		case b.kick <- struct{}{}:
		default:
		}
		return nil
	case !sent:
		return b.send(ctx, t.Provider, t, outcomeReleased, 0)
	case failure:
		return b.send(ctx, t.Provider, t, outcomeFailure, latency)
	default:
		return b.send(ctx, t.Provider, t, outcomeSuccess, latency)
	}
}

func (b *Breakers) seen(provider string, from, to State) {
	if b.OnState != nil {
		b.OnState(provider, to)
	}
	if from != to && b.OnChange != nil {
		b.OnChange(Change{Provider: provider, From: from, To: to})
	}
}

func flag(v bool) int {
	if v {
		return 1
	}
	return 0
}

// Status is a breaker's state and recent record.
type Status struct {
	State State
	// ConsecutiveFailures since the last success.
	ConsecutiveFailures int
	// Requests and Failures in the current window and the one before it.
	Requests, Failures int
	// AverageLatency of those requests.
	AverageLatency time.Duration
	// OpenUntil is when an open breaker half-opens.
	OpenUntil *time.Time
	// ChangedAt is when the state last changed; nil if it never did.
	ChangedAt *time.Time
}

// SuccessRatio is the share of recent requests that did not fail, nil with
// no recent request.
func (s Status) SuccessRatio() *float64 {
	if s.Requests == 0 {
		return nil
	}
	r := float64(s.Requests-s.Failures) / float64(s.Requests)
	return &r
}

// Status reads provider's breaker without changing it (an open breaker
// whose time is up shows half-open, as the next admission will make it).
func (b *Breakers) Status(ctx context.Context, provider string) (Status, error) {
	s, known := b.settings[provider]
	if !known {
		return Status{}, fmt.Errorf("no breaker for provider %q", provider)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	hm := pipe.HMGet(ctx, b.key(provider), "state", "fails", "until", "wstart", "wreq", "wfail", "wlat", "preq", "pfail", "plat", "changed")
	now := pipe.Time(ctx)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Status{}, fmt.Errorf("breaker of %s: %w", provider, err)
	}
	v := hm.Val()
	n := func(i int) int64 {
		if i >= len(v) || v[i] == nil {
			return 0
		}
		x, _ := strconv.ParseInt(fmt.Sprint(v[i]), 10, 64)
		return x
	}
	nowMs := now.Val().UnixMilli()
	st := Status{State: State(n(0)), ConsecutiveFailures: int(n(1))}
	// The counts of the last one to two windows: the current one's and
	// the one before; a current window that has ended (no send since) is
	// the one before, and anything older is not recent.
	var req, fail, lat int64
	switch age, window := nowMs-n(3), s.Window.Milliseconds(); {
	case age < window:
		req, fail, lat = n(4)+n(7), n(5)+n(8), n(6)+n(9)
	case age < 2*window:
		req, fail, lat = n(4), n(5), n(6)
	}
	st.Requests, st.Failures = int(req), int(fail)
	if req > 0 {
		st.AverageLatency = time.Duration(lat/req) * time.Millisecond
	}
	if st.State == Open {
		until := time.UnixMilli(n(2))
		if nowMs >= n(2) {
			st.State = HalfOpen
		} else {
			st.OpenUntil = &until
		}
	}
	if c := n(10); c > 0 {
		t := time.UnixMilli(c)
		st.ChangedAt = &t
	}
	return st, nil
}

// Admits reports whether provider's breaker would admit a send now
// (closed, or open past its time), without taking a probe's place.
func (b *Breakers) Admits(ctx context.Context, provider string) bool {
	st, err := b.Status(ctx, provider)
	return err == nil && st.State != Open
}
