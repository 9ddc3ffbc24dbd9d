package dispatch_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/dispatch"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestSearchAttributesAreRegisteredOnceTemporalAnswers(t *testing.T) {
	cli, err := testenv.TemporalCLI()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	tc, err := client.NewLazyClient(client.Options{HostPort: addr, Namespace: "default"})
	require.NoError(t, err)
	t.Cleanup(tc.Close)

	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dispatch.RegisterSearchAttributes(ctx, tc, "default", zap.New(core)) }()

	// Nothing answers yet: the registration waits and retries.
	require.Eventually(t, func() bool { return logs.FilterMessage("could not register search attributes yet; retrying").Len() > 0 },
		30*time.Second, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned while Temporal was down: %v", err)
	default:
	}

	// A Temporal server without the attributes comes up on that address.
	server, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  cli,
		ClientOptions: &client.Options{HostPort: addr, Namespace: "default"},
		LogLevel:      "error",
		ExtraArgs:     []string{"--headless"},
		Stdout:        os.Stderr,
		Stderr:        os.Stderr,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Stop() })

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("the search attributes were never registered")
	}
	list, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: "default"})
	require.NoError(t, err)
	for _, name := range []string{"NotificationStatus", "NotificationChannel", "NotificationPriority", "NotificationAttempts", "NotificationBatchId", "NotificationProvider"} {
		require.Contains(t, list.GetCustomAttributes(), name)
	}
}
