// Command worker runs the delivery side of Dispatch Engine: the outbox relay
// (Postgres → RabbitMQ), the per-channel consumers that start one Temporal
// workflow per notification, the Temporal workers that run the workflows
// and their activities, and the background loops (the reconciler, the
// dead-letter pruner, retention, resuming idle operations).
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/deadletter"
	"github.com/dispatch-engine/dispatch-engine/internal/dispatch"
	"github.com/dispatch-engine/dispatch-engine/internal/health"
	"github.com/dispatch-engine/dispatch-engine/internal/logs"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/outbox"
	"github.com/dispatch-engine/dispatch-engine/internal/profiling"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/reconcile"
	"github.com/dispatch-engine/dispatch-engine/internal/retention"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
	"github.com/dispatch-engine/dispatch-engine/internal/version"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// limiterHeadroom is how long an attempt may wait for its rate-limit slot
// on top of the provider call itself.
const limiterHeadroom = 5 * time.Minute

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log, err := logs.New(cfg.LogLevel, cfg.LogFormat, "worker")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log.Info("starting", zap.String("version", version.String()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	flushTraces, err := telemetry.Start(ctx, "dispatch-worker", log)
	if err != nil {
		return err
	}
	defer flushTraces()
	defer profiling.Serve(cfg.WorkerPprofPort, log)()

	c, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.close()

	relay := outbox.NewRelay(outbox.Config{
		BatchSize:    cfg.OutboxBatchSize,
		PollInterval: cfg.OutboxPollInterval,
		Topology:     c.topology,
		Relayed:      c.metrics.Relayed,
	}, c.pool, c.relayPub, log)
	d, err := newDelivery(cfg, c, relay, log)
	if err != nil {
		return err
	}
	workers, err := startWorkers(cfg, c, d.acts)
	if err != nil {
		return err
	}
	consumer := newConsumer(cfg, c, d, log)
	probes := startProbes(cfg, c, log)

	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(ctx) })
	for _, job := range backgroundJobs(cfg, c, d, relay, log) {
		wg.Go(func() { job(ctx) })
	}
	wg.Go(func() { _ = consumer.Run(ctx) })
	log.Info("worker running", zap.String("metrics_addr", probes.Addr), zap.String("webhook_url", redactURL(cfg.WebhookSiteURL)))

	<-ctx.Done()
	// Drain: consuming stops at once; the messages taken and the
	// activities in flight then finish side by side, each bounded by
	// SHUTDOWN_TIMEOUT (what is left is requeued, or retried by Temporal);
	// then the connections close.
	log.Info("shutting down: stopping consumers, then finishing in-flight messages and activities", zap.Duration("timeout", cfg.ShutdownTimeout))
	var draining sync.WaitGroup
	draining.Go(wg.Wait)
	draining.Go(func() { stopWorkers(workers) })
	draining.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = probes.Shutdown(sctx)
	return nil
}

// conns are the worker's connections: PostgreSQL, Redis, Temporal, and a
// RabbitMQ publisher per use (the relay's, the consumer's dead letters, the
// depth inspector, the DLQ sweeper), each on its own connection so one
// waiting never holds up another.
type conns struct {
	pool      *pgxpool.Pool
	rdb       *redis.Client
	temporal  client.Client
	metrics   *metrics.Worker
	topology  queue.Topology
	relayPub  *queue.Publisher
	dlqPub    *queue.Publisher
	inspector *queue.Publisher
	sweeper   *queue.Publisher
	// unsubscribe signs emails' one-click unsubscribe links; nil without
	// PUBLIC_BASE_URL.
	unsubscribe *unsubscribe.Signer
	closers     []func()
}

