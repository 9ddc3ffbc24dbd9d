package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"

	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
)

// The scale-out mode (--scale-out) runs the stack as several APIs and
// workers: the running ones of `PROVIDERS_FILE= make run` plus processes
// the bench starts from bin/api and bin/worker with the environment make
// run gives its own. It measures two things:
//
//  1. Throughput: a burst of single POSTs spread over every API, delivered
//     by every worker; nothing accepted may go missing or arrive twice.
//  2. The rate limit across workers: a burst of sms with every worker at a
//     low RATE_LIMIT_SMS. The limiter (internal/ratelimit) is GCRA in Redis,
//     one key per channel shared by every worker, so the limit is
//     cluster-wide; but each worker checks with its own configured rate
//     (and Temporal paces the channel's task queue at the rate its latest
//     poller names), so every worker must run with the same limit. The
//     make-run worker runs with make run's, and is supervised (a killed
//     one comes back): the bench pauses it (SIGSTOP, SIGCONT after) and
//     starts every worker of this part itself. A paused worker can still
//     take work until its Temporal long polls expire and RabbitMQ drops its
//     consumers, so the burst waits pausedPollsLapse after the pause.

// Ports of the processes the bench starts: APIs from scaleAPIPort up,
// workers' metrics from scaleWorkerPort up, clear of make run's 8080 and
// 8081 and of each other for up to scaleMax of each.
const (
	scaleAPIPort    = 8180
	scaleWorkerPort = 8190
	scaleMax        = 10
)

const (
	// pausedPollsLapse is how long a paused worker may still be handed
	// work: the Temporal server holds a long poll for up to a minute (a
	// task matched to the paused worker's would wait in the stopped
	// process), and RabbitMQ keeps its consumers until two 10 s heartbeats
	// are missed.
	pausedPollsLapse = 65 * time.Second
	// scaleReadyTimeout bounds a started process's wait for /readyz.
	scaleReadyTimeout = 90 * time.Second
	// scaleStopTimeout bounds a graceful stop (a worker drains for up to
	// SHUTDOWN_TIMEOUT, 30 s by default) before SIGKILL.
	scaleStopTimeout = 45 * time.Second
	// scaleNDefault replaces --n's default in this mode: enough for every
	// worker to take a share for a while.
	scaleNDefault = 3000
	// scaleLogs is where the started processes' output goes.
	scaleLogs = ".data/bench-scaleout-%s.log"
)

// scaleOptions are the scale-out mode's flags.
type scaleOptions struct {
	APIs    int
	Workers int
	Limit   int
	LimitN  int
}

// scaleFlags registers the scale-out mode's flags (--scale-out itself is
// options.ScaleOut).
func scaleFlags(s *scaleOptions) {
	flag.IntVar(&s.APIs, "scale-apis", 2, "--scale-out: APIs in all, the running one included")
	flag.IntVar(&s.Workers, "scale-workers", 3, "--scale-out: workers in all, the running one included")
	flag.IntVar(&s.Limit, "scale-limit", 50, "--scale-out: RATE_LIMIT_SMS of every worker in the rate-limit part, low enough to bind (0: leave the part out, and the make-run worker alone)")
	flag.IntVar(&s.LimitN, "scale-limit-n", 1000, "--scale-out: sms sent at once in the rate-limit part")
}

// scaleOutHelp is --scale-out's help.
const scaleOutHelp = "run only the scale-out section against PROVIDERS_FILE= make run: start APIs (ports 8180…) and workers (metrics 8190…) from bin/ beside the running ones, " +
	"up to --scale-apis and --scale-workers, with make run's environment (logs in .data/bench-scaleout-*.log; stopped at the end, on error and on Ctrl-C); " +
	"send --n (default 3000) single POSTs at --concurrency clients round-robin over the APIs; then, unless --scale-limit 0, hold sms to --scale-limit/s on every worker: " +
	"the limit is a worker setting, so the bench stops its extra workers, pauses the make-run worker (SIGSTOP; SIGCONT at the end), " +
	"starts --scale-workers workers of its own with RATE_LIMIT_SMS set, waits 65s for the paused worker's Temporal polls and AMQP consumers to lapse, and sends --scale-limit-n sms at once"

