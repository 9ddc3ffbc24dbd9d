// Command api serves the Dispatch Engine REST API: it stores each accepted
// notification with its outbox row in one transaction and answers 202, and
// signals a notification's workflow when it is cancelled. It refuses to
// start without an API key: none in API_KEYS and no active key in the
// database.
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
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/deadletter"
	"github.com/dispatch-engine/dispatch-engine/internal/health"
	"github.com/dispatch-engine/dispatch-engine/internal/httpapi"
	"github.com/dispatch-engine/dispatch-engine/internal/logs"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/outbox"
	"github.com/dispatch-engine/dispatch-engine/internal/profiling"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/telemetry"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
	"github.com/dispatch-engine/dispatch-engine/internal/version"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
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
	flushTraces, err := telemetry.Start(ctx, "dispatch-api", log)
	if err != nil {
		return err
	}
	defer flushTraces()
	defer profiling.Serve(cfg.APIPprofPort, log)()

	c, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.close()
	srv, err := newServer(cfg, c, log)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, srv, log)
}

// conns are the API's connections: PostgreSQL, Redis, Temporal, and two
// RabbitMQ publishers (readiness's, and the dead letters' own), plus the
// outbox waker running on the pool.
type conns struct {
	pool        *pgxpool.Pool
	rdb         *redis.Client
	temporal    client.Client
	broker      *queue.Publisher
	deadLetters *queue.Publisher
	waker       *outbox.Waker
	// unsubscribe opens the tokens of one-click unsubscribe links.
	unsubscribe *unsubscribe.Signer
	closers     []func()
}

// close closes the connections in the reverse order of their opening.
func (c *conns) close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// connect opens the API's connections. The API key check comes right after
// PostgreSQL: an API that could accept no request says so before it opens
// anything else.
func connect(ctx context.Context, cfg config.Config, log *zap.Logger) (_ *conns, err error) {
	c := &conns{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.pool, err = store.Connect(ctx, cfg.DatabaseDSN, cfg.DatabaseMaxConns); err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.pool.Close)
	if err := requireAPIKey(ctx, cfg, c.pool, log); err != nil {
		return nil, err
	}
	if c.unsubscribe, err = loadUnsubscribe(ctx, cfg, c.pool, log); err != nil {
		return nil, err
	}
	if c.rdb, err = ratelimit.NewClient(cfg.RedisURL); err != nil {
		return nil, fmt.Errorf("parsing REDIS_URL: %w", err)
	}
	c.closers = append(c.closers, func() { _ = c.rdb.Close() })

	// The API only checks RabbitMQ for readiness; the outbox relay publishes.
	c.broker = queue.NewPublisher(cfg.RabbitMQURL, queue.Topology{Prefix: cfg.RabbitMQQueuePrefix})
	c.closers = append(c.closers, func() { _ = c.broker.Close() })
	// /v1/dead-letters visits the DLQs through a publisher of its own: a
	// peek or a purge holds it while it runs, readiness checks must not wait.
	c.deadLetters = queue.NewPublisher(cfg.RabbitMQURL, queue.Topology{Prefix: cfg.RabbitMQQueuePrefix})
	c.closers = append(c.closers, func() { _ = c.deadLetters.Close() })

	if c.temporal, err = lazyTemporal(cfg, log); err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.temporal.Close)

	// One coalesced NOTIFY after commits wakes the relays at once.
	c.waker = outbox.NewWaker(c.pool, log)
	wakeCtx, stopWaker := context.WithCancel(context.Background())
	c.closers = append(c.closers, stopWaker)
	go func() { _ = c.waker.Run(wakeCtx) }()
	return c, nil
}

// requireAPIKey refuses to start an API without any key: keys live in the
// database (dispatchctl keys create); without any there, and none in
// API_KEYS, /v1/* would refuse every request.
func requireAPIKey(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *zap.Logger) error {
	if len(cfg.APIKeys) > 0 {
		return nil
	}
	n, err := store.CountActiveAPIKeys(ctx, pool)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("no API key: API_KEYS is empty and the database holds no active key; create one with `dispatchctl keys create --tenant NAME`, or set API_KEYS (comma separated, at least 16 characters each; they belong to the default tenant)")
	}
	log.Info("API_KEYS is empty: only the keys stored in the database are accepted", zap.Int("active_keys", n))
	return nil
}

