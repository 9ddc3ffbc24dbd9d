// Package testenv gives tests the real services: PostgreSQL, RabbitMQ and
// Redis from testcontainers where a Docker engine runs, from loopback
// otherwise (the project's machines have no engine but run the services),
// and a Temporal server: the one at TEST_TEMPORAL_ADDRESS if it answers, a
// dev server from the pinned CLI otherwise. Every test gets its own
// database, queue prefix, key prefix and task-queue prefix, so tests can run
// in any order and beside a running `make run`. Beside them: the binaries
// run as processes (process.go), a TCP proxy that partitions a service
// silently (proxy.go), TLS and SMTP servers (servers.go), and openapi.yaml
// as a contract that exchanges with the API are checked against
// (contract.go).
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// Services are the base URLs of the shared services.
type Services struct {
	// PostgresDSN points at a maintenance database; tests create their own.
	PostgresDSN string
	RabbitMQURL string
	RedisURL    string
	// Source says where they came from: "containers" or "loopback".
	Source string
}

var (
	servicesOnce sync.Once
	services     Services
	servicesErr  error
)

// Shared returns the services, starting containers on first use when a
// Docker engine answers.
func Shared(t testing.TB) Services {
	t.Helper()
	servicesOnce.Do(func() { services, servicesErr = discover() })
	require.NoError(t, servicesErr, "test services")
	return services
}

func discover() (Services, error) {
	loopback := Services{
		PostgresDSN: envOr("TEST_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		RabbitMQURL: envOr("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		RedisURL:    envOr("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		Source:      "loopback",
	}
	if os.Getenv("TEST_SERVICES") == "loopback" || !dockerAvailable() {
		return loopback, nil
	}
	return startContainers()
}

func dockerAvailable() bool {
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return false
	}
	defer func() { _ = p.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return p.Health(ctx) == nil
}

func startContainers() (Services, error) {
	ctx := context.Background()
	start := func(image string, port string, env map[string]string, waitFor wait.Strategy) (string, error) {
		c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image: image, ExposedPorts: []string{port}, Env: env, WaitingFor: waitFor,
			},
			Started: true,
		})
		if err != nil {
			return "", fmt.Errorf("starting %s: %w", image, err)
		}
		return c.PortEndpoint(ctx, port, "")
	}
	pg, err := start("postgres:16-alpine", "5432/tcp", map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"},
		wait.ForLog("database system is ready to accept connections").WithOccurrence(2).WithStartupTimeout(time.Minute))
	if err != nil {
		return Services{}, err
	}
	mq, err := start("rabbitmq:3.13-alpine", "5672/tcp", nil, wait.ForListeningPort("5672/tcp").WithStartupTimeout(2*time.Minute))
	if err != nil {
		return Services{}, err
	}
	rd, err := start("redis:7-alpine", "6379/tcp", nil, wait.ForListeningPort("6379/tcp"))
	if err != nil {
		return Services{}, err
	}
	return Services{
		PostgresDSN: "postgres://postgres@" + pg + "/postgres?sslmode=disable",
		RabbitMQURL: "amqp://guest:guest@" + mq + "/",
		RedisURL:    "redis://" + rd + "/0",
		Source:      "containers",
	}, nil
}

// Name returns a short random name for isolating a test's resources.
func Name(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Database creates a fresh, migrated database for the test, dropped at
// cleanup, and returns its DSN.
func Database(t testing.TB) string {
	t.Helper()
	base := Shared(t).PostgresDSN
	name := Name("dispatch_test_")
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/" + name
	dsn := u.String()
	ctx := context.Background()
	require.NoError(t, store.EnsureDatabase(ctx, dsn))
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("dropping %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	require.NoError(t, store.MigrateUp(dsn))
	return dsn
}

// Pool opens a pool on a fresh database (see Database), closed at cleanup.
func Pool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dsn := Database(t)
	pool, err := store.Connect(context.Background(), dsn, 10)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, dsn
}

// Topology returns a queue topology under a fresh prefix, declared on the
// broker, whose exchanges and queues are deleted at cleanup.
func Topology(t testing.TB) queue.Topology {
	t.Helper()
	topo := queue.Topology{Prefix: Name("t") + "."}
	conn, err := amqp.Dial(Shared(t).RabbitMQURL)
	require.NoError(t, err)
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, topo.Declare(ch))
	_ = conn.Close()
	t.Cleanup(func() {
		conn, err := amqp.Dial(Shared(t).RabbitMQURL)
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, c := range notification.Channels {
			_, _ = ch.QueueDelete(topo.Queue(string(c)), false, false, false)
			_, _ = ch.QueueDelete(topo.DeadLetterQueue(string(c)), false, false, false)
		}
		_ = ch.ExchangeDelete(topo.Exchange(), false, false)
		_ = ch.ExchangeDelete(topo.DeadLetterExchange(), false, false)
	})
	return topo
}

// Redis returns a client and a fresh key prefix whose keys are deleted at cleanup.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(Shared(t).RedisURL)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	prefix := Name("t") + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// RepoRoot is the module root (where go.mod is).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}
