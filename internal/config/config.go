// Package config is the process configuration: one struct parsed from the
// environment (and an optional .env file) once in main and passed down.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/joho/godotenv"
	"go.uber.org/zap/zapcore"
)

// Config holds every setting of the API and the worker. Each field's env tag
// names its variable; defaults work against services on loopback.
type Config struct {
	// DatabaseDSN is the PostgreSQL connection string.
	DatabaseDSN string `env:"DATABASE_DSN" envDefault:"postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable"`
	// DatabaseMaxConns bounds each process's connection pool.
	DatabaseMaxConns int32 `env:"DATABASE_MAX_CONNS" envDefault:"20"`
	// RabbitMQURL is the AMQP 0-9-1 broker URL.
	RabbitMQURL string `env:"RABBITMQ_URL" envDefault:"amqp://guest:guest@127.0.0.1:5672/"`
	// RabbitMQQueuePrefix is put before every exchange and queue name, so several
	// deployments (or test runs) can share one broker.
	RabbitMQQueuePrefix string `env:"RABBITMQ_QUEUE_PREFIX"`
	// RedisURL is the Redis URL used by the rate limiter.
	RedisURL string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	// RedisKeyPrefix is put before every Redis key.
	RedisKeyPrefix string `env:"REDIS_KEY_PREFIX" envDefault:"dispatch:"`
	// WebhookSiteURL is the provider endpoint every channel delivers to,
	// unless the providers file gives the channel a route.
	WebhookSiteURL string `env:"WEBHOOK_SITE_URL" envDefault:"http://127.0.0.1:9090/webhook"`
	// ProvidersFile is a YAML file of providers (webhook, smtp, twilio),
	// each channel's route in failover order, and the breakers
	// (docs/PROVIDERS.md). Empty: one webhook provider at WEBHOOK_SITE_URL
	// serves every channel.
	ProvidersFile string `env:"PROVIDERS_FILE"`
	// ReceiptsBaseURL is the API's public base URL, where providers send
	// their receipts (POST {base}/v1/receipts/{provider}); a twilio
	// provider that awaits receipts names it as its StatusCallback.
	ReceiptsBaseURL string `env:"RECEIPTS_BASE_URL" envDefault:"http://127.0.0.1:8080"`
	// PublicBaseURL is the API's base URL as the people who get emails
	// reach it: every email of a non-critical category carries the
	// one-click unsubscribe link {base}/u/{token} (List-Unsubscribe,
	// RFC 8058), which the API serves without a key. An absolute http(s)
	// URL without query or credentials; a trailing slash is dropped.
	// Mailbox providers want https. Empty: no email carries the header,
	// and the API and worker say so at start.
	PublicBaseURL string `env:"PUBLIC_BASE_URL"`
	// UnsubscribeMailto, an email address, adds a mailto: entry to
	// List-Unsubscribe (subject "unsubscribe-{token}") for mail clients
	// that unsubscribe by email; only with PUBLIC_BASE_URL.
	UnsubscribeMailto string `env:"UNSUBSCRIBE_MAILTO"`
	// OrderingMaxHold is how long a notification waits at most for the one
	// before it in its ordering key to end, from its first wait, when it
	// sets no maxHold of its own; then it goes, and is marked
	// orderingBroken.
	OrderingMaxHold time.Duration `env:"ORDERING_MAX_HOLD" envDefault:"5m"`
	// WebhookTimeout bounds one provider call; it stays below the activity's
	// start-to-close timeout.
	WebhookTimeout time.Duration `env:"WEBHOOK_TIMEOUT" envDefault:"10s"`
	// RateLimitPerSec is the per-channel delivery rate, shared by all workers.
	RateLimitPerSec int `env:"RATE_LIMIT_PER_SEC" envDefault:"100"`
	// RateLimitSMS, RateLimitEmail and RateLimitPush override RateLimitPerSec
	// for one channel when set (0 means not set).
	RateLimitSMS   int `env:"RATE_LIMIT_SMS" envDefault:"0"`
	RateLimitEmail int `env:"RATE_LIMIT_EMAIL" envDefault:"0"`
	RateLimitPush  int `env:"RATE_LIMIT_PUSH" envDefault:"0"`
	// WebhookSigningSecret signs every delivery with Standard Webhooks headers
	// ("whsec_" + base64 key). Empty: deliveries are not signed.
	WebhookSigningSecret string `env:"WEBHOOK_SIGNING_SECRET"`
	// WorkerConcurrency is how many deliveries (and workflow starts) one worker
	// runs at once per channel.
	WorkerConcurrency int `env:"WORKER_CONCURRENCY" envDefault:"16"`
	// DeliveryFastPath runs a notification's first attempt as a local
	// activity inside the workflow's first task when its channel has a
	// rate-limit slot free at start (the consumer takes it). It halves
	// Temporal's work per notification. A saturated channel, and every retry,
	// use the per-channel activity task queues, where the backlog waits in
	// priority order.
	DeliveryFastPath bool `env:"DELIVERY_FAST_PATH" envDefault:"true"`
	// RetryMaxAttempts is the number of delivery attempts before a notification fails.
	RetryMaxAttempts int `env:"RETRY_MAX_ATTEMPTS" envDefault:"8"`
	// RetryInitialInterval is the backoff before the second attempt.
	RetryInitialInterval time.Duration `env:"RETRY_INITIAL_INTERVAL" envDefault:"2s"`
	// RetryBackoffCoefficient multiplies the backoff after each attempt.
	RetryBackoffCoefficient float64 `env:"RETRY_BACKOFF_COEFFICIENT" envDefault:"2"`
	// RetryMaxInterval caps the backoff between two attempts.
	RetryMaxInterval time.Duration `env:"RETRY_MAX_INTERVAL" envDefault:"10m"`
	// RetryScanInterval is how often the reconciler looks for notifications
	// that fell off their path (no outbox row and no running workflow).
	RetryScanInterval time.Duration `env:"RETRY_SCAN_INTERVAL" envDefault:"5s"`
	// RetryScanLimit is the most notifications the reconciler checks per scan.
	RetryScanLimit int `env:"RETRY_SCAN_LIMIT" envDefault:"100"`
	// ReconcileAfter is how long a notification must sit untouched (past any
	// scheduled or next-attempt time) before the reconciler checks it.
	ReconcileAfter time.Duration `env:"RECONCILE_AFTER" envDefault:"2m"`
	// OutboxPollInterval is how often the relay polls when no LISTEN/NOTIFY wake-up arrives.
	OutboxPollInterval time.Duration `env:"OUTBOX_POLL_INTERVAL" envDefault:"1s"`
	// OutboxBatchSize is how many outbox rows the relay publishes per round.
	OutboxBatchSize int `env:"OUTBOX_BATCH_SIZE" envDefault:"200"`
	// RetentionPeriod is how long terminal notifications (DELIVERED, FAILED,
	// CANCELLED) are kept, counted from their creation; the worker deletes
	// older ones with their attempts and outbox rows, and emptied batches
	// (docs/RETENTION.md). A Go duration ("720h" is 30 days); empty or 0
	// keeps everything.
	RetentionPeriod time.Duration `env:"RETENTION_PERIOD"`
	// RetentionBatchSize is how many notifications one retention statement
	// (one transaction) deletes.
	RetentionBatchSize int `env:"RETENTION_BATCH_SIZE" envDefault:"500"`
	// APIKeys are the keys accepted on /v1/* (comma separated), sent as
	// "Authorization: Bearer <key>" or "X-API-Key: <key>"; they belong to the
	// default tenant. Keys of other tenants live in the database, hashed
	// (dispatchctl keys create). The API refuses to start with neither, and
	// refuses a key that still holds a template's placeholder ("change-me").
	APIKeys []string `env:"API_KEYS"`
	// APIPort is the API's HTTP port.
	APIPort int `env:"API_PORT" envDefault:"8080"`
	// WorkerMetricsPort serves the worker's /metrics, /livez and /readyz.
	WorkerMetricsPort int `env:"WORKER_METRICS_PORT" envDefault:"8081"`
	// APIPprofPort and WorkerPprofPort, when set, serve Go's profiler
	// (/debug/pprof/) on 127.0.0.1 only: profiles show the process's
	// internals, so they are never on a public port. 0 (the default): off.
	APIPprofPort    int `env:"API_PPROF_PORT" envDefault:"0"`
	WorkerPprofPort int `env:"WORKER_PPROF_PORT" envDefault:"0"`
	// ShutdownTimeout bounds a graceful stop: the API's in-flight requests;
	// the worker's messages being handled and activities in flight (side by
	// side; what is left is requeued or retried).
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// LogFormat is json (production) or console (readable, for make run).
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
	// TemporalAddress is the Temporal frontend host:port.
	TemporalAddress string `env:"TEMPORAL_ADDRESS" envDefault:"127.0.0.1:7233"`
	// TemporalNamespace is the Temporal namespace of the workflows.
	TemporalNamespace string `env:"TEMPORAL_NAMESPACE" envDefault:"default"`
	// TemporalTaskQueuePrefix is put before every task queue name, so several
	// deployments (or test runs) can share one namespace.
	TemporalTaskQueuePrefix string `env:"TEMPORAL_TASK_QUEUE_PREFIX"`
	// TemporalUIURL is the Temporal Web UI base URL used in notification links.
	TemporalUIURL string `env:"TEMPORAL_UI_URL" envDefault:"http://127.0.0.1:8233"`
	// TemporalTLS connects to Temporal over TLS (system roots unless
	// TEMPORAL_TLS_CA). Implied by a client certificate, a CA or an API key.
	TemporalTLS bool `env:"TEMPORAL_TLS" envDefault:"false"`
	// TemporalTLSCert and TemporalTLSKey are the files of a client
	// certificate and its key (mTLS, as Temporal Cloud's mTLS namespaces ask).
	TemporalTLSCert string `env:"TEMPORAL_TLS_CERT"`
	TemporalTLSKey  string `env:"TEMPORAL_TLS_KEY"`
	// TemporalTLSCA is a file of CA certificates that sign the server's.
	TemporalTLSCA string `env:"TEMPORAL_TLS_CA"`
	// TemporalTLSServerName overrides the name checked in the server's certificate.
	TemporalTLSServerName string `env:"TEMPORAL_TLS_SERVER_NAME"`
	// TemporalAPIKey authenticates to Temporal Cloud with an API key (over TLS).
	TemporalAPIKey string `env:"TEMPORAL_API_KEY"`
	// TemporalGRPCCompression is none (the default) or gzip: whether requests
	// to Temporal are compressed. A notification's requests carry ids and a
	// few fields, and on a local network gzip costs both ends CPU on every
	// request (~6% of the worker's, measured: docs/PERFORMANCE.md) for
	// bytes that do not matter; over a slow link to Temporal Cloud, gzip.
	TemporalGRPCCompression string `env:"TEMPORAL_GRPC_COMPRESSION" envDefault:"none"`
}

