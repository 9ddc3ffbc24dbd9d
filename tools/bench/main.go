// Command bench measures the running Dispatch Engine (`make run` first) and
// prints a table and one JSON line (prefixed "BENCH_JSON "). It drives the
// real stack from outside, in four sections:
//
//  1. Ceiling: a bare workflow with one no-op activity on the same Temporal
//     server, run by a worker inside this program; every ratio uses it.
//  2. End to end: N notifications through the API into the local sink;
//     delivery times come from the sink's own records (an outside clock).
//  3. Ingest: single POSTs at 32 clients for a while, then batch creates.
//  4. Cost: CPU seconds per 1,000 notifications and peak RSS of every
//     process a notification passes through — the API, the worker, the
//     Temporal server, PostgreSQL (the postmaster and all its backends),
//     RabbitMQ (the Erlang VM) and Redis — read from /proc.
//
// Benchmarks never run in `make test`; `make bench` runs this program.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/joho/godotenv"
)

// options are the command line flags.
type options struct {
	N              int
	Concurrency    int
	CeilingN       int
	IngestDuration time.Duration
	IngestClients  int
	Batches        int
	BatchSize      int
	Timeout        time.Duration
	Settle         time.Duration
	HistorySample  int
	API            string
	Worker         string
	Sink           string
	APIKey         string
	Temporal       string
	Namespace      string
	APIPid         int
	WorkerPid      int
	TemporalPid    int
	DatabaseDSN    string
	RabbitMQURL    string
	RedisURL       string
	Quick          bool
	SkipIngest     bool
	IngestOnly     bool
	Idle           int
	BatchClients   int
	PauseWorker    bool
	NoBatch        bool
	PacedDuration  time.Duration
	PacedRate      float64
	Soak           time.Duration
	SoakRate       float64
	SoakLoad       float64
	SoakProbeN     int
	SoakGrace      time.Duration
	SoakInterval   time.Duration
	SoakVacuum     time.Duration
	TempMetrics    string
	ScaleOut       bool
	Scale          scaleOptions
	Ordered        bool
	Order          orderedOptions
}

