package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRefusesToStartWithoutAPIKeys(t *testing.T) {
	t.Setenv("API_KEYS", "")
	err := run()
	require.ErrorContains(t, err, "API_KEYS is empty")
}

// TestLinksNoWorkerCode: the API starts workflows and signals them, but the
// worker's code (the activities, the consumer's starter and the providers'
// senders behind them) is not in its binary.
func TestLinksNoWorkerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	for _, worker := range []string{"dispatch-engine/activities", "dispatch-engine/internal/dispatch"} {
		require.NotContains(t, deps, worker)
	}
}