func (c *conns) close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// connect opens the worker's connections and registers the search
// attributes (in the background while Temporal refuses).
func connect(ctx context.Context, cfg config.Config, log *zap.Logger) (_ *conns, err error) {
	c := &conns{metrics: metrics.NewWorker(), topology: queue.Topology{Prefix: cfg.RabbitMQQueuePrefix}}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.pool, err = store.Connect(ctx, cfg.DatabaseDSN, cfg.DatabaseMaxConns); err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.pool.Close)
	if c.unsubscribe, err = loadUnsubscribe(ctx, cfg, c.pool, log); err != nil {
		return nil, err
	}
	if c.rdb, err = ratelimit.NewClient(cfg.RedisURL); err != nil {
		return nil, fmt.Errorf("parsing REDIS_URL: %w", err)
	}
	c.closers = append(c.closers, func() { _ = c.rdb.Close() })
	sdkMetrics, err := metrics.TemporalHandler(c.metrics.Registry, func(err error) {
		log.Warn("recording a Temporal SDK metric failed", zap.Error(err))
	})
	if err != nil {
		return nil, err
	}
	if c.temporal, err = dialTemporal(ctx, cfg, sdkMetrics, log); err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.temporal.Close)
	if err := dispatch.EnsureSearchAttributes(ctx, c.temporal, cfg.TemporalNamespace); err != nil {
		log.Warn("could not register search attributes yet; retrying in the background", zap.Error(err))
		go func() { _ = dispatch.RegisterSearchAttributes(ctx, c.temporal, cfg.TemporalNamespace, log) }()
	}
	publisher := func(opts ...queue.PublisherOption) *queue.Publisher {
		p := queue.NewPublisher(cfg.RabbitMQURL, c.topology, opts...)
		c.closers = append(c.closers, func() { _ = p.Close() })
		return p
	}
	c.relayPub, c.dlqPub, c.inspector = publisher(), publisher(), publisher()
	// The sweeper holds its connection while it visits a DLQ, which may
	// take longer than a publish.
	c.sweeper = publisher(queue.WithCallTimeout(time.Minute))
	c.metrics.RegisterBacklog(
		func(ctx context.Context) (int64, time.Duration, error) { return store.OutboxBacklog(ctx, c.pool) },
		func(ctx context.Context) (map[string]int, map[string]int, error) {
			return c.inspector.Depths(ctx, notification.Channels)
		},
	)
	return c, nil
}

// loadUnsubscribe loads the secret of the unsubscribe links emails carry,
// the one the API opens them with (every process shares it), when
// PUBLIC_BASE_URL is set; without it no email carries a link, and the
// worker says so.
func loadUnsubscribe(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *zap.Logger) (*unsubscribe.Signer, error) {
	if cfg.PublicBaseURL == "" {
		log.Info("PUBLIC_BASE_URL is not set: emails carry no List-Unsubscribe header")
		return nil, nil
	}
	signer, err := unsubscribe.Load(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("loading the unsubscribe secret (are the migrations applied?): %w", err)
	}
	return signer, nil
}

// delivery is what delivering needs: the providers, the rate limiter and
// the activities built on them.
type delivery struct {
	providers *provider.Set
	limiter   *ratelimit.Limiter
	acts      *activities.Activities
}

// newDelivery loads the providers and builds the activities.
func newDelivery(cfg config.Config, c *conns, relay *outbox.Relay, log *zap.Logger) (delivery, error) {
	providers, err := provider.FromConfig(cfg, (len(notification.Channels)+1)*cfg.WorkerConcurrency)
	if err != nil {
		return delivery{}, err
	}
	limits := cfg.RateLimits()
	maps.Copy(limits, providers.Rates())
	limiter := ratelimit.New(c.rdb, cfg.RedisKeyPrefix, limits)
	acts := &activities.Activities{
		Pool:      c.pool,
		Providers: providers,
		Breakers:  newBreakers(providers, c.rdb, cfg.RedisKeyPrefix, c.metrics, log),
		Limiter:   limiter,
		// Fail's dead-letter records go out through the outbox at once.
		OutboxWritten: relay.Wake,
		Metrics:       c.metrics,
		Log:           log,
		// The fast path's calls are bounded like a channel's worker.
		FastPathCalls: make(chan struct{}, cfg.WorkerConcurrency),
		Temporal:      c.temporal,
		// A retry operation counts what it retries against its tenant's
		// acceptance quotas, in the API's counters.
		Quotas: quota.New(c.rdb, cfg.RedisKeyPrefix+"quota:"),
		// Emails of a category that is not critical carry List-Unsubscribe.
		Unsubscribe:       c.unsubscribe,
		PublicBaseURL:     cfg.PublicBaseURL,
		UnsubscribeMailto: cfg.UnsubscribeMailto,
		// Digests' workflows run beside the notifications'.
		Workflows:         c.temporal,
		WorkflowTaskQueue: taskQueues(cfg).Workflows(),
		OrderingMaxHold:   cfg.OrderingMaxHold,
	}
	return delivery{providers: providers, limiter: limiter, acts: acts}, nil
}