// parseFlags reads the command line into options, with --quick applied.
func parseFlags() options {
	var o options
	flag.IntVar(&o.N, "n", 2000, "notifications in the end-to-end run")
	flag.IntVar(&o.Concurrency, "concurrency", 32, "concurrent clients: single POSTs (when there is no batch endpoint) and ceiling workflow starts")
	flag.IntVar(&o.CeilingN, "ceiling-n", 1000, "workflows in the ceiling run")
	flag.DurationVar(&o.IngestDuration, "ingest-duration", 10*time.Second, "how long single POSTs are sent in the ingest section")
	flag.IntVar(&o.IngestClients, "ingest-clients", 32, "concurrent clients of the single-POST ingest")
	flag.IntVar(&o.Batches, "batches", 20, "batch requests in the ingest section (when the batch endpoint exists)")
	flag.IntVar(&o.BatchSize, "batch-size", 1000, "notifications per batch request in the ingest section")
	flag.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long to wait for every end-to-end notification to reach the sink")
	flag.DurationVar(&o.Settle, "settle", 5*time.Minute, "how long to wait for earlier deliveries (a previous run's ingest, say) to stop reaching the sink before measuring (0: do not wait)")
	flag.IntVar(&o.HistorySample, "history-sample", 6, "notification workflows whose history is read for events per notification")
	flag.StringVar(&o.API, "api", "http://127.0.0.1:"+setting("API_PORT", "8080"), "API base URL")
	flag.StringVar(&o.Worker, "worker", "http://127.0.0.1:"+setting("WORKER_METRICS_PORT", "8081"), "worker metrics base URL (for /readyz)")
	flag.StringVar(&o.Sink, "sink", "http://127.0.0.1:9090", "local provider sink base URL (the one make run starts)")
	flag.StringVar(&o.APIKey, "api-key", "", "API key sent as Authorization: Bearer (default: the first of API_KEYS, else .data/dev-api-key)")
	flag.StringVar(&o.Temporal, "temporal", setting("TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend address")
	flag.StringVar(&o.Namespace, "namespace", setting("TEMPORAL_NAMESPACE", "default"), "Temporal namespace")
	flag.IntVar(&o.APIPid, "api-pid", 0, "pid of the API process (default: found in /proc)")
	flag.IntVar(&o.WorkerPid, "worker-pid", 0, "pid of the worker process (default: found in /proc)")
	flag.IntVar(&o.TemporalPid, "temporal-pid", 0, "pid of the Temporal server (default: found in /proc)")
	flag.StringVar(&o.DatabaseDSN, "database-dsn", setting("DATABASE_DSN", "postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable"), "the product's PostgreSQL (its port finds the server whose backends the cost counts)")
	flag.StringVar(&o.RabbitMQURL, "rabbitmq-url", setting("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "the product's RabbitMQ (its port finds the broker the cost counts)")
	flag.StringVar(&o.RedisURL, "redis-url", setting("REDIS_URL", "redis://127.0.0.1:6379/0"), "the product's Redis (its port finds the server the cost counts)")
	flag.BoolVar(&o.Quick, "quick", false, "a short run (about a minute on an idle stack): idle=10, n=300, ceiling-n=200, paced 10s, ingest 3s, 3 batches of 500, timeout 3m")
	flag.BoolVar(&o.NoBatch, "no-batch", false, "send the end-to-end notifications as single POSTs even where the batch endpoint exists")
	flag.BoolVar(&o.SkipIngest, "skip-ingest", false, "leave out the ingest section (it leaves deliveries behind)")
	flag.IntVar(&o.BatchClients, "batch-clients", 4, "concurrent clients sending the ingest section's batches")
	flag.IntVar(&o.Idle, "idle", 30, "single notifications sent one at a time first, for the latency of one notification on an idle stack (0: skip)")
	flag.BoolVar(&o.IngestOnly, "ingest-only", false, "run only the ingest section")
	flag.BoolVar(&o.PauseWorker, "pause-worker", false, "pause the worker (SIGSTOP, then SIGCONT) during the ingest section, so it measures the API and Postgres alone; the notifications wait in the outbox meanwhile")
	flag.DurationVar(&o.PacedDuration, "paced-duration", 30*time.Second, "how long the paced section sends single POSTs at a steady rate, after end to end (0: skip it)")
	flag.Float64Var(&o.PacedRate, "paced-rate", 0, "notifications/s of the paced section (0: half the end-to-end run's delivered/s)")
	flag.DurationVar(&o.Soak, "soak", 0, "run only a soak of this length: steady single POSTs at --soak-load of the measured capacity, a row of figures per --soak-interval")
	flag.Float64Var(&o.SoakRate, "soak-rate", 0, "notifications/s the soak sends (0: --soak-load × the capacity a probe of --soak-probe-n measures)")
	flag.Float64Var(&o.SoakLoad, "soak-load", 0.7, "the soak's rate as a share of the measured capacity")
	flag.IntVar(&o.SoakProbeN, "soak-probe-n", 1500, "notifications of the soak's capacity probe (single POSTs at --concurrency clients)")
	flag.DurationVar(&o.SoakGrace, "soak-grace", 5*time.Minute, "how long after the soak's load stops every accepted notification may take to reach the sink")
	flag.DurationVar(&o.SoakInterval, "soak-interval", time.Minute, "how often the soak prints a row")
	flag.DurationVar(&o.SoakVacuum, "soak-vacuum", time.Minute, "how often the soak VACUUMs the product's and Temporal's databases, as autovacuum would on a production server (0: never; this machine's PostgreSQL may run with autovacuum off)")
	flag.StringVar(&o.TempMetrics, "temporal-metrics", "", "the Temporal server's Prometheus URL, for the soak's goroutines (default: the dev server's --metrics-port, else the Metrics: line of .data/temporal.log)")
	flag.BoolVar(&o.ScaleOut, "scale-out", false, scaleOutHelp)
	scaleFlags(&o.Scale)
	flag.BoolVar(&o.Ordered, "ordered", false, orderedHelp)
	orderedFlags(&o.Order)
	flag.Parse()
	if o.APIKey == "" {
		o.APIKey = defaultAPIKey()
	}

	if o.Quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.applyQuick(set)
	}
	return o
}

// applyQuick gives --quick's sizes to the options whose flags are not in
// set: quick mode replaces the defaults, not what was set explicitly.
func (o *options) applyQuick(set map[string]bool) {
	quick := map[string]func(){
		"n":               func() { o.N = 300 },
		"ceiling-n":       func() { o.CeilingN = 200 },
		"ingest-duration": func() { o.IngestDuration = 3 * time.Second },
		"batches":         func() { o.Batches = 3 },
		"batch-size":      func() { o.BatchSize = 500 },
		"timeout":         func() { o.Timeout = 3 * time.Minute },
		"idle":            func() { o.Idle = 10 },
		"paced-duration":  func() { o.PacedDuration = 10 * time.Second },
	}
	for name, apply := range quick {
		if !set[name] {
			apply()
		}
	}
}

func main() {
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.N < 1 || o.CeilingN < 1 || o.Concurrency < 1 || o.IngestClients < 1 {
		return errors.New("--n, --ceiling-n, --concurrency and --ingest-clients must be at least 1")
	}
	res := &Result{Options: o.public(), Machine: describeMachine()}
	printHeader(res)

	api, err := newAPIClient(o.API, o.APIKey, o.Concurrency+o.IngestClients)
	if err != nil {
		return err
	}
	snk := newSinkClient(o.Sink)
	pre, err := preflight(ctx, o, api, snk)
	if err != nil {
		return err
	}
	defer pre.temporal.Close()
	res.Machine.TemporalServer = pre.temporalVersion
	res.Machine.BatchEndpoint = api.hasBatch
	res.Warnings = append(res.Warnings, pre.warnings...)

	procs := findProcesses(o)
	res.Warnings = append(res.Warnings, procs.warnings...)
	if o.Soak > 0 {
		return runSoak(ctx, o, api, snk, res)
	}
	if o.ScaleOut {
		return runScaleOut(ctx, o, res, snk, procs)
	}
	if o.Ordered {
		return runOrdered(ctx, o, api, snk, pre.temporal, res)
	}

	var e2e EndToEndResult
	if o.Idle > 0 && !o.IngestOnly {
		step("idle: %d single notifications, one at a time", o.Idle)
		idle, err := runIdle(ctx, api, snk, o.Idle)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		res.Idle = &idle
	}
	if !o.IngestOnly {
		step("ceiling: %d BenchCeiling workflows (one no-op activity), %d starters", o.CeilingN, o.Concurrency)
		ceil, err := runCeiling(ctx, pre.temporal, o)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		res.Ceiling = ceil

		step("end to end: %d notifications through %s into the sink", o.N, o.API)
		var before, after procSample
		e2e, before, after, err = runEndToEnd(ctx, o, api, snk, pre.temporal, procs)
		if err != nil {
			return fmt.Errorf("end to end: %w", err)
		}
		res.EndToEnd = e2e
		if ceil.PerSec > 0 {
			res.EndToEnd.RatioToCeiling = round3(e2e.DeliveredPerSec / ceil.PerSec)
		}
		res.Cost = costOf(procs, before, after, e2e.Delivered)
		res.Warnings = append(res.Warnings, e2e.warnings...)

		if o.PacedDuration > 0 {
			if err := runPaced(ctx, o, api, snk, res); err != nil {
				return fmt.Errorf("paced: %w", err)
			}
		}
	}

	if !o.SkipIngest || o.IngestOnly {
		if o.PauseWorker {
			resume, err := procs.pause("worker")
			if err != nil {
				return err
			}
			defer resume()
		}
		step("ingest: single POSTs at %d clients for %s, then %d batches of %d", o.IngestClients, o.IngestDuration, o.Batches, o.BatchSize)
		ing, err := runIngest(ctx, o, api, procs)
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		if e2e.DeliveredPerSec > 0 {
			ing.BacklogETASeconds = round3(float64(ing.Created) / e2e.DeliveredPerSec)
		}
		res.Ingest = &ing
	}

	printTable(os.Stdout, res)
	if err := printJSON(os.Stdout, res); err != nil {
		return err
	}
	if e2e.Undelivered > 0 {
		return fmt.Errorf("%d of %d notifications did not reach the sink within --timeout %s", e2e.Undelivered, e2e.Accepted, o.Timeout)
	}
	return nil
}

// step tells the operator what runs now (on stderr; the results go to stdout).
func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

// setting reads a variable the way the product does: the environment wins
// over a .env file in the working directory.
func setting(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	if file, err := godotenv.Read(".env"); err == nil && file[name] != "" {
		return file[name]
	}
	return def
}
