package config

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultsPointAtLoopbackServices(t *testing.T) {
	cfg, err := Parse(map[string]string{})
	require.NoError(t, err)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", cfg.RabbitMQURL)
	require.Equal(t, 8080, cfg.APIPort)
	require.Equal(t, 8081, cfg.WorkerMetricsPort)
	require.Equal(t, 100, cfg.RateLimitPerSec)
	require.Equal(t, 16, cfg.WorkerConcurrency)
	require.Equal(t, 8, cfg.RetryMaxAttempts)
	require.Equal(t, 2*time.Second, cfg.RetryInitialInterval)
	require.Equal(t, "127.0.0.1:7233", cfg.TemporalAddress)
	require.Equal(t, "default", cfg.TemporalNamespace)
}

func TestEnvironmentOverridesDefaults(t *testing.T) {
	cfg, err := Parse(map[string]string{"API_PORT": "9999", "RETRY_MAX_INTERVAL": "1m"})
	require.NoError(t, err)
	require.Equal(t, 9999, cfg.APIPort)
	require.Equal(t, time.Minute, cfg.RetryMaxInterval)
}

func TestMalformedValueNamesTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		"API_PORT":                  {"API_PORT": "eighty"},
		"RETRY_INITIAL_INTERVAL":    {"RETRY_INITIAL_INTERVAL": "soon"},
		"RATE_LIMIT_PER_SEC":        {"RATE_LIMIT_PER_SEC": "0"},
		"LOG_LEVEL":                 {"LOG_LEVEL": "loud"},
		"WEBHOOK_SITE_URL":          {"WEBHOOK_SITE_URL": "not a url"},
		"RETRY_BACKOFF_COEFFICIENT": {"RETRY_BACKOFF_COEFFICIENT": "0.5"},
		"TEMPORAL_GRPC_COMPRESSION": {"TEMPORAL_GRPC_COMPRESSION": "zstd"},
		"WORKER_PPROF_PORT":         {"WORKER_PPROF_PORT": "70000"},
	}
	for variable, environ := range cases {
		t.Run(variable, func(t *testing.T) {
			_, err := Parse(environ)
			require.Error(t, err)
			require.Contains(t, err.Error(), variable)
		})
	}
}

