package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
)

// TestRefusesToStartWithoutAPIKeys: with API_KEYS empty and no key in the
// database, /v1/* could never be used; the API says so instead of starting.
func TestRefusesToStartWithoutAPIKeys(t *testing.T) {
	t.Setenv("API_KEYS", "")
	t.Setenv("DATABASE_DSN", testenv.Database(t))
	err := run()
	require.ErrorContains(t, err, "no API key")
}

// TestLinksNoWorkerCode: the API starts workflows and signals them, but the
// worker's code (the activities, the consumer's starter and the providers'
// senders behind them) is not in its binary.
func TestLinksNoWorkerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	for _, worker := range []string{"github.com/dispatch-engine/dispatch-engine/activities", "github.com/dispatch-engine/dispatch-engine/internal/dispatch"} {
		require.NotContains(t, deps, worker)
	}
}

// TestLoadsTheSharedUnsubscribeSecretAndSaysWhenLinksAreOff: the API opens
// tokens a worker signed (one secret in the database), and says at start
// that emails carry no unsubscribe link while PUBLIC_BASE_URL is empty.
func TestLoadsTheSharedUnsubscribeSecretAndSaysWhenLinksAreOff(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	worker, err := unsubscribe.Load(ctx, pool)
	require.NoError(t, err)
	token := worker.Sign(unsubscribe.Token{TenantID: uuid.New(), Channel: "email", Address: "ada@example.com", Category: "news"})

	core, logged := observer.New(zap.InfoLevel)
	api, err := loadUnsubscribe(ctx, config.Config{}, pool, zap.New(core))
	require.NoError(t, err)
	_, err = api.Verify(token)
	require.NoError(t, err)
	require.Equal(t, 1, logged.FilterMessage("PUBLIC_BASE_URL is not set: emails carry no List-Unsubscribe header").Len())

	core, logged = observer.New(zap.InfoLevel)
	_, err = loadUnsubscribe(ctx, config.Config{PublicBaseURL: "https://notify.example.com"}, pool, zap.New(core))
	require.NoError(t, err)
	require.Zero(t, logged.Len())
}
