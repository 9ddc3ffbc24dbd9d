// Command api serves the Dispatch Engine REST API: it stores each accepted
// notification with its outbox row in one transaction and answers 202, and
// signals a notification's workflow when it is cancelled. It refuses to
// start without API_KEYS.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"dispatch-engine/internal/breaker"
	"dispatch-engine/internal/config"
	"dispatch-engine/internal/deadletter"
	"dispatch-engine/internal/health"
	"dispatch-engine/internal/httpapi"
	"dispatch-engine/internal/logs"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/outbox"
	"dispatch-engine/internal/profiling"
	"dispatch-engine/internal/provider"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/quota"
	"dispatch-engine/internal/ratelimit"
	"dispatch-engine/internal/store"
	"dispatch-engine/internal/version"
	"dispatch-engine/internal/wfclient"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log, err := logs.New(cfg.LogLevel, cfg.LogFormat, "api")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log.Info("starting", zap.String("version", version.String()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer profiling.Serve(cfg.APIPprofPort, log)()

	pool, err := store.Connect(ctx, cfg.DatabaseDSN, cfg.DatabaseMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	if len(cfg.APIKeys) == 0 {
		// Keys live in the database (dispatchctl keys create); without any
		// there, and none in API_KEYS, /v1/* would refuse every request.
		n, err := store.CountActiveAPIKeys(ctx, pool)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no API key: API_KEYS is empty and the database holds no active key; create one with `dispatchctl keys create --tenant NAME`, or set API_KEYS (comma separated, at least 16 characters each; they belong to the default tenant)")
		}
		log.Info("API_KEYS is empty: only the keys stored in the database are accepted", zap.Int("active_keys", n))
	}

	rdb, err := ratelimit.NewClient(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("parsing REDIS_URL: %w", err)
	}
	defer func() { _ = rdb.Close() }()

	// The API only checks RabbitMQ for readiness; the outbox relay publishes.
	broker := queue.NewPublisher(cfg.RabbitMQURL, queue.Topology{Prefix: cfg.RabbitMQQueuePrefix})
	defer func() { _ = broker.Close() }()
	// /v1/dead-letters visits the DLQs through a publisher of its own: a
	// peek or a purge holds it while it runs, readiness checks must not wait.
	deadLetters := queue.NewPublisher(cfg.RabbitMQURL, queue.Topology{Prefix: cfg.RabbitMQQueuePrefix})
	defer func() { _ = deadLetters.Close() }()

	// Lazy: the API starts (and reports not ready) while Temporal is down.
	conn, creds, err := wfclient.Connection(cfg)
	if err != nil {
		return err
	}
	tc, err := client.NewLazyClient(client.Options{
		HostPort:          cfg.TemporalAddress,
		Namespace:         cfg.TemporalNamespace,
		Logger:            logs.Temporal(log),
		ConnectionOptions: conn,
		Credentials:       creds,
	})
	if err != nil {
		return fmt.Errorf("creating temporal client: %w", err)
	}
	defer tc.Close()

	// One coalesced NOTIFY after commits wakes the relays at once.
	waker := outbox.NewWaker(pool, log)
	wakeCtx, stopWaker := context.WithCancel(context.Background())
	defer stopWaker()
	go func() { _ = waker.Run(wakeCtx) }()

	// The providers: who may send receipts, and what GET /v1/providers shows.
	providers, err := provider.FromConfig(cfg, 1)
	if err != nil {
		return err
	}
	var breakers *breaker.Breakers
	if providers.Explicit {
		breakers = breaker.New(rdb, cfg.RedisKeyPrefix, providers.BreakerSettings())
	}

	srv := httpapi.New(httpapi.Config{
		Providers:       providers,
		Breakers:        breakers,
		ReceiptsBaseURL: strings.TrimRight(cfg.ReceiptsBaseURL, "/"),
		Operations: func(ctx context.Context, id uuid.UUID, summary string) error {
			return wfclient.StartOperation(ctx, tc, wfclient.TaskQueues{Prefix: cfg.TemporalTaskQueuePrefix}, id, summary)
		},
		DeadLetters:       deadletter.NewQueues(pool, deadLetters),
		Quotas:            quota.New(rdb, cfg.RedisKeyPrefix+"quota:"),
		Accepted:          waker.Poke,
		APIKeys:           cfg.APIKeys,
		TemporalUIURL:     cfg.TemporalUIURL,
		TemporalNamespace: cfg.TemporalNamespace,
		// One request per pooled connection; the rest wait briefly, then 503.
		MaxInFlight: int(cfg.DatabaseMaxConns),
	}, pool, tc, []health.Dependency{
		// Accepting needs PostgreSQL alone (the outbox holds what the
		// broker cannot take yet; a cancel is kept on the row when its
		// signal cannot be sent): the rest is reported, not required.
		{Name: "postgres", Required: true, Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
		{Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		{Name: "rabbitmq", Check: broker.Ping},
		{Name: "temporal", Check: func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}},
	}, metrics.NewAPI(), log)

	addr := net.JoinHostPort("", strconv.Itoa(cfg.APIPort))
	errc := make(chan error, 1)
	go func() { errc <- srv.Listen(addr) }()
	log.Info("api listening", zap.String("addr", addr))

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", zap.Duration("timeout", cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
