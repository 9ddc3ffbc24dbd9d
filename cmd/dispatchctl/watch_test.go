package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

func TestWatchPrintsEachStatusChangeUntilTerminal(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	// What each GET answers: the same state twice in a row prints once.
	states := []func(n *client.Notification){
		func(n *client.Notification) { n.Status = client.StatusQUEUED },
		func(n *client.Notification) { n.Status = client.StatusQUEUED },
		func(n *client.Notification) { n.Status, n.Attempts = client.StatusPROCESSING, 1 },
		func(n *client.Notification) {
			n.Status, n.Attempts = client.StatusRETRYING, 1
			n.LastError, n.NextAttemptAt = ptr("provider answered 503"), ptr(t0.Add(2*time.Second))
		},
		func(n *client.Notification) {
			n.Status, n.Attempts = client.StatusRETRYING, 1
			n.LastError = ptr("provider answered 503")
		},
		func(n *client.Notification) { n.Status, n.Attempts = client.StatusPROCESSING, 2 },
		func(n *client.Notification) { n.Status, n.Attempts, n.DeliveredAt = client.StatusDELIVERED, 2, &t0 },
	}
	var gets atomic.Int32
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		i := int(gets.Add(1)) - 1
		require.Less(t, i, len(states), "read again after it was terminal")
		n := notification(id, client.StatusQUEUED)
		n.UpdatedAt = t0.Add(time.Duration(i) * time.Second)
		states[i](&n)
		answer(w, http.StatusOK, n)
	})

	res := f.dispatchctl("watch", id.String())

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Equal(t, `2026-01-02T15:04:05.123Z  QUEUED      attempts=0
2026-01-02T15:04:07.123Z  PROCESSING  attempts=1
2026-01-02T15:04:08.123Z  RETRYING    attempts=1  next=2026-01-02T15:04:07.123Z  error=provider answered 503
2026-01-02T15:04:10.123Z  PROCESSING  attempts=2
2026-01-02T15:04:11.123Z  DELIVERED   attempts=2
`, res.stdout)
}

func TestWatchOfAFailedNotificationExitsOneAndJSONIsALinePerState(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	var gets atomic.Int32
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		status := client.StatusRETRYING
		if gets.Add(1) > 1 {
			status = client.StatusFAILED
		}
		answer(w, http.StatusOK, notification(id, status))
	})

	res := f.dispatchctl("watch", "--json", id.String())

	assert.Equal(t, app.ExitFailed, res.code)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 2)
	for i, want := range []client.Status{client.StatusRETRYING, client.StatusFAILED} {
		var n client.Notification
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &n))
		assert.Equal(t, want, n.Status)
	}
	got := requireJSONFailure(t, res, app.ExitFailed, "outcome")
	assert.Equal(t, "notification "+id.String()+" ended FAILED (exhausted): provider answered 503", got.Error.Message)
}

func TestWatchBatchFollowsTheSummaryUntilEveryNotificationIsTerminal(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	rounds := []func(s *client.BatchSummary_ByStatus){
		func(s *client.BatchSummary_ByStatus) { s.ACCEPTED = 300 },
		func(s *client.BatchSummary_ByStatus) { s.QUEUED, s.PROCESSING, s.DELIVERED = 100, 20, 180 },
		func(s *client.BatchSummary_ByStatus) { s.QUEUED, s.PROCESSING, s.DELIVERED = 100, 20, 180 },
		func(s *client.BatchSummary_ByStatus) { s.DELIVERED, s.FAILED, s.CANCELLED = 295, 3, 2 },
	}
	var gets atomic.Int32
	f.handle("GET /v1/batches/{batchId}", func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, id.String(), r.PathValue("batchId"))
		i := int(gets.Add(1)) - 1
		require.Less(t, i, len(rounds))
		answer(w, http.StatusOK, batchSummary(id, 300, rounds[i]))
	})

	res := f.dispatchctl("watch", "--batch", id.String())

	assert.Equal(t, app.ExitFailed, res.code, "not every one was DELIVERED")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 3, res.stdout)
	assert.Regexp(t, `^\S+Z  terminal 0/300  ACCEPTED=300$`, lines[0])
	assert.Regexp(t, `^\S+Z  terminal 180/300  QUEUED=100 PROCESSING=20 DELIVERED=180$`, lines[1])
	assert.Regexp(t, `^\S+Z  terminal 300/300  DELIVERED=295 FAILED=3 CANCELLED=2$`, lines[2])
	assert.Equal(t, "error: batch "+id.String()+": 5 of 300 did not end DELIVERED (FAILED=3 CANCELLED=2 SKIPPED=0)\n", res.stderr)
}

func TestWatchBatchAllDeliveredExitsZero(t *testing.T) {
	f := newFakeAPI(t)
	id := uuid.New()
	f.handle("GET /v1/batches/{batchId}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, batchSummary(id, 2, func(s *client.BatchSummary_ByStatus) { s.DELIVERED = 2 }))
	})
	res := f.dispatchctl("watch", "--batch", id.String(), "--json")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	var s client.BatchSummary
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &s))
	assert.Equal(t, 2, s.ByStatus.DELIVERED)
}

func TestInterruptedWatchExits130(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gets atomic.Int32
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		if gets.Add(1) == 2 {
			cancel() // Ctrl-C, while it waits for the next read
		}
		answer(w, http.StatusOK, notification(id, client.StatusSCHEDULED))
	})
	var stdout, stderr bytes.Buffer

	code := app.Main(ctx, app.Options{
		Args:   []string{"--url", f.srv.URL, "--api-key", "k", "--poll-interval", "1ms", "watch", id.String()},
		Stdout: &stdout, Stderr: &stderr, Dir: isolatedDir(t),
	})

	assert.Equal(t, app.ExitInterrupted, code)
	assert.Equal(t, "interrupted\n", stderr.String())
	assert.Contains(t, stdout.String(), "SCHEDULED")
}
