//go:build chaos

package chaos

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// silentRedis is how long Redis drops every packet in the scenario.
const silentRedis = 6 * time.Second

// quotaSlowdown is the most a silent Redis may add to an answer for a
// tenant with quotas: the quota is skipped within it, as documented.
const quotaSlowdown = 250 * time.Millisecond

// TestRedisSilentWithAQuotaTenant: Redis stops answering (packets dropped)
// while a tenant with acceptance quotas (too large to refuse anything here)
// streams notifications. Its quota is skipped, as documented, and each
// answer is at most 250 ms slower than before Redis went silent: the API's
// shared slots are not held for seconds per request, nothing is refused,
// and the promise holds.
func TestRedisSilentWithAQuotaTenant(t *testing.T) {
	perSec, perDay := 100_000, 100_000_000
	var before time.Duration
	var during []time.Duration
	_, _, r := keyedScenario(t, "redis silent, quota tenant", &store.TenantSettings{AcceptPerSec: &perSec, AcceptPerDay: &perDay}, func(s *stack) {
		for i := range 20 { // the answer time with Redis answering, under the same stream
			code, d := s.stream.probe(s, s.apiKey)
			require.Equal(t, http.StatusAccepted, code, "probe %d before the fault", i)
			before = max(before, d)
		}
		s.proxies["redis"].Partition()
		until := time.Now().Add(silentRedis)
		for i := 0; time.Now().Before(until); i++ {
			code, d := s.stream.probe(s, s.apiKey)
			require.Equal(t, http.StatusAccepted, code, "probe %d while Redis is silent", i)
			require.LessOrEqual(t, d, before+quotaSlowdown, "probe %d took %s; %s at most before Redis went silent", i, d, before)
			during = append(during, d)
		}
		s.proxies["redis"].Heal()
	})
	require.NotEmpty(t, during)
	t.Logf("slowest answer before the fault %s; %d answers while Redis was silent, slowest %s", before, len(during), slowest(during))
	require.Zero(t, r.Refused, "no request was refused: the quota tenant's requests do not hold the shared slots")
	require.Zero(t, r.ClientErrs, "every request was answered")
	require.Zero(t, r.Failed, "a partition fails nothing")
	require.Zero(t, r.Duplicates, "the provider answered no notification twice")
}

func slowest(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
