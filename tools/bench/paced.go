package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
)

// PacedResult is the paced section's figures: single POSTs at a steady rate
// the stack can keep up with, so the latency is a notification's own and
// not the end-to-end run's queue.
type PacedResult struct {
	// TargetPerSec is the planned rate; RateFrom says where it came from.
	TargetPerSec float64 `json:"targetPerSec"`
	RateFrom     string  `json:"rateFrom"`
	Seconds      float64 `json:"seconds"` // how long sends were planned
	Sent         int     `json:"sent"`
	Accepted     int     `json:"accepted"`
	// Refused counts the sends not accepted, by status ("0": no answer).
	Refused map[string]int `json:"refused,omitempty"`
	// AcceptedPerSec is accepted / (last answer − first send).
	AcceptedPerSec float64 `json:"acceptedPerSec"`
	// MaxSlipMS is the most a send started after its planned time: more
	// than a few ms means the bench, not the stack, set the pace.
	MaxSlipMS float64 `json:"maxSlipMs"`
	Delivered int     `json:"delivered"`
	// DeliveredPerSec is delivered / (last sink arrival − first createdAt).
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	// LatencyMS is, per notification, the sink's firstAt − the API's createdAt.
	LatencyMS Latency `json:"latencyMs"`
	// Undelivered counts the accepted notifications not at the sink
	// GraceSeconds after the last answer; Stuck says their API status.
	Undelivered  int            `json:"undelivered"`
	GraceSeconds float64        `json:"graceSeconds"`
	Stuck        map[string]int `json:"stuck,omitempty"`
}

// msOf is d in milliseconds, two decimals.
func msOf(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// pacedGrace bounds the wait for the paced notifications after the last
// answer: at a rate the stack keeps up with, they arrive within seconds.
const pacedGrace = time.Minute

// runPaced sends single POSTs at --paced-rate (default: half the end-to-end
// run's delivered/s, so the stack has room) for --paced-duration, waits for
// them at the sink, and fills res.Paced and res.Warnings.
func runPaced(ctx context.Context, o options, api *apiClient, snk *sinkClient, res *Result) error {
	rate, from := o.PacedRate, "--paced-rate"
	if rate <= 0 {
		rate, from = res.EndToEnd.DeliveredPerSec/2, "half the end-to-end delivered/s"
	}
	if rate <= 0 {
		res.Warnings = append(res.Warnings, "paced: skipped, no rate (the end-to-end run delivered nothing; pass --paced-rate)")
		return nil
	}
	step("paced: single POSTs at a steady %.1f/s (%s) for %s", rate, from, o.PacedDuration)
	if err := snk.reset(ctx); err != nil {
		return fmt.Errorf("resetting the sink: %w", err)
	}
	p := &PacedResult{TargetPerSec: round3(rate), RateFrom: from, Seconds: o.PacedDuration.Seconds(), GraceSeconds: pacedGrace.Seconds()}
	var (
		mu       sync.Mutex
		accepted []created
		refused  = map[string]int{}
		last     time.Time
		firstErr error
	)
	pc := &pacer{api: api, name: "paced-" + uuid.NewString()[:8], rate: rate, answered: func(s pacedSend) {
		mu.Lock()
		defer mu.Unlock()
		if s.answered.After(last) {
			last = s.answered
		}
		if c, ok := s.accepted(); ok {
			accepted = append(accepted, c)
			return
		}
		refused[strconv.Itoa(s.status)]++
		if firstErr == nil {
			firstErr = s.err
		}
	}}
	start := time.Now()
	pc.run(ctx, o.PacedDuration)
	if err := ctx.Err(); err != nil {
		return err
	}
	p.Sent, p.Accepted, p.MaxSlipMS = int(pc.sent.Load()), len(accepted), msOf(time.Duration(pc.slip.Load()))
	if len(refused) > 0 {
		p.Refused = refused
		res.Warnings = append(res.Warnings, fmt.Sprintf("paced: %d of %d POSTs refused (by status: %s), first: %v", p.Sent-p.Accepted, p.Sent, counts(refused), firstErr))
	}
	res.Paced = p
	if len(accepted) == 0 {
		return nil
	}
	p.AcceptedPerSec = round3(float64(len(accepted)) / last.Sub(start).Seconds())
	if p.MaxSlipMS > 100 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("paced: a send started %.0f ms behind its schedule: the bench could not hold %.1f/s", p.MaxSlipMS, rate))
	}

	step("paced: accepted %d; waiting for the sink (up to %s)", len(accepted), pacedGrace)
	records, pending, err := awaitArrivals(ctx, snk, accepted, last.Add(pacedGrace))
	if err != nil {
		return err
	}
	var (
		lat                      []time.Duration
		firstAccept, lastArrival time.Time
	)
	for _, c := range accepted {
		if firstAccept.IsZero() || c.CreatedAt.Before(firstAccept) {
			firstAccept = c.CreatedAt
		}
		if rec, ok := records[c.ID]; ok {
			lat = append(lat, rec.FirstAt.Sub(c.CreatedAt))
			if rec.FirstAt.After(lastArrival) {
				lastArrival = rec.FirstAt
			}
		}
	}
	p.Delivered, p.Undelivered, p.LatencyMS = len(lat), len(pending), latencyOf(lat)
	if len(lat) > 0 {
		p.DeliveredPerSec = round3(float64(len(lat)) / lastArrival.Sub(firstAccept).Seconds())
	}
	if len(pending) > 0 {
		p.Stuck = stuckByStatus(ctx, api, pending)
		res.Warnings = append(res.Warnings, fmt.Sprintf("paced: %d notification(s) had not reached the sink %s after the last answer (by API status: %s), e.g. %s",
			len(pending), pacedGrace, counts(p.Stuck), pending[0]))
	}
	return nil
}