func taskQueues(cfg config.Config) wfclient.TaskQueues {
	return wfclient.TaskQueues{Prefix: cfg.TemporalTaskQueuePrefix}
}

// startWorkers starts the Temporal workers: the workflows', each
// channel's delivery activities', and the operations'.
func startWorkers(cfg config.Config, c *conns, acts *activities.Activities) ([]worker.Worker, error) {
	workers := dispatch.NewWorkers(c.temporal, dispatch.WorkerConfig{
		TaskQueues:  taskQueues(cfg),
		Concurrency: cfg.WorkerConcurrency,
		StopTimeout: cfg.ShutdownTimeout,
		RateLimits:  cfg.RateLimits(),
	}, acts)
	for _, w := range workers {
		if err := w.Start(); err != nil {
			stopWorkers(workers)
			return nil, fmt.Errorf("starting temporal worker: %w", err)
		}
	}
	return workers, nil
}

// newConsumer builds the per-channel consumers, whose handler starts each
// queued notification's workflow.
func newConsumer(cfg config.Config, c *conns, d delivery, log *zap.Logger) *queue.Consumer {
	starter := dispatch.NewStarter(dispatch.StarterConfig{
		TaskQueues: taskQueues(cfg),
		Retry: workflows.RetryPolicy{
			MaxAttempts:        cfg.RetryMaxAttempts,
			InitialInterval:    cfg.RetryInitialInterval,
			BackoffCoefficient: cfg.RetryBackoffCoefficient,
			MaxInterval:        cfg.RetryMaxInterval,
		},
		AttemptTimeout: d.providers.MaxTimeout() + limiterHeadroom,
		FastPath:       cfg.DeliveryFastPath,
	}, c.pool, c.temporal, d.limiter, c.metrics, log)
	return queue.NewConsumer(queue.ConsumerConfig{
		URL:          cfg.RabbitMQURL,
		Topology:     c.topology,
		Channels:     notification.Channels,
		Concurrency:  cfg.WorkerConcurrency,
		InFlight:     c.metrics.InFlight,
		DrainTimeout: cfg.ShutdownTimeout,
	}, starter.Handle, c.dlqPub, log)
}

// startProbes serves /metrics, /livez and /readyz.
func startProbes(cfg config.Config, c *conns, log *zap.Logger) *http.Server {
	probes := healthServer(cfg, c.metrics, log, []health.Dependency{
		// Without PostgreSQL or Temporal the worker does nothing useful.
		// Without RabbitMQ running workflows still deliver, and without
		// Redis deliveries wait while everything else goes on: reported,
		// not required.
		{Name: "postgres", Required: true, Check: func(ctx context.Context) error { return c.pool.Ping(ctx) }},
		{Name: "temporal", Required: true, Check: func(ctx context.Context) error {
			_, err := c.temporal.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}},
		{Name: "redis", Check: func(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }},
		{Name: "rabbitmq", Check: c.relayPub.Ping},
	})
	go func() {
		if err := probes.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return probes
}

// backgroundJobs are the worker's loops besides the relay and the
// consumers: the breakers' tally, the reconciler, retention (off unless
// RETENTION_PERIOD is set), the dead-letter pruner and the resuming of idle
// operations. Each runs until ctx ends.
func backgroundJobs(cfg config.Config, c *conns, d delivery, relay *outbox.Relay, log *zap.Logger) []func(context.Context) {
	reconciler := reconcile.New(reconcile.Config{
		Interval: cfg.RetryScanInterval,
		Limit:    cfg.RetryScanLimit,
		After:    cfg.ReconcileAfter,
	}, c.pool, c.temporal, func(ctx context.Context) (map[string]int, error) {
		main, _, err := c.inspector.Depths(ctx, notification.Channels)
		return main, err
	}, c.metrics.Repaired, relay.Wake, log)
	retainer := retention.New(retention.Config{
		Period:    cfg.RetentionPeriod,
		BatchSize: cfg.RetentionBatchSize,
	}, c.pool, c.metrics.RetentionDeleted, log)
	pruner := deadletter.NewPruner(c.pool, c.sweeper, c.metrics.DeadLettersRetired, log)
	jobs := []func(context.Context){
		func(ctx context.Context) { _ = reconciler.Run(ctx) },
		func(ctx context.Context) { _ = retainer.Run(ctx) },
		func(ctx context.Context) { _ = pruner.Run(ctx) },
		func(ctx context.Context) {
			dispatch.ResumeOperations(ctx, c.pool, c.temporal, taskQueues(cfg), 30*time.Second, time.Minute, log)
		},
	}
	if d.acts.Breakers != nil {
		jobs = append(jobs, func(ctx context.Context) { _ = d.acts.Breakers.Run(ctx) })
	}
	return jobs
}

func stopWorkers(workers []worker.Worker) {
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(w.Stop)
	}
	wg.Wait()
}

