//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// keyedScenario is scenario with the stream sent under a stored key of a
// tenant of its own (as `dispatchctl keys create` makes one), with
// settings (its quotas) when given, instead of a key of API_KEYS.
func keyedScenario(t *testing.T, name string, settings *store.TenantSettings, fault func(s *stack), extraEnv ...string) (*stack, *stream, result) {
	s := newStack(t, extraEnv...)
	ctx := context.Background()
	tenant := testenv.Name("chaos-")
	key, _, err := store.CreateAPIKey(ctx, s.pool, tenant, "chaos", nil)
	require.NoError(t, err)
	if settings != nil {
		_, err = store.SetTenant(ctx, s.pool, tenant, *settings)
		require.NoError(t, err)
	}
	s.apiKey = key
	return s.play(name, fault)
}

// probeNumber numbers the probes' notifications apart from the stream's.
var probeNumber atomic.Int64

// probe posts one notification with key, as the stream does (the answer
// counts in the stream's codes, an accepted notification in its ids, so
// the scenario's checks cover it), and returns the status and how long the
// answer took. A request with no answer within 30 s fails the test.
func (st *stream) probe(s *stack, key string) (int, time.Duration) {
	s.t.Helper()
	raw, err := json.Marshal(item(1_000_000 + int(probeNumber.Add(1))))
	require.NoError(s.t, err)
	req, err := http.NewRequest(http.MethodPost, s.apiURL+"/v1/notifications", bytes.NewReader(raw))
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	st.sent.Add(1)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(s.t, err, "a probe got no answer")
	defer func() { _ = resp.Body.Close() }()
	var answer struct {
		ID string `json:"id"`
	}
	decodeErr := json.NewDecoder(resp.Body).Decode(&answer)
	took := time.Since(start)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.codes[resp.StatusCode]++
	if resp.StatusCode/100 == 2 && decodeErr == nil && answer.ID != "" {
		st.accepted = append(st.accepted, answer.ID)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		require.NotEmpty(s.t, resp.Header.Get("Retry-After"), "a 503 carries Retry-After")
	}
	return resp.StatusCode, took
}

// silentPostgres is how long PostgreSQL drops every packet in the scenario.
const silentPostgres = 8 * time.Second

// TestPostgresSilentWhileStoredKeysArrive: PostgreSQL stops answering
// (packets dropped, connections held open, nothing refused) while requests
// with stored keys keep arriving. Authentication asks PostgreSQL, so each
// such request is answered 503 with Retry-After within 2 s, both for a key
// used a moment ago and for one never seen; none hangs until the partition
// heals; and the promise holds once it has.
func TestPostgresSilentWhileStoredKeysArrive(t *testing.T) {
	var took []time.Duration
	_, _, r := keyedScenario(t, "postgres silent, stored keys", nil, func(s *stack) {
		fresh, _, err := store.CreateAPIKey(context.Background(), s.pool, testenv.Name("chaos-fresh-"), "chaos", nil)
		require.NoError(t, err)
		s.proxies["postgres"].Partition()
		until := time.Now().Add(silentPostgres)
		for i := 0; time.Now().Before(until); i++ {
			key := s.apiKey
			if i%3 == 2 {
				key = fresh
			}
			code, d := s.stream.probe(s, key)
			require.Equal(t, http.StatusServiceUnavailable, code, "probe %d while PostgreSQL is silent", i)
			require.Less(t, d, 2*time.Second, "probe %d answered after %s", i, d)
			took = append(took, d)
		}
		s.proxies["postgres"].Heal()
	})
	require.NotEmpty(t, took)
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("%d probes while PostgreSQL was silent: median %s, slowest %s", len(took), took[len(took)/2], took[len(took)-1])
	require.Positive(t, r.Refused, "requests were refused while PostgreSQL was silent")
	require.Zero(t, r.ClientErrs, "every request of the stream was answered")
	require.Zero(t, r.Failed, "a partition fails nothing")
	require.Zero(t, r.Duplicates, "the provider answered no notification twice")
}