// printPaced is the PACED block of the table.
func printPaced(w *tabwriter.Writer, row func(label, format string, args ...any), p *PacedResult) {
	fmt.Fprintf(w, "\nPACED  (single POSTs at a steady %.1f/s, open loop, for %.0fs; rate: %s)\n", p.TargetPerSec, p.Seconds, p.RateFrom)
	row("accepted/s (API)", "%.1f  (%d sent, %d accepted%s; sends at most %.0f ms behind schedule)", p.AcceptedPerSec, p.Sent, p.Accepted, errorsNote(p.Refused), p.MaxSlipMS)
	row("delivered/s (sink arrivals)", "%.1f  (%d delivered, %d not within %.0fs of the last answer)", p.DeliveredPerSec, p.Delivered, p.Undelivered, p.GraceSeconds)
	l := p.LatencyMS
	row("accepted → delivered p50/p90/p99", "%.0f / %.0f / %.0f ms (max %.0f)", l.P50, l.P90, l.P99, l.Max)
	if len(p.Stuck) > 0 {
		row("not delivered, by API status", "%s", counts(p.Stuck))
	}
}

// pacer sends single POSTs at a steady rate, open loop: each send has a
// planned time on a fixed schedule and runs in a goroutine of its own, so
// a slow answer never delays the next send (clients that wait for answers
// would lower the rate just when the stack slows, and hide its queue).
type pacer struct {
	api  *apiClient
	name string  // names the notifications
	rate float64 // sends per second
	// launched (optional) is called as each send starts, with its planned
	// time; answered once per send, from that send's goroutine.
	launched func(planned time.Time)
	answered func(pacedSend)
	sent     atomic.Int64
	slip     atomic.Int64 // the most a send started late, in ns
}

// pacedSend is one POST of a pacer.
type pacedSend struct {
	planned, answered time.Time
	status            int // 0: no answer
	created           created
	err               error
}

// accepted returns the notification the API took; its CreatedAt (the
// acceptance time, on the API's clock as in the end-to-end run) falls back
// to when the answer came, should an API leave it out.
func (s pacedSend) accepted() (created, bool) {
	if s.err != nil || s.created.ID == "" {
		return created{}, false
	}
	c := s.created
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.answered
	}
	return c, true
}

// maxInFlight bounds the sends awaiting an answer: past it the schedule
// slips (and slip says so) rather than the bench running out of sockets.
const maxInFlight = 1024

// run sends from now until d has passed or ctx ends, and returns once every
// send has been answered.
func (p *pacer) run(ctx context.Context, d time.Duration) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxInFlight)
	interval := time.Duration(float64(time.Second) / p.rate)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= d || !sleepUntil(ctx, at) {
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if late := int64(time.Since(at)); late > p.slip.Load() {
			p.slip.Store(late) // only this goroutine writes it
		}
		p.sent.Add(1)
		if p.launched != nil {
			p.launched(at)
		}
		wg.Go(func() {
			defer func() { <-slots }()
			c, status, err := p.api.create(ctx, notificationFor(p.name, i))
			p.answered(pacedSend{planned: at, answered: time.Now(), status: status, created: c, err: err})
		})
	}
	wg.Wait()
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
