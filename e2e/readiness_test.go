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
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestReadinessNamesRedisWhileItIsDownAndRecovers(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed to stop and start a Redis of the test's own: %v", err)
	}
	s := setup(t)
	port := freePort(t)
	redis := startRedis(t, port)
	s.api.Stop()
	s.env = append(s.env, "REDIS_URL=redis://127.0.0.1:"+strconv.Itoa(port)+"/0")
	s.api = s.start("api")
	s.waitReady(s.apiURL + "/readyz")

	require.NoError(t, redis.Process.Kill())
	_ = redis.Wait()
	var body map[string]any
	require.Eventually(t, func() bool {
		var code int
		code, body = readiness(t, s.apiURL+"/readyz")
		return code == http.StatusServiceUnavailable
	}, 10*time.Second, 100*time.Millisecond)
	require.Contains(t, body["detail"], "redis")
	checks, _ := body["checks"].(map[string]any)
	require.Equal(t, "ok", checks["postgres"])

	startRedis(t, port)
	require.Eventually(t, func() bool {
		code, _ := readiness(t, s.apiURL+"/readyz")
		return code == http.StatusOK
	}, 15*time.Second, 100*time.Millisecond, "/readyz never recovered after Redis came back")
}