// dialTemporal connects to Temporal, retrying until it answers or ctx ends,
// so the worker can start before the Temporal server does.
func dialTemporal(ctx context.Context, cfg config.Config, mh client.MetricsHandler, log *zap.Logger) (client.Client, error) {
	conn, creds, err := wfclient.Connection(cfg)
	if err != nil {
		return nil, err
	}
	// The workers built from this client trace the workflows and
	// activities they run through the same interceptor.
	tracing, err := telemetry.TemporalInterceptors()
	if err != nil {
		return nil, err
	}
	backoff := 200 * time.Millisecond
	for {
		tc, err := client.DialContext(ctx, client.Options{
			HostPort:          cfg.TemporalAddress,
			Namespace:         cfg.TemporalNamespace,
			Logger:            logs.Temporal(log),
			MetricsHandler:    mh,
			ConnectionOptions: conn,
			Credentials:       creds,
			Interceptors:      tracing,
		})
		if err == nil {
			return tc, nil
		}
		log.Warn("temporal not reachable yet; retrying", zap.String("address", cfg.TemporalAddress), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to temporal at %s: %w", cfg.TemporalAddress, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// healthServer serves the worker's /metrics, /livez and /readyz.
func healthServer(cfg config.Config, m *metrics.Worker, log *zap.Logger, deps []health.Dependency) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(m.Registry))
	mux.Handle("GET /livez", health.Live())
	mux.Handle("GET /readyz", health.Ready(deps, 2*time.Second, health.Reporter(m.DependencyUp, log)))
	return &http.Server{
		Addr:              net.JoinHostPort("", strconv.Itoa(cfg.WorkerMetricsPort)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
}

// redactURL is the part of a provider URL a log line shows: its scheme and
// host (its credentials, path and query may carry tokens).
func redactURL(u string) string {
	if origin := provider.Origin(u); origin != "" {
		return origin
	}
	return "(unparseable)"
}

// newBreakers returns the providers' breakers, nil without a providers file;
// each transition is logged once, by the worker that made it.
func newBreakers(providers *provider.Set, rdb *redis.Client, prefix string, m *metrics.Worker, log *zap.Logger) *breaker.Breakers {
	if !providers.Explicit {
		return nil
	}
	b := breaker.New(rdb, prefix, providers.BreakerSettings())
	m.InitBreakers(b.Providers(), []string{breaker.Closed.String(), breaker.HalfOpen.String(), breaker.Open.String()})
	b.OnState = func(name string, s breaker.State) { m.BreakerState.WithLabelValues(name).Set(float64(s)) }
	b.OnChange = func(c breaker.Change) {
		m.BreakerChanges.WithLabelValues(c.Provider, c.To.String()).Inc()
		log.Warn("provider breaker "+c.To.String(), zap.String("provider", c.Provider),
			zap.String("from", c.From.String()), zap.String("to", c.To.String()))
	}
	return b
}
