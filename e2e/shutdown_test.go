package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSIGTERMDuringABurstLosesNothing stops the worker and then the API
// gracefully while notifications pour in: every notification that got a 2xx
// is delivered, each exactly once.
func TestSIGTERMDuringABurstLosesNothing(t *testing.T) {
	s := setup(t)
	const clients, perClient = 4, 40

	var (
		mu       sync.Mutex
		accepted []string
		sent     atomic.Int64
	)
	post := func() {
		body, _ := json.Marshal(smsRequest("burst"))
		req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/v1/notifications", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
		sent.Add(1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the API was stopping: not accepted
		}
		defer func() { _ = resp.Body.Close() }()
		var n struct {
			ID string `json:"id"`
		}
		if resp.StatusCode == http.StatusAccepted && json.NewDecoder(resp.Body).Decode(&n) == nil {
			mu.Lock()
			accepted = append(accepted, n.ID)
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range perClient {
				post()
			}
		})
	}
	require.Eventually(t, func() bool { return sent.Load() >= 40 }, 30*time.Second, 5*time.Millisecond)
	s.worker.Stop() // SIGTERM mid-burst: stops consuming, finishes in-flight work
	require.Eventually(t, func() bool { return sent.Load() >= 100 }, 30*time.Second, 5*time.Millisecond)
	s.api.Stop() // SIGTERM: in-flight requests finish; later ones fail at the client
	wg.Wait()

	s.api = s.start("api")
	s.worker = s.start("worker")
	s.waitReady(s.apiURL + "/readyz")

	mu.Lock()
	ids := append([]string(nil), accepted...)
	mu.Unlock()
	require.NotEmpty(t, ids)
	t.Logf("%d sent, %d accepted", sent.Load(), len(ids))
	for _, id := range ids {
		s.waitStatus(id, "DELIVERED", 60*time.Second)
		rec, ok := s.sink.Record(id)
		require.True(t, ok, "%s never reached the provider", id)
		require.Equal(t, 1, rec.Delivered, "%s delivered %d times", id, rec.Delivered)
	}
}
