package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startRedis runs a Redis of the test's own on a free port.
func startRedis(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func readiness(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer func() { _ = resp.Body.Close() }()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestAPIStaysReadyWhileRedisIsDownAndReportsIt(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed to stop and start a Redis of the test's own: %v", err)
	}
	s := setup(t)
	port := freePort(t)
	redis := startRedis(t, port)
	s.api.Stop()
	s.worker.Stop()
	s.env = append(s.env, "REDIS_URL=redis://127.0.0.1:"+strconv.Itoa(port)+"/0")
	s.api = s.start("api")
	s.worker = s.start("worker")
	workerReady := "http://127.0.0.1:" + s.envValue("WORKER_METRICS_PORT") + "/readyz"
	s.waitReady(s.apiURL + "/readyz")
	s.waitReady(workerReady)

	require.NoError(t, redis.Process.Kill())
	_ = redis.Wait()
	for _, url := range []string{s.apiURL + "/readyz", workerReady} {
		var body map[string]any
		require.Eventually(t, func() bool {
			var code int
			code, body = readiness(t, url)
			return code == http.StatusOK && body["status"] == "degraded"
		}, 10*time.Second, 100*time.Millisecond, "%s: Redis is reported, not required; last %v", url, func() any { return body })
		checks, _ := body["checks"].(map[string]any)
		require.Equal(t, "unavailable", checks["redis"])
		require.Equal(t, "ok", checks["postgres"])
	}
	// Accepting goes on.
	code, _, _ := s.post("/v1/notifications", map[string]any{"channel": "sms", "recipient": "+14155550100", "content": "still accepting"})
	require.Equal(t, http.StatusAccepted, code)

	startRedis(t, port)
	require.Eventually(t, func() bool {
		code, body := readiness(t, s.apiURL+"/readyz")
		return code == http.StatusOK && body["status"] == "ok"
	}, 15*time.Second, 100*time.Millisecond, "/readyz never reported Redis back")
}

func TestAPIIsNotReadyWhilePostgresDoesNotAnswer(t *testing.T) {
	s := setup(t)
	proxy := s.proxyPostgres("api")
	s.waitReady(s.apiURL + "/readyz")

	proxy.Partition()
	var body map[string]any
	require.Eventually(t, func() bool {
		var code int
		code, body = readiness(t, s.apiURL+"/readyz")
		return code == http.StatusServiceUnavailable
	}, 15*time.Second, 100*time.Millisecond, "a database that hangs makes the API unready")
	require.Equal(t, "unavailable: postgres", body["detail"])
	require.Equal(t, "unavailable", body["checks"].(map[string]any)["postgres"], "a state, not the error: no addresses in the answer")

	proxy.Heal()
	s.waitReady(s.apiURL + "/readyz")
}
