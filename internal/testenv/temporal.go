package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
)

// Temporal is a Temporal server for tests.
type Temporal struct {
	Address   string
	Namespace string
	server    *testsuite.DevServer
}

// StartTemporal returns the Temporal server at TEST_TEMPORAL_ADDRESS
// (default 127.0.0.1:7233) when one answers there, and otherwise starts a
// dev server from the pinned CLI (TEMPORAL_CLI, default .tools/bin/temporal,
// built by `make temporal-cli`) with the SDK's dev-server helper. Call Stop
// when done. It is meant for TestMain.
func StartTemporal(ctx context.Context) (*Temporal, error) {
	addr := envOr("TEST_TEMPORAL_ADDRESS", "127.0.0.1:7233")
	if conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err == nil {
		_ = conn.Close()
		return &Temporal{Address: addr, Namespace: "default"}, nil
	}
	cli, err := TemporalCLI()
	if err != nil {
		return nil, fmt.Errorf("no Temporal server at %s: %w", addr, err)
	}
	server, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  cli,
		ClientOptions: &client.Options{Namespace: "default"},
		LogLevel:      "error",
		SearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword("NotificationStatus").ValueSet(""),
			temporal.NewSearchAttributeKeyKeyword("NotificationChannel").ValueSet(""),
			temporal.NewSearchAttributeKeyKeyword("NotificationPriority").ValueSet(""),
			temporal.NewSearchAttributeKeyInt64("NotificationAttempts").ValueSet(0),
			temporal.NewSearchAttributeKeyKeyword("NotificationBatchId").ValueSet(""),
			temporal.NewSearchAttributeKeyKeyword("NotificationProvider").ValueSet(""),
			temporal.NewSearchAttributeKeyKeyword("NotificationTenant").ValueSet(""),
		),
		ExtraArgs: []string{
			"--dynamic-config-value", "matching.useNewMatcher=true",
			"--dynamic-config-value", "matching.enableFairness=true",
			"--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
			"--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
			"--headless",
		},
		Stdout: os.Stderr,
		Stderr: os.Stderr,
	})
	if err != nil {
		return nil, fmt.Errorf("starting Temporal dev server: %w", err)
	}
	return &Temporal{Address: server.FrontendHostPort(), Namespace: "default", server: server}, nil
}

// TemporalCLI is the pinned Temporal CLI: TEMPORAL_CLI, or .tools/bin/temporal.
func TemporalCLI() (string, error) {
	cli := os.Getenv("TEMPORAL_CLI")
	if cli == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		cli = filepath.Join(root, ".tools", "bin", "temporal")
	}
	if _, err := os.Stat(cli); err != nil {
		return "", fmt.Errorf("no Temporal CLI at %s: run `make temporal-cli` (or make test, which does)", cli)
	}
	return cli, nil
}

// Stop stops the dev server if this process started it.
func (t *Temporal) Stop() {
	if t.server != nil {
		_ = t.server.Stop()
	}
}
