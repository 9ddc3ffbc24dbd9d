package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// tenantKey makes a tenant and a key of it in the stack's database, as
// `dispatchctl keys create --tenant NAME` does.
func (s *stack) tenantKey(name string) string {
	s.t.Helper()
	pool, err := store.Connect(context.Background(), s.envValue("DATABASE_DSN"), 2)
	require.NoError(s.t, err)
	defer pool.Close()
	key, _, err := store.CreateAPIKey(context.Background(), pool, name, "e2e", nil)
	require.NoError(s.t, err)
	return key
}

// TestASmallTenantIsNotStuckBehindABigTenantsBacklog: tenant A queues a
// backlog of LOW push notifications on a channel limited to 20/s, then
// tenant B sends 20 LOW ones. Temporal's fairness keys (the tenant) share the
// channel: B's 20 reach the provider while most of A's backlog still waits,
// instead of after it. Measured at the provider (the sink).
func TestASmallTenantIsNotStuckBehindABigTenantsBacklog(t *testing.T) {
	s := setup(t)
	const limit, backlog, small = 20, 400, 20
	s.restartWorker("RATE_LIMIT_PUSH=20")
	bKey := s.tenantKey("tenant-b")
	arrivals := s.sink.Arrivals(2 * backlog)

	batch := func(key string, n int) []string {
		items := make([]map[string]any, n)
		for i := range items {
			items[i] = map[string]any{"channel": "push", "recipient": "device-token-0123456789", "content": "n", "priority": "LOW"}
		}
		raw, err := json.Marshal(map[string]any{"notifications": items})
		require.NoError(t, err)
		code, _, body := s.request(http.MethodPost, "/v1/notifications/batch", raw,
			"Content-Type", "application/json", "Authorization", "Bearer "+key)
		require.Equal(t, http.StatusAccepted, code, "body: %.300s", body)
		var answer struct {
			Notifications []struct {
				ID string `json:"id"`
			} `json:"notifications"`
		}
		require.NoError(t, json.Unmarshal(body, &answer))
		ids := make([]string, n)
		for i, nt := range answer.Notifications {
			ids[i] = nt.ID
		}
		return ids
	}
	for range backlog / 100 {
		batch(s.apiKey, 100)
	}
	// Let A's backlog reach the channel's task queue and saturate it.
	seenA := 0
	for seenA < limit {
		select {
		case <-arrivals:
			seenA++
		case <-time.After(30 * time.Second):
			t.Fatalf("A's backlog is not being delivered: %d arrived", seenA)
		}
	}
	bIDs := batch(bKey, small)
	isB := make(map[string]bool, small)
	for _, id := range bIDs {
		isB[id] = true
	}
	start := time.Now()
	aAfter, bSeen := 0, 0
	deadline := time.After(90 * time.Second)
	for bSeen < small {
		select {
		case id := <-arrivals:
			if isB[id] {
				bSeen++
			} else {
				aAfter++
			}
		case <-deadline:
			t.Fatalf("only %d of B's %d arrived (A: %d meanwhile)", bSeen, small, aAfter)
		}
	}
	took := time.Since(start)
	left := backlog - seenA - aAfter
	t.Logf("B's %d delivered in %s; meanwhile %d of A's; %d of A's %d still waiting", small, took.Round(10*time.Millisecond), aAfter, left, backlog)
	require.Greater(t, left, backlog/2, "B's notifications must not wait behind most of A's backlog")

	// The tenant is on the workflow, for the Temporal UI and visibility.
	desc, err := s.temporal.DescribeWorkflow(context.Background(), notification.WorkflowID(bIDs[0]), "")
	require.NoError(t, err)
	payload := desc.RawResponse.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()["NotificationTenant"]
	require.NotNil(t, payload, "the workflow carries NotificationTenant")
	var tenantName string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(payload, &tenantName))
	require.Equal(t, "tenant-b", strings.TrimSpace(tenantName))
}