// ScaleOutResult is the scale-out section's figures.
type ScaleOutResult struct {
	// APIs and Workers are the base URLs of the throughput part's APIs and
	// worker metrics, the running ones first.
	APIs       []string        `json:"apis"`
	Workers    []string        `json:"workers"`
	Throughput ScaleThroughput `json:"throughput"`
	RateLimit  *ScaleRateLimit `json:"rateLimit,omitempty"`
}

// ScaleThroughput is the burst over every API and worker.
type ScaleThroughput struct {
	Requested int `json:"requested"`
	Accepted  int `json:"accepted"`
	Rejected  int `json:"rejected"`
	// AcceptedByAPI counts, per API (in APIs' order), what it accepted.
	AcceptedByAPI []int `json:"acceptedByApi"`
	// AcceptedPerSec is accepted / (last API answer − first request).
	AcceptedPerSec float64 `json:"acceptedPerSec"`
	Delivered      int     `json:"delivered"`
	Missing        int     `json:"missing"`
	// MissingByStatus is what the API says of the missing ones.
	MissingByStatus map[string]int `json:"missingByStatus,omitempty"`
	// DeliveredPerSec is delivered / (last sink arrival − first createdAt).
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	DeliverySeconds float64 `json:"deliverySeconds"`
	// LatencyMS is, per notification, the sink's firstAt − createdAt.
	LatencyMS Latency `json:"latencyMs"`
	// Duplicates counts our ids the sink saw more than once (requests > 1
	// or delivered > 1).
	Duplicates int `json:"duplicates"`
	// AttemptsByWorker is each worker's dispatch_delivery_attempts_total
	// over the burst (in Workers' order): who did the work.
	AttemptsByWorker []int `json:"attemptsByWorker"`
}

// ScaleRateLimit is a burst of one channel held to a low limit on every
// worker. Its rates come from the sink's arrival times (each id's firstAt).
type ScaleRateLimit struct {
	Channel string `json:"channel"`
	Limit   int    `json:"limit"`
	// Burst is the limiter's GCRA burst at Limit: at the limiter, any
	// second holds at most Limit + Burst deliveries.
	Burst           int      `json:"burst"`
	Workers         []string `json:"workers"`
	PausedWorkerPID int      `json:"pausedWorkerPid"`
	Requested       int      `json:"requested"`
	Accepted        int      `json:"accepted"`
	Delivered       int      `json:"delivered"`
	Missing         int      `json:"missing"`
	// MissingByStatus is what the API says of the missing ones.
	MissingByStatus map[string]int `json:"missingByStatus,omitempty"`
	Duplicates      int            `json:"duplicates"`
	// Seconds is the first arrival to the last.
	Seconds float64 `json:"seconds"`
	// MeanPerSec is (delivered − 1) / Seconds: arrivals spaced exactly at
	// the limit give the limit.
	MeanPerSec float64 `json:"meanPerSec"`
	// MaxInAnySecond is the most arrivals in any 1 s sliding window. It may
	// pass Limit + Burst by a few: the sink's clock adds each delivery's
	// own jitter to the limiter's spacing.
	MaxInAnySecond int `json:"maxInAnySecond"`
	// Held: MeanPerSec ≤ Limit × 1.05.
	Held bool `json:"held"`
	// Bound: MeanPerSec ≥ Limit × 0.9, the limit (not the stack) set the
	// pace; otherwise Held says little.
	Bound bool `json:"bound"`
	// AttemptsByWorker is each worker's attempts on Channel (in Workers'
	// order): the limit was shared, not one worker's.
	AttemptsByWorker []int `json:"attemptsByWorker"`
}