// Load reads the .env file in the working directory, if there is one, then
// parses the environment; variables already set win over the file. A
// malformed value is an error naming its variable.
func Load() (Config, error) {
	if err := godotenv.Load(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("reading .env: %w", err)
	}
	return Parse(nil)
}

// Parse builds a Config from environ (the process environment when nil),
// without reading any file.
func Parse(environ map[string]string) (Config, error) {
	var cfg Config
	opts := env.Options{Environment: environ}
	if err := env.ParseWithOptions(&cfg, opts); err != nil {
		return Config{}, nameVariables(err)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	cfg.PublicBaseURL = strings.TrimRight(cfg.PublicBaseURL, "/")
	return cfg, nil
}

func (c Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("invalid %s: %s", name, fmt.Sprintf(format, args...)))
	}
	for name, raw := range map[string]string{
		"DATABASE_DSN":      c.DatabaseDSN,
		"RABBITMQ_URL":      c.RabbitMQURL,
		"REDIS_URL":         c.RedisURL,
		"WEBHOOK_SITE_URL":  c.WebhookSiteURL,
		"TEMPORAL_UI_URL":   c.TemporalUIURL,
		"RECEIPTS_BASE_URL": c.ReceiptsBaseURL,
	} {
		// The value is not echoed: these URLs may carry passwords.
		if u, err := url.Parse(raw); err != nil || u.Scheme == "" || u.Host == "" {
			bad(name, "is not an absolute URL (scheme://[user:password@]host[:port]/...)")
		}
	}
	positive := map[string]int{
		"DATABASE_MAX_CONNS":   int(c.DatabaseMaxConns),
		"RATE_LIMIT_PER_SEC":   c.RateLimitPerSec,
		"WORKER_CONCURRENCY":   c.WorkerConcurrency,
		"RETRY_MAX_ATTEMPTS":   c.RetryMaxAttempts,
		"OUTBOX_BATCH_SIZE":    c.OutboxBatchSize,
		"RETRY_SCAN_LIMIT":     c.RetryScanLimit,
		"RETENTION_BATCH_SIZE": c.RetentionBatchSize,
	}
	for name, v := range positive {
		if v <= 0 {
			bad(name, "%d must be greater than 0", v)
		}
	}
	durations := map[string]time.Duration{
		"WEBHOOK_TIMEOUT":        c.WebhookTimeout,
		"RETRY_INITIAL_INTERVAL": c.RetryInitialInterval,
		"RETRY_MAX_INTERVAL":     c.RetryMaxInterval,
		"OUTBOX_POLL_INTERVAL":   c.OutboxPollInterval,
		"RETRY_SCAN_INTERVAL":    c.RetryScanInterval,
		"RECONCILE_AFTER":        c.ReconcileAfter,
		"SHUTDOWN_TIMEOUT":       c.ShutdownTimeout,
	}
	for name, d := range durations {
		if d <= 0 {
			bad(name, "%s must be greater than 0", d)
		}
	}
	if c.RetentionPeriod < 0 {
		bad("RETENTION_PERIOD", "%s must not be negative (empty or 0 keeps every notification)", c.RetentionPeriod)
	}
	if c.RetryMaxInterval < c.RetryInitialInterval {
		bad("RETRY_MAX_INTERVAL", "%s is below RETRY_INITIAL_INTERVAL %s", c.RetryMaxInterval, c.RetryInitialInterval)
	}
	if c.RetryBackoffCoefficient < 1 {
		bad("RETRY_BACKOFF_COEFFICIENT", "%g must be at least 1", c.RetryBackoffCoefficient)
	}
	for name, v := range map[string]int{"RATE_LIMIT_SMS": c.RateLimitSMS, "RATE_LIMIT_EMAIL": c.RateLimitEmail, "RATE_LIMIT_PUSH": c.RateLimitPush} {
		if v < 0 {
			bad(name, "%d must not be negative (0 uses RATE_LIMIT_PER_SEC)", v)
		}
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("PUBLIC_BASE_URL", "is not an absolute http(s) URL, e.g. https://notify.example.com")
		case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
			// The value is not echoed: it would carry what it must not.
			bad("PUBLIC_BASE_URL", "must carry no credentials, query or fragment: it is the base of links in every email")
		}
	}
	if c.UnsubscribeMailto != "" {
		if a, err := mail.ParseAddress(c.UnsubscribeMailto); err != nil || a.Address != c.UnsubscribeMailto || strings.ContainsAny(a.Address, "?&<>, ") {
			bad("UNSUBSCRIBE_MAILTO", "%q is not a bare email address, e.g. unsubscribe@notify.example.com", c.UnsubscribeMailto)
		}
	}
	if c.OrderingMaxHold <= 0 || c.OrderingMaxHold > 24*time.Hour {
		bad("ORDERING_MAX_HOLD", "must be above 0 and at most 24h, e.g. 5m")
	}
	if c.WebhookSigningSecret != "" {
		if _, err := DecodeSigningSecret(c.WebhookSigningSecret); err != nil {
			bad("WEBHOOK_SIGNING_SECRET", "%v", err)
		}
	}
	for _, k := range c.APIKeys {
		if len(strings.TrimSpace(k)) < 16 {
			bad("API_KEYS", "every key must be at least 16 characters")
			break
		}
		if placeholder(k) {
			// The key is not echoed; the placeholder's marker is.
			bad("API_KEYS", "a key still holds the placeholder %q of a template (deploy/k8s/secret.yaml): set real, random keys", placeholderMarker)
			break
		}
	}
	for name, port := range map[string]int{"API_PORT": c.APIPort, "WORKER_METRICS_PORT": c.WorkerMetricsPort,
		"API_PPROF_PORT": c.APIPprofPort, "WORKER_PPROF_PORT": c.WorkerPprofPort} {
		if port < 0 || port > 65535 {
			bad(name, "%d is not a TCP port", port)
		}
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "%q is not json or console", c.LogFormat)
	}
	if c.TemporalAddress == "" {
		bad("TEMPORAL_ADDRESS", "must not be empty")
	}
	if c.TemporalGRPCCompression != "none" && c.TemporalGRPCCompression != "gzip" {
		bad("TEMPORAL_GRPC_COMPRESSION", "%q is not none or gzip", c.TemporalGRPCCompression)
	}
	if c.TemporalNamespace == "" {
		bad("TEMPORAL_NAMESPACE", "must not be empty")
	}
	if (c.TemporalTLSCert == "") != (c.TemporalTLSKey == "") {
		bad("TEMPORAL_TLS_CERT", "and TEMPORAL_TLS_KEY go together: set both or neither")
	}
	return errors.Join(errs...)
}

// placeholderMarker marks a value a template ships for the operator to
// replace (deploy/k8s/secret.yaml); a key holding it is published, not secret.
const placeholderMarker = "change-me"

func placeholder(v string) bool {
	return strings.Contains(strings.ToLower(v), placeholderMarker)
}

// nameVariables rewrites env's parse errors, which name struct fields, to name
// the environment variables a user actually sets.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[Config]()
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				errs = append(errs, fmt.Errorf("invalid %s: %w", name, pe.Err))
				continue
			}
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// RateLimits returns each channel's per-second delivery limit.
func (c Config) RateLimits() map[string]int {
	pick := func(override int) int {
		if override > 0 {
			return override
		}
		return c.RateLimitPerSec
	}
	return map[string]int{"sms": pick(c.RateLimitSMS), "email": pick(c.RateLimitEmail), "push": pick(c.RateLimitPush)}
}

// DecodeSigningSecret decodes a Standard Webhooks secret: "whsec_" followed
// by the base64 key (24 to 64 bytes).
func DecodeSigningSecret(secret string) ([]byte, error) {
	raw, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, errors.New(`must be "whsec_" followed by base64`)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("key must be 24 to 64 bytes, got %d", len(key))
	}
	return key, nil
}
