package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
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