// runScaleOut is the --scale-out mode: it starts the extra processes,
// measures, stops them, and prints the table and the JSON line.
func runScaleOut(ctx context.Context, o options, res *Result, snk *sinkClient, procs *processes) error {
	s := o.Scale
	if !scaleFlagSet("n") && !o.Quick {
		o.N = scaleNDefault
		res.Options.N = o.N
	}
	switch {
	case s.APIs < 1 || s.APIs > scaleMax || s.Workers < 1 || s.Workers > scaleMax:
		return fmt.Errorf("--scale-apis and --scale-workers must be 1 to %d", scaleMax)
	case s.Limit < 0 || (s.Limit > 0 && s.LimitN < 2):
		return errors.New("--scale-limit must not be negative, and --scale-limit-n must be at least 2")
	}
	bins, warnings, err := scaleBinaries(procs)
	if err != nil {
		return err
	}
	res.Warnings = append(res.Warnings, warnings...)
	if note := scaleConnBudget(s); note != "" {
		res.Warnings = append(res.Warnings, note)
	}
	// The pid is found before any worker of ours exists: later, several
	// processes are bin/worker.
	workerPID := procs.pid("worker")
	if s.Limit > 0 && workerPID == 0 {
		return errors.New("the rate-limit part pauses the running worker, and none was found in /proc: pass --worker-pid, or --scale-limit 0")
	}

	f := &scaleFleet{env: scaleEnv(o.Sink)}
	defer f.stopAll()
	so := &ScaleOutResult{APIs: []string{o.API}, Workers: []string{o.Worker}}
	res.ScaleOut = so

	step("scale-out: starting %d API(s) and %d worker(s) beside the running ones (logs in %s)", s.APIs-1, s.Workers-1, fmt.Sprintf(scaleLogs, "*"))
	for i := range s.APIs - 1 {
		port := scaleAPIPort + i
		if _, err := f.start(ctx, "api", fmt.Sprintf("api-%d", port), bins.api, port); err != nil {
			return err
		}
		so.APIs = append(so.APIs, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	for i := range s.Workers - 1 {
		port := scaleWorkerPort + i
		if _, err := f.start(ctx, "worker", fmt.Sprintf("worker-%d", port), bins.worker, port); err != nil {
			return err
		}
		so.Workers = append(so.Workers, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	apis, err := scaleClients(ctx, o, so.APIs)
	if err != nil {
		return err
	}

	step("scale-out throughput: %d single POSTs at %d clients over %d APIs, %d workers", o.N, o.Concurrency, len(apis), len(so.Workers))
	t, notes, err := scaleThroughput(ctx, o, apis, so.Workers, snk)
	if err != nil {
		return fmt.Errorf("scale-out throughput: %w", err)
	}
	so.Throughput = t
	res.Warnings = append(res.Warnings, notes...)

	if s.Limit > 0 {
		rl, notes, err := scaleRateLimit(ctx, o, f, bins.worker, apis, snk, workerPID)
		if err != nil {
			return fmt.Errorf("scale-out rate limit: %w", err)
		}
		so.RateLimit = &rl
		res.Warnings = append(res.Warnings, notes...)
	}
	res.Warnings = append(res.Warnings, f.stopAll()...)

	printTable(os.Stdout, res)
	if err := printJSON(os.Stdout, res); err != nil {
		return err
	}
	return scaleVerdict(so)
}

// scaleVerdict fails the run when the figures break a promise: everything
// accepted delivered once, and the limit held.
func scaleVerdict(so *ScaleOutResult) error {
	var errs []error
	if t := so.Throughput; t.Missing > 0 || t.Duplicates > 0 {
		errs = append(errs, fmt.Errorf("throughput: %d of %d accepted notifications missing at the sink, %d delivered more than once", t.Missing, t.Accepted, t.Duplicates))
	}
	if r := so.RateLimit; r != nil {
		if r.Missing > 0 || r.Duplicates > 0 {
			errs = append(errs, fmt.Errorf("rate limit: %d of %d accepted %s missing at the sink, %d delivered more than once", r.Missing, r.Accepted, r.Channel, r.Duplicates))
		}
		if !r.Held {
			errs = append(errs, fmt.Errorf("rate limit: %s arrived at %.1f/s on average, over %d/s × 1.05", r.Channel, r.MeanPerSec, r.Limit))
		}
	}
	return errors.Join(errs...)
}

// scaleBins are the binaries the bench starts.
type scaleBins struct{ api, worker string }

// scaleBinaries finds bin/api and bin/worker (make run builds them) and
// warns when the running processes run other files: the figures would mix
// two builds.
func scaleBinaries(procs *processes) (scaleBins, []string, error) {
	var (
		b        scaleBins
		warnings []string
	)
	for _, x := range []struct {
		name string
		path *string
	}{{"api", &b.api}, {"worker", &b.worker}} {
		abs, err := filepath.Abs(filepath.Join("bin", x.name))
		if err != nil {
			return b, nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return b, nil, fmt.Errorf("the scale-out mode starts bin/%s, which is not there (make build, or make run, builds it): %w", x.name, err)
		}
		*x.path = abs
		if pid := procs.pid(x.name); pid > 0 {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe != abs {
				warnings = append(warnings, fmt.Sprintf("the running %s (pid %d) runs %s, the extra ones %s: the figures mix two builds", x.name, pid, exe, abs))
			}
		}
	}
	return b, warnings, nil
}

// scaleConnBudget warns when the processes' connection pools together may
// pass PostgreSQL's default max_connections (100, which the Temporal server
// on PostgreSQL shares, with up to 48): a refused connection shows as
// refused requests or slow deliveries, not as a limit of the design. The
// running API and worker keep DATABASE_MAX_CONNS each (the paused worker
// holds its connections too); the extra ones get scaleExtraConns.
func scaleConnBudget(s scaleOptions) string {
	extra := s.APIs + s.Workers - 2
	if s.Limit > 0 {
		extra++
	}
	per, err := strconv.Atoi(setting("DATABASE_MAX_CONNS", "20"))
	if err != nil {
		return ""
	}
	total := 2*per + extra*scaleExtraConns
	if total+48 <= 100 {
		return ""
	}
	return fmt.Sprintf("the running API and worker (DATABASE_MAX_CONNS %d each) and %d extra processes (%d each) may open %d PostgreSQL connections, with a Temporal server on PostgreSQL's 48 over the server's default max_connections of 100: refusals would show as refused requests or slow deliveries", per, extra, scaleExtraConns, total)
}

// scaleExtraConns is the extra processes' DATABASE_MAX_CONNS: a few
// processes share one PostgreSQL, and a worker or an API of this load needs
// a handful of connections at once (run make run with DATABASE_MAX_CONNS=10
// for the running two to fit too).
const scaleExtraConns = 6

// pid is the pid found for the named process, 0 when none was.
func (ps *processes) pid(name string) int {
	for _, p := range ps.list {
		if p.Name == name {
			return p.PID
		}
	}
	return 0
}

// scaleEnv is the environment make run gives the API and the worker: the
// bench's own (each process reads .env itself, from this same directory,
// for what is not set), with what run.sh sets when nothing does. Each
// process then gets its ports (scaleFleet.start); the profiler is off in
// the extra ones, whose ports would clash with the running ones'.
func scaleEnv(sinkURL string) map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	// `PROVIDERS_FILE= make run`, the stack the bench measures: every
	// channel to WEBHOOK_SITE_URL (an empty value set here wins over .env).
	if _, ok := env["PROVIDERS_FILE"]; !ok {
		env["PROVIDERS_FILE"] = ""
	}
	if setting("WEBHOOK_SITE_URL", "") == "" {
		env["WEBHOOK_SITE_URL"] = strings.TrimRight(sinkURL, "/") + "/webhook"
	}
	if setting("LOG_FORMAT", "") == "" {
		env["LOG_FORMAT"] = "console"
	}
	env["API_PPROF_PORT"] = "0"
	env["WORKER_PPROF_PORT"] = "0"
	env["DATABASE_MAX_CONNS"] = strconv.Itoa(scaleExtraConns)
	return env
}

// scaleClients makes one API client per base URL and checks that each
// extra API takes our key and routes every channel to the sink, as the
// running one does (preflight checked that one).
func scaleClients(ctx context.Context, o options, bases []string) ([]*apiClient, error) {
	conns := o.Concurrency/len(bases) + 1
	out := make([]*apiClient, len(bases))
	for i, base := range bases {
		c, err := newAPIClient(base, o.APIKey, conns)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			if err := c.probeBatch(ctx); err != nil {
				return nil, fmt.Errorf("the API the bench started at %s: %w", base, err)
			}
			names, err := c.routedElsewhere(ctx, o.Sink)
			if err != nil {
				return nil, fmt.Errorf("the API the bench started at %s: %w", base, err)
			}
			if len(names) > 0 {
				return nil, fmt.Errorf("the API the bench started at %s routes channels to providers other than the sink (%v): it reads PROVIDERS_FILE from .env; run the bench with PROVIDERS_FILE= as well", base, names)
			}
		}
		out[i] = c
	}
	return out, nil
}

// scaleThroughput sends o.N notifications (every channel) over every API
// and waits for each at the sink.
func scaleThroughput(ctx context.Context, o options, apis []*apiClient, workers []string, snk *sinkClient) (ScaleThroughput, []string, error) {
	t := ScaleThroughput{Requested: o.N}
	var notes []string
	if err := snk.reset(ctx); err != nil {
		return t, nil, fmt.Errorf("resetting the sink: %w", err)
	}
	run := uuid.NewString()[:8]
	reqs := make([]createRequest, o.N)
	for i := range reqs {
		reqs[i] = notificationFor(run, i)
	}
	before, err := scaleAttempts(ctx, workers, "")
	if err != nil {
		return t, nil, err
	}

	accepted, byAPI, errs, first, last := submitSpread(ctx, apis, reqs, o.Concurrency)
	t.Accepted, t.Rejected, t.AcceptedByAPI = len(accepted), o.N-len(accepted), byAPI
	if len(errs) > 0 {
		notes = append(notes, fmt.Sprintf("scale-out throughput: %d request(s) failed, first: %v", len(errs), errs[0]))
	}
	if len(accepted) == 0 {
		return t, notes, fmt.Errorf("the APIs accepted none of %d notifications: %w", o.N, errors.Join(errs...))
	}
	t.AcceptedPerSec = round3(float64(len(accepted)) / last.Sub(first).Seconds())
	step("accepted %d in %.2fs (%v by API); waiting for the sink (timeout %s)", len(accepted), last.Sub(first).Seconds(), byAPI, o.Timeout)

	records, pending, err := awaitArrivals(ctx, snk, accepted, first.Add(o.Timeout))
	if err != nil {
		return t, notes, err
	}
	var e EndToEndResult
	summarize(&e, accepted, records, nil, nil)
	t.Delivered, t.Missing = e.Delivered, e.Undelivered
	t.DeliveredPerSec, t.DeliverySeconds, t.LatencyMS = e.DeliveredPerSec, e.DeliverySeconds, e.LatencyMS
	t.Duplicates = duplicatesIn(records)
	if len(pending) > 0 {
		t.MissingByStatus = stuckByStatus(ctx, apis[0], pending)
		notes = append(notes, fmt.Sprintf("scale-out throughput: %d notification(s) had not reached the sink after %s (by API status: %s), e.g. %s",
			len(pending), o.Timeout, counts(t.MissingByStatus), pending[0]))
	}
	t.AttemptsByWorker, err = scaleAttemptsSince(ctx, workers, "", before)
	if err != nil {
		notes = append(notes, fmt.Sprintf("scale-out throughput: attempts per worker: %v", err))
	}
	if slices.Contains(t.AttemptsByWorker, 0) {
		notes = append(notes, fmt.Sprintf("scale-out throughput: a worker made no delivery attempt (%v by worker): it may not share the stack's database, broker or Temporal (see its log)", t.AttemptsByWorker))
	}
	return t, notes, nil
}

// scaleRateLimit is the rate-limit part: sms at o.Scale.Limit/s on every
// worker, the make-run worker paused meanwhile.
// notes is named: the deferred stop adds its own.
func scaleRateLimit(ctx context.Context, o options, f *scaleFleet, workerBin string, apis []*apiClient, snk *sinkClient, pausedPID int) (r ScaleRateLimit, notes []string, err error) {
	const channel = "sms"
	s := o.Scale
	r = ScaleRateLimit{Channel: channel, Limit: s.Limit, Burst: ratelimit.Limit(s.Limit).Burst, PausedWorkerPID: pausedPID, Requested: s.LimitN}

	// The throughput part's workers run with make run's limit: they go
	// first, then the make-run worker is paused.
	notes = append(notes, f.stopKind("worker")...)
	if err := syscall.Kill(pausedPID, syscall.SIGSTOP); err != nil {
		return r, notes, fmt.Errorf("pausing the running worker (pid %d): %w", pausedPID, err)
	}
	pausedAt := time.Now()
	step("paused the running worker (pid %d; should the bench be killed, `kill -CONT %d`)", pausedPID, pausedPID)
	defer func() {
		// Ours stop first, so no moment has two limits at once.
		notes = append(notes, f.stopKind("worker")...)
		if err := syscall.Kill(pausedPID, syscall.SIGCONT); err != nil {
			step("could not resume the running worker (pid %d): %v; run `kill -CONT %d`", pausedPID, err, pausedPID)
			return
		}
		step("resumed the running worker (pid %d)", pausedPID)
	}()

	step("rate limit: starting %d worker(s) with RATE_LIMIT_SMS=%d", s.Workers, s.Limit)
	for i := range s.Workers {
		port := scaleWorkerPort + i
		if _, err := f.start(ctx, "worker", fmt.Sprintf("worker-%d-ratelimit", port), workerBin, port, "RATE_LIMIT_SMS", strconv.Itoa(s.Limit)); err != nil {
			return r, notes, err
		}
		r.Workers = append(r.Workers, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	if wait := time.Until(pausedAt.Add(pausedPollsLapse)); wait > 0 {
		step("waiting %.0fs for the paused worker's Temporal polls and AMQP consumers to lapse", wait.Seconds())
		select {
		case <-ctx.Done():
			return r, notes, ctx.Err()
		case <-time.After(wait):
		}
	}

	if err := snk.reset(ctx); err != nil {
		return r, notes, fmt.Errorf("resetting the sink: %w", err)
	}
	run := uuid.NewString()[:8]
	reqs := make([]createRequest, s.LimitN)
	for i := range reqs {
		reqs[i] = notificationFor(run, 3*i) // every third is an sms; priorities rotate
	}
	before, err := scaleAttempts(ctx, r.Workers, channel)
	if err != nil {
		return r, notes, err
	}
	step("rate limit: %d %s at once over %d APIs, %d/s on %d workers", s.LimitN, channel, len(apis), s.Limit, s.Workers)
	accepted, _, errs, first, _ := submitSpread(ctx, apis, reqs, o.Concurrency)
	r.Accepted = len(accepted)
	if len(errs) > 0 {
		notes = append(notes, fmt.Sprintf("scale-out rate limit: %d request(s) failed, first: %v", len(errs), errs[0]))
	}
	if len(accepted) < 2 {
		return r, notes, fmt.Errorf("the APIs accepted %d of %d sms: %w", len(accepted), s.LimitN, errors.Join(errs...))
	}
	// At the limit the burst takes LimitN/Limit seconds; o.Timeout on top.
	deadline := first.Add(time.Duration(float64(s.LimitN)/float64(s.Limit)*float64(time.Second)) + o.Timeout)
	records, pending, err := awaitArrivals(ctx, snk, accepted, deadline)
	if err != nil {
		return r, notes, err
	}
	r.Delivered, r.Missing = len(records), len(pending)
	r.Duplicates = duplicatesIn(records)
	if len(pending) > 0 {
		r.MissingByStatus = stuckByStatus(ctx, apis[0], pending)
		notes = append(notes, fmt.Sprintf("scale-out rate limit: %d sms had not reached the sink in time (by API status: %s), e.g. %s", len(pending), counts(r.MissingByStatus), pending[0]))
	}
	arrivals := make([]time.Time, 0, len(records))
	for _, rec := range records {
		arrivals = append(arrivals, rec.FirstAt)
	}
	slices.SortFunc(arrivals, time.Time.Compare)
	if len(arrivals) >= 2 {
		span := arrivals[len(arrivals)-1].Sub(arrivals[0]).Seconds()
		r.Seconds = round3(span)
		if span > 0 {
			r.MeanPerSec = round3(float64(len(arrivals)-1) / span)
		}
	}
	r.MaxInAnySecond = maxInWindow(arrivals, time.Second)
	r.Held = r.MeanPerSec <= float64(s.Limit)*1.05
	r.Bound = r.MeanPerSec >= float64(s.Limit)*0.9
	if !r.Bound {
		notes = append(notes, fmt.Sprintf("scale-out rate limit: sms arrived at %.1f/s, under 90%% of the %d/s limit: the stack, not the limit, set the pace, so the limit was not tested (lower --scale-limit)", r.MeanPerSec, s.Limit))
	}
	r.AttemptsByWorker, err = scaleAttemptsSince(ctx, r.Workers, channel, before)
	if err != nil {
		notes = append(notes, fmt.Sprintf("scale-out rate limit: attempts per worker: %v", err))
	}
	if slices.Contains(r.AttemptsByWorker, 0) {
		notes = append(notes, fmt.Sprintf("scale-out rate limit: a worker made no %s attempt (%v by worker): the limit was shared by fewer workers", channel, r.AttemptsByWorker))
	}
	return r, notes, nil
}

// submitSpread POSTs reqs one by one at the given number of clients,
// client i sending through apis[i % len(apis)], so the APIs take equal
// shares. byAPI counts what each accepted.
func submitSpread(ctx context.Context, apis []*apiClient, reqs []createRequest, clients int) (acc []created, byAPI []int, errs []error, first, last time.Time) {
	var (
		mu   sync.Mutex
		next = make(chan createRequest)
		wg   sync.WaitGroup
	)
	byAPI = make([]int, len(apis))
	first = time.Now()
	for i := range clients {
		k := i % len(apis)
		wg.Go(func() {
			for r := range next {
				c, _, err := apis[k].create(ctx, r)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acc = append(acc, c)
					byAPI[k]++
				}
				mu.Unlock()
			}
		})
	}
	for _, r := range reqs {
		next <- r
	}
	close(next)
	wg.Wait()
	return acc, byAPI, errs, first, time.Now()
}

// duplicatesIn counts the records the sink saw more than once: a second
// request (a retry) or a second 2xx answer both mean a second delivery.
func duplicatesIn(records map[string]sinkRecord) int {
	n := 0
	for _, rec := range records {
		if rec.Requests > 1 || rec.Delivered > 1 {
			n++
		}
	}
	return n
}

// maxInWindow is the most of the sorted times within any window of length
// w (a sliding window starting at each time).
func maxInWindow(sorted []time.Time, w time.Duration) int {
	most, j := 0, 0
	for i := range sorted {
		for j < len(sorted) && sorted[j].Sub(sorted[i]) < w {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// scaleAttempts reads each worker's dispatch_delivery_attempts_total (on
// channel, or all when empty) from its /metrics.
func scaleAttempts(ctx context.Context, workers []string, channel string) ([]float64, error) {
	out := make([]float64, len(workers))
	for i, base := range workers {
		v, err := counterOf(ctx, base+"/metrics", "dispatch_delivery_attempts_total", channel)
		if err != nil {
			return nil, fmt.Errorf("reading the attempts of the worker at %s: %w", base, err)
		}
		out[i] = v
	}
	return out, nil
}

// scaleAttemptsSince is each worker's attempts since before. The counters
// move just after the provider answers, a moment after the sink records
// the delivery: it waits a second first.
func scaleAttemptsSince(ctx context.Context, workers []string, channel string, before []float64) ([]int, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Second):
	}
	after, err := scaleAttempts(ctx, workers, channel)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(after))
	for i := range after {
		out[i] = int(after[i] - before[i])
	}
	return out, nil
}

// counterOf sums a counter's series in a Prometheus text page, those with
// channel="<channel>" only when channel is not empty.
func counterOf(ctx context.Context, url, name, channel string) (float64, error) {
	families, err := scrape(ctx, http.DefaultClient, url)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, m := range families[name].GetMetric() {
		if channel == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == "channel" && l.GetValue() == channel
		}) {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum, nil
}

// scaleFlagSet reports whether the named flag was given.
func scaleFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// scaleFleet is the processes the bench started; stopAll stops what is
// left, newest first, and is safe to call again.
type scaleFleet struct {
	env      map[string]string
	children []*scaleChild
}

// scaleChild is one started process.
type scaleChild struct {
	name, kind string
	cmd        *exec.Cmd
	log        *os.File
	done       chan struct{} // closed once it exited
	stopped    bool
}

// start runs bin as kind ("api" or "worker") with its port (API_PORT or
// WORKER_METRICS_PORT) and the extra variables (name, value, …), and waits
// for its /readyz.
func (f *scaleFleet) start(ctx context.Context, kind, name, bin string, port int, extra ...string) (*scaleChild, error) {
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 300*time.Millisecond); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("port %d, for the %s the bench starts, is in use", port, name)
	}
	env := map[string]string{}
	for k, v := range f.env {
		env[k] = v
	}
	portVar := map[string]string{"api": "API_PORT", "worker": "WORKER_METRICS_PORT"}[kind]
	env[portVar] = strconv.Itoa(port)
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	environ := make([]string, 0, len(env))
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}

	path := fmt.Sprintf(scaleLogs, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = logf, logf
	// A group of its own, so a Ctrl-C reaches the bench alone, which stops
	// it in order; Pdeathsig stops it should the bench die unasked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &scaleChild{name: name, kind: kind, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	f.children = append(f.children, c)

	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(scaleReadyTimeout)
	for {
		select {
		case <-c.done:
			return nil, fmt.Errorf("%s exited before it was ready (%s); the end of %s:\n%s", name, cmd.ProcessState, path, logTail(path, 8))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		err := ready(ctx, url)
		if err == nil {
			step("%s ready (pid %d)", name, cmd.Process.Pid)
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s was not ready within %s (%v); see %s", name, scaleReadyTimeout, err, path)
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL after scaleStopTimeout. It
// returns a note when the process had exited on its own or had to be
// killed.
func (c *scaleChild) stop() string {
	if c.stopped {
		return ""
	}
	c.stopped = true
	defer func() { _ = c.log.Close() }()
	select {
	case <-c.done:
		return fmt.Sprintf("%s, started by the bench, had exited on its own (%s) before the end: see %s", c.name, c.cmd.ProcessState, c.log.Name())
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return ""
	case <-time.After(scaleStopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Sprintf("%s did not stop within %s of SIGTERM and was killed", c.name, scaleStopTimeout)
	}
}

// stopKind stops the started processes of one kind, newest first.
func (f *scaleFleet) stopKind(kind string) []string {
	return f.stop(func(c *scaleChild) bool { return c.kind == kind })
}

// stopAll stops every started process, newest first.
func (f *scaleFleet) stopAll() []string {
	return f.stop(func(*scaleChild) bool { return true })
}

func (f *scaleFleet) stop(which func(*scaleChild) bool) []string {
	var notes []string
	for _, c := range slices.Backward(f.children) {
		if c.stopped || !which(c) {
			continue
		}
		step("stopping %s (pid %d)", c.name, c.cmd.Process.Pid)
		if note := c.stop(); note != "" {
			notes = append(notes, note)
		}
	}
	return notes
}

// logTail is the last n lines of a file, for an error message.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// printScaleOut is the SCALE-OUT block of the table.
func printScaleOut(w *tabwriter.Writer, row func(label, format string, args ...any), s *ScaleOutResult) {
	if s == nil {
		return
	}
	t := s.Throughput
	fmt.Fprintf(w, "\nSCALE-OUT  (%d APIs, %d workers: the running ones and %d + %d the bench started; %d single POSTs at once, sms/email/push)\n",
		len(s.APIs), len(s.Workers), len(s.APIs)-1, len(s.Workers)-1, t.Requested)
	row("accepted/s (APIs)", "%.1f  (%d accepted, %d refused; by API %s)", t.AcceptedPerSec, t.Accepted, t.Rejected, byPort(s.APIs, t.AcceptedByAPI))
	row("delivered/s (sink arrivals)", "%.1f  (%d delivered, %d missing, in %.1fs from first accept to last arrival)", t.DeliveredPerSec, t.Delivered, t.Missing, t.DeliverySeconds)
	row("accepted → delivered p50/p99", "%.0f / %.0f ms (max %.0f)", t.LatencyMS.P50, t.LatencyMS.P99, t.LatencyMS.Max)
	row("duplicates (requests or 2xx > 1)", "%d", t.Duplicates)
	row("attempts by worker (metrics port)", "%s", byPort(s.Workers, t.AttemptsByWorker))
	if len(t.MissingByStatus) > 0 {
		row("missing, by API status", "%s", counts(t.MissingByStatus))
	}
	r := s.RateLimit
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\nSCALE-OUT RATE LIMIT  (%d %s at once, RATE_LIMIT_SMS=%d on %d workers the bench started; the running worker, pid %d, paused)\n",
		r.Requested, r.Channel, r.Limit, len(r.Workers), r.PausedWorkerPID)
	row("mean rate (sink arrivals)", "%.1f/s over %.1fs  (limit %d/s; held within 5%%: %s; limit binding: %s)", r.MeanPerSec, r.Seconds, r.Limit, yesNo(r.Held), yesNo(r.Bound))
	row("busiest 1 s window", "%d  (GCRA passes at most limit + burst = %d in any second at the limiter; the sink's clock adds delivery jitter)", r.MaxInAnySecond, r.Limit+r.Burst)
	row("delivered / missing / duplicates", "%d / %d / %d  (of %d accepted)", r.Delivered, r.Missing, r.Duplicates, r.Accepted)
	row("attempts by worker (metrics port)", "%s", byPort(r.Workers, r.AttemptsByWorker))
	if len(r.MissingByStatus) > 0 {
		row("missing, by API status", "%s", counts(r.MissingByStatus))
	}
}

// byPort prints per-URL figures as "8080 1500, 8180 1500".
func byPort(urls []string, n []int) string {
	parts := make([]string, 0, len(n))
	for i, v := range n {
		label := "?"
		if i < len(urls) {
			label = strconv.Itoa(urlPort(urls[i], 0))
		}
		parts = append(parts, fmt.Sprintf("%s %d", label, v))
	}
	return strings.Join(parts, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