// loadUnsubscribe loads the secret of the unsubscribe links, which every
// API and worker process shares (the first to start makes it). The API
// serves /u/{token} even without PUBLIC_BASE_URL: links already sent stay
// valid for their 90 days.
func loadUnsubscribe(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *zap.Logger) (*unsubscribe.Signer, error) {
	signer, err := unsubscribe.Load(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("loading the unsubscribe secret (are the migrations applied?): %w", err)
	}
	if cfg.PublicBaseURL == "" {
		log.Info("PUBLIC_BASE_URL is not set: emails carry no List-Unsubscribe header")
	}
	return signer, nil
}

// lazyTemporal is the API's Temporal client, which connects on first use:
// the API starts (and reports not ready) while Temporal is down.
func lazyTemporal(cfg config.Config, log *zap.Logger) (client.Client, error) {
	conn, creds, err := wfclient.Connection(cfg)
	if err != nil {
		return nil, err
	}
	tracing, err := telemetry.TemporalInterceptors()
	if err != nil {
		return nil, err
	}
	tc, err := client.NewLazyClient(client.Options{
		HostPort:          cfg.TemporalAddress,
		Namespace:         cfg.TemporalNamespace,
		Logger:            logs.Temporal(log),
		ConnectionOptions: conn,
		Credentials:       creds,
		Interceptors:      tracing,
	})
	if err != nil {
		return nil, fmt.Errorf("creating temporal client: %w", err)
	}
	return tc, nil
}

// newServer builds the HTTP API on the connections, with the providers
// (who may send receipts, and what GET /v1/providers shows) and, with a
// providers file, their breakers.
func newServer(cfg config.Config, c *conns, log *zap.Logger) (*httpapi.Server, error) {
	providers, err := provider.FromConfig(cfg, 1)
	if err != nil {
		return nil, err
	}
	var breakers *breaker.Breakers
	if providers.Explicit {
		breakers = breaker.New(c.rdb, cfg.RedisKeyPrefix, providers.BreakerSettings())
	}
	return httpapi.New(httpapi.Config{
		Providers:       providers,
		Breakers:        breakers,
		ReceiptsBaseURL: strings.TrimRight(cfg.ReceiptsBaseURL, "/"),
		Operations: func(ctx context.Context, id uuid.UUID, summary string) error {
			return wfclient.StartOperation(ctx, c.temporal, wfclient.TaskQueues{Prefix: cfg.TemporalTaskQueuePrefix}, id, summary)
		},
		DeadLetters:       deadletter.NewQueues(c.pool, c.deadLetters),
		Unsubscribe:       c.unsubscribe,
		Quotas:            quota.New(c.rdb, cfg.RedisKeyPrefix+"quota:"),
		Accepted:          c.waker.Poke,
		APIKeys:           cfg.APIKeys,
		TemporalUIURL:     cfg.TemporalUIURL,
		TemporalNamespace: cfg.TemporalNamespace,
		// One request per pooled connection; the rest wait briefly, then 503.
		MaxInFlight: int(cfg.DatabaseMaxConns),
	}, c.pool, c.temporal, readiness(c), metrics.NewAPI(), log), nil
}

// readiness is what /readyz checks. Accepting needs PostgreSQL alone (the
// outbox holds what the broker cannot take yet; a cancel is kept on the row
// when its signal cannot be sent): the rest is reported, not required.
func readiness(c *conns) []health.Dependency {
	return []health.Dependency{
		{Name: "postgres", Required: true, Check: func(ctx context.Context) error { return c.pool.Ping(ctx) }},
		{Name: "redis", Check: func(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }},
		{Name: "rabbitmq", Check: c.broker.Ping},
		{Name: "temporal", Check: func(ctx context.Context) error {
			_, err := c.temporal.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		}},
	}
}

// serve listens until ctx ends (SIGINT, SIGTERM) or listening fails, then
// finishes the requests in flight within SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, cfg config.Config, srv *httpapi.Server, log *zap.Logger) error {
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
