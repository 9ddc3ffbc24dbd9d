// Command worker runs the delivery side of Dispatch Engine: the outbox relay
// (Postgres → RabbitMQ), the per-channel consumers that start one Temporal
// workflow per notification, and the Temporal workers that run the workflow
// and its delivery activities.
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/zap"

	"dispatch-engine/activities"
	"dispatch-engine/internal/breaker"
	"dispatch-engine/internal/config"
	"dispatch-engine/internal/deadletter"
	"dispatch-engine/internal/dispatch"
	"dispatch-engine/internal/health"
	"dispatch-engine/internal/logs"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/outbox"
	"dispatch-engine/internal/provider"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/ratelimit"
	"dispatch-engine/internal/reconcile"
	"dispatch-engine/internal/retention"
	"dispatch-engine/internal/store"
	"dispatch-engine/internal/version"
	"dispatch-engine/internal/wfclient"
	"dispatch-engine/workflows"
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

	pool, err := store.Connect(ctx, cfg.DatabaseDSN, cfg.DatabaseMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()

	rdb, err := ratelimit.NewClient(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("parsing REDIS_URL: %w", err)
	}
	defer rdb.Close()

	m := metrics.NewWorker()
	sdkMetrics, err := metrics.TemporalHandler(m.Registry, func(err error) {
		log.Warn("recording a Temporal SDK metric failed", zap.Error(err))
	})
	if err != nil {
		return err
	}
	tc, err := dialTemporal(ctx, cfg, sdkMetrics, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	if err := dispatch.EnsureSearchAttributes(ctx, tc, cfg.TemporalNamespace); err != nil {
		log.Warn("could not register search attributes yet; retrying in the background", zap.Error(err))
		go dispatch.RegisterSearchAttributes(ctx, tc, cfg.TemporalNamespace, log)
	}

	topology := queue.Topology{Prefix: cfg.RabbitMQQueuePrefix}
	relayPub := queue.NewPublisher(cfg.RabbitMQURL, topology)
	defer relayPub.Close()
	dlqPub := queue.NewPublisher(cfg.RabbitMQURL, topology)
	defer dlqPub.Close()
	inspector := queue.NewPublisher(cfg.RabbitMQURL, topology)
	defer inspector.Close()
	m.RegisterBacklog(
		func(ctx context.Context) (int64, time.Duration, error) { return store.OutboxBacklog(ctx, pool) },
		func(ctx context.Context) (map[string]int, map[string]int, error) {
			return inspector.Depths(ctx, notification.Channels)
		},
	)

	relay := outbox.NewRelay(outbox.Config{
		BatchSize:    cfg.OutboxBatchSize,
		PollInterval: cfg.OutboxPollInterval,
		Topology:     topology,
		Relayed:      m.Relayed,
	}, pool, relayPub, log)

	providers, err := provider.FromConfig(cfg, (len(notification.Channels)+1)*cfg.WorkerConcurrency)
	if err != nil {
		return err
	}
	limits := cfg.RateLimits()
	maps.Copy(limits, providers.Rates())
	limiter := ratelimit.New(rdb, cfg.RedisKeyPrefix, limits)
	acts := &activities.Activities{
		Pool:      pool,
		Providers: providers,
		Breakers:  newBreakers(providers, rdb, cfg.RedisKeyPrefix, m, log),
		Limiter:   limiter,
		// Fail's dead-letter records go out through the outbox at once.
		OutboxWritten: relay.Wake,
		Metrics:       m,
		Log:           log,
		// The fast path's calls are bounded like a channel's worker.
		FastPathCalls: make(chan struct{}, cfg.WorkerConcurrency),
		Temporal:      tc,
	}
	taskQueues := wfclient.TaskQueues{Prefix: cfg.TemporalTaskQueuePrefix}
	workers := dispatch.NewWorkers(tc, dispatch.WorkerConfig{
		TaskQueues:  taskQueues,
		Concurrency: cfg.WorkerConcurrency,
		StopTimeout: cfg.ShutdownTimeout,
		RateLimits:  cfg.RateLimits(),
	}, acts)
	for _, w := range workers {
		if err := w.Start(); err != nil {
			stopWorkers(workers)
			return fmt.Errorf("starting temporal worker: %w", err)
		}
	}

	starter := dispatch.NewStarter(dispatch.StarterConfig{
		TaskQueues: taskQueues,
		Retry: workflows.RetryPolicy{
			MaxAttempts:        cfg.RetryMaxAttempts,
			InitialInterval:    cfg.RetryInitialInterval,
			BackoffCoefficient: cfg.RetryBackoffCoefficient,
			MaxInterval:        cfg.RetryMaxInterval,
		},
		AttemptTimeout: providers.MaxTimeout() + limiterHeadroom,
		FastPath:       cfg.DeliveryFastPath,
	}, pool, tc, limiter, m, log)
	consumer := queue.NewConsumer(queue.ConsumerConfig{
		URL:          cfg.RabbitMQURL,
		Topology:     topology,
		Channels:     notification.Channels,
		Concurrency:  cfg.WorkerConcurrency,
		InFlight:     m.InFlight,
		DrainTimeout: cfg.ShutdownTimeout,
	}, starter.Handle, dlqPub, log)

	probes := healthServer(cfg, m, log, []health.Dependency{
		// Without PostgreSQL or Temporal the worker does nothing useful.
		// Without RabbitMQ running workflows still deliver, and without
		// Redis deliveries wait while everything else goes on: reported,
		// not required.
		{Name: "postgres", Required: true, Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
		{Name: "temporal", Required: true, Check: func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}},
		{Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		{Name: "rabbitmq", Check: relayPub.Ping},
	})
	go func() {
		if err := probes.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()

	reconciler := reconcile.New(reconcile.Config{
		Interval: cfg.RetryScanInterval,
		Limit:    cfg.RetryScanLimit,
		After:    cfg.ReconcileAfter,
	}, pool, tc, func(ctx context.Context) (map[string]int, error) {
		main, _, err := inspector.Depths(ctx, notification.Channels)
		return main, err
	}, m.Repaired, relay.Wake, log)
	// Off unless RETENTION_PERIOD is set: Run then returns at once.
	retainer := retention.New(retention.Config{
		Period:    cfg.RetentionPeriod,
		BatchSize: cfg.RetentionBatchSize,
	}, pool, m.RetentionDeleted, log)

	// Its own publisher: a sweep holds it while it visits a DLQ, and may
	// take longer than a publish.
	sweeper := queue.NewPublisher(cfg.RabbitMQURL, topology, queue.WithCallTimeout(time.Minute))
	defer sweeper.Close()
	pruner := deadletter.NewPruner(pool, sweeper, m.DeadLettersRetired, log)

	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(ctx) })
	if acts.Breakers != nil {
		wg.Go(func() { _ = acts.Breakers.Run(ctx) })
	}
	wg.Go(func() { _ = reconciler.Run(ctx) })
	wg.Go(func() { _ = retainer.Run(ctx) })
	wg.Go(func() { _ = pruner.Run(ctx) })
	wg.Go(func() { dispatch.ResumeOperations(ctx, pool, tc, taskQueues, 30*time.Second, time.Minute, log) })
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
	backoff := 200 * time.Millisecond
	for {
		tc, err := client.DialContext(ctx, client.Options{
			HostPort:          cfg.TemporalAddress,
			Namespace:         cfg.TemporalNamespace,
			Logger:            logs.Temporal(log),
			MetricsHandler:    mh,
			ConnectionOptions: conn,
			Credentials:       creds,
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

// redactURL hides a password in u (a provider URL may carry credentials).
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparseable)"
	}
	return parsed.Redacted()
}

// newBreakers returns the providers' breakers, nil without a providers file;
// each transition is logged once, by the worker that made it.
func newBreakers(providers *provider.Set, rdb *redis.Client, prefix string, m *metrics.Worker, log *zap.Logger) *breaker.Breakers {
	if !providers.Explicit {
		return nil
	}
	b := breaker.New(rdb, prefix, providers.BreakerSettings())
	b.OnState = func(name string, s breaker.State) { m.BreakerState.WithLabelValues(name).Set(float64(s)) }
	b.OnChange = func(c breaker.Change) {
		m.BreakerChanges.WithLabelValues(c.Provider, c.To.String()).Inc()
		log.Warn("provider breaker "+c.To.String(), zap.String("provider", c.Provider),
			zap.String("from", c.From.String()), zap.String("to", c.To.String()))
	}
	return b
}