func TestErrorsNeverEchoSecrets(t *testing.T) {
	const secret = "hunter2-a-very-private-value"
	cases := map[string]map[string]string{
		"DATABASE_DSN":           {"DATABASE_DSN": "postgres//dispatch:" + secret + "@db/dispatch"},
		"RABBITMQ_URL":           {"RABBITMQ_URL": "amqp//guest:" + secret + "@mq/"},
		"REDIS_URL":              {"REDIS_URL": "redis//:" + secret + "@cache:6379/0"},
		"WEBHOOK_SITE_URL":       {"WEBHOOK_SITE_URL": "provider//hook:" + secret + "@example/hook"},
		"WEBHOOK_SIGNING_SECRET": {"WEBHOOK_SIGNING_SECRET": "whsec_" + secret + "!"},
		"API_KEYS":               {"API_KEYS": "short," + secret},
	}
	for variable, environ := range cases {
		t.Run(variable, func(t *testing.T) {
			_, err := Parse(environ)
			require.Error(t, err)
			require.Contains(t, err.Error(), variable)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestTheDeploymentTemplatesPlaceholderKeyIsRefused(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "secret.yaml"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s*API_KEYS:\s*(\S+)\s*$`).FindSubmatch(raw)
	require.NotNil(t, m, "deploy/k8s/secret.yaml sets API_KEYS")
	key := string(m[1])
	require.GreaterOrEqual(t, len(key), 16, "long enough to pass the length rule on its own")

	_, err = Parse(map[string]string{"API_KEYS": "a-real-random-key-0123456789," + key})
	require.Error(t, err, "a key copied from the template is published, not secret")
	require.Contains(t, err.Error(), "API_KEYS")
	require.NotContains(t, err.Error(), key)
}

func TestRetentionIsOffByDefault(t *testing.T) {
	cfg, err := Parse(map[string]string{})
	require.NoError(t, err)
	require.Zero(t, cfg.RetentionPeriod)
	require.Equal(t, 500, cfg.RetentionBatchSize)
	for _, off := range []string{"", "0", "0s"} {
		cfg, err := Parse(map[string]string{"RETENTION_PERIOD": off})
		require.NoError(t, err, "%q", off)
		require.Zero(t, cfg.RetentionPeriod, "%q", off)
	}
}

func TestRetentionPeriodIsAGoDuration(t *testing.T) {
	cfg, err := Parse(map[string]string{"RETENTION_PERIOD": "720h", "RETENTION_BATCH_SIZE": "1000"})
	require.NoError(t, err)
	require.Equal(t, 30*24*time.Hour, cfg.RetentionPeriod)
	require.Equal(t, 1000, cfg.RetentionBatchSize)
}

func TestBadRetentionValuesAreRefusedByName(t *testing.T) {
	cases := map[string]map[string]string{
		"negative period":     {"RETENTION_PERIOD": "-1h"},
		"period without unit": {"RETENTION_PERIOD": "720"},
		"period in days":      {"RETENTION_PERIOD": "30d"},
		"zero batch size":     {"RETENTION_BATCH_SIZE": "0"},
		"negative batch size": {"RETENTION_BATCH_SIZE": "-5"},
		"batch size a word":   {"RETENTION_BATCH_SIZE": "many"},
	}
	for name, environ := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(environ)
			require.Error(t, err)
			for variable := range environ {
				require.Contains(t, err.Error(), variable)
			}
		})
	}
}

func TestUnsubscribeLinksAreOffByDefault(t *testing.T) {
	cfg, err := Parse(map[string]string{})
	require.NoError(t, err)
	require.Empty(t, cfg.PublicBaseURL)
	require.Empty(t, cfg.UnsubscribeMailto)
}

func TestPublicBaseURLLosesItsTrailingSlash(t *testing.T) {
	for raw, want := range map[string]string{
		"https://notify.example.com":            "https://notify.example.com",
		"https://notify.example.com/":           "https://notify.example.com",
		"http://127.0.0.1:8080/":                "http://127.0.0.1:8080",
		"https://example.com/dispatch//":        "https://example.com/dispatch",
		"https://example.com:8443/dispatch/api": "https://example.com:8443/dispatch/api",
	} {
		cfg, err := Parse(map[string]string{"PUBLIC_BASE_URL": raw, "UNSUBSCRIBE_MAILTO": "unsubscribe@notify.example.com"})
		require.NoError(t, err, raw)
		require.Equal(t, want, cfg.PublicBaseURL, raw)
		require.Equal(t, "unsubscribe@notify.example.com", cfg.UnsubscribeMailto)
	}
}

func TestBadUnsubscribeSettingsAreRefusedByName(t *testing.T) {
	cases := map[string]map[string]string{
		"relative base":       {"PUBLIC_BASE_URL": "/u"},
		"host only":           {"PUBLIC_BASE_URL": "notify.example.com"},
		"another scheme":      {"PUBLIC_BASE_URL": "ftp://notify.example.com"},
		"no host":             {"PUBLIC_BASE_URL": "https://"},
		"a query":             {"PUBLIC_BASE_URL": "https://notify.example.com/?x=1"},
		"a fragment":          {"PUBLIC_BASE_URL": "https://notify.example.com/#top"},
		"credentials":         {"PUBLIC_BASE_URL": "https://user:pw@notify.example.com"},
		"mailto not address":  {"UNSUBSCRIBE_MAILTO": "unsubscribe"},
		"mailto display name": {"UNSUBSCRIBE_MAILTO": "Unsubscribe <unsubscribe@example.com>"},
		"mailto with a query": {"UNSUBSCRIBE_MAILTO": "unsubscribe@example.com?subject=x"},
		"mailto with a URL":   {"UNSUBSCRIBE_MAILTO": "mailto:unsubscribe@example.com"},
	}
	for name, environ := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(environ)
			require.Error(t, err)
			for variable := range environ {
				require.Contains(t, err.Error(), variable)
			}
			require.NotContains(t, err.Error(), "pw@", "credentials are not echoed")
		})
	}
}
