//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cancelRetryLimit is the sms rate of the cancel-then-retry scenario: half
// what the stream sends the channel (~20/s), so a backlog of sms waits,
// QUEUED, with its first runs open.
const cancelRetryLimit = "RATE_LIMIT_SMS=10"

// TestCancelThenRetryUnderASaturatedChannel: while sms is saturated, the
// latest notifications are cancelled and at once retried, with the worker
// paused for the moment it takes (slow to take workflow tasks: the first
// runs are still open when the retries commit). Every retry answered 202
// is delivered, exactly once; the first runs neither cancel nor send it.
func TestCancelThenRetryUnderASaturatedChannel(t *testing.T) {
	var retried []string
	s, _, r := scenario(t, "cancel then retry, sms saturated", func(s *stack) {
		require.Eventually(t, func() bool { // the sms backlog builds
			var waiting int
			err := s.pool.QueryRow(context.Background(),
				`SELECT count(*) FROM notifications WHERE channel = 'sms' AND status IN ('ACCEPTED', 'QUEUED')`).Scan(&waiting)
			return err == nil && waiting >= 10
		}, time.Minute, 50*time.Millisecond, "sms never saturated")
		s.worker.Pause()
		for _, id := range s.stream.latest(40) {
			if s.action(id, "cancel") != "CANCELLED" {
				continue // delivered or in flight already
			}
			if s.action(id, "retry") == "ACCEPTED" {
				retried = append(retried, id)
			}
		}
		s.worker.Resume()
	}, cancelRetryLimit)

	require.NotEmpty(t, retried, "some waiting notifications were cancelled and retried")
	t.Logf("%d notifications cancelled then retried", len(retried))
	for _, id := range retried {
		var status string
		var generation int
		require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT status, generation FROM notifications WHERE id = $1`, id).
			Scan(&status, &generation))
		require.Equal(t, "DELIVERED", status, "%s: a retry answered 202 is delivered", id)
		require.Equal(t, 1, generation)
		rec, ok := s.sink.Record(id)
		require.True(t, ok)
		require.Equal(t, 1, rec.Delivered, "%s reached the provider once", id)
	}
	require.Zero(t, r.Duplicates, "no notification reached the provider twice")
}

// action POSTs /v1/notifications/{id}/{verb} and answers the status of the
// notification in a 2xx answer ("" otherwise: a conflict, say, when it was
// delivered already, or a 503 when its row stayed locked by a transaction
// of the paused worker until the API's request timeout).
func (s *stack) action(id, verb string) string {
	req, err := http.NewRequest(http.MethodPost, s.apiURL+"/v1/notifications/"+id+"/"+verb, nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	// Longer than the API's own 10 s request timeout, so its answer arrives.
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	require.NoError(s.t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Contains(s.t, []int{http.StatusOK, http.StatusAccepted, http.StatusConflict, http.StatusServiceUnavailable},
		resp.StatusCode, "%s %s", verb, id)
	if resp.StatusCode/100 != 2 {
		return ""
	}
	var n struct {
		Status string `json:"status"`
	}
	require.NoError(s.t, json.NewDecoder(resp.Body).Decode(&n))
	return n.Status
}
