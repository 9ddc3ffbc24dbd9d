package profiling_test

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/profiling"
)

// freePort is a port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

func get(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// TestServesTheProfilerOnLoopbackOnly: the profile index answers on
// 127.0.0.1 and the port is bound to no other address; stop closes it.
func TestServesTheProfilerOnLoopbackOnly(t *testing.T) {
	port := freePort(t)
	stop := profiling.Serve(port, zap.NewNop())
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/debug/pprof/"
	require.Eventually(t, func() bool { code, err := get(url); return err == nil && code == http.StatusOK }, 5*time.Second, 10*time.Millisecond)

	// From another of the host's addresses the port is closed.
	if ip := otherAddress(t); ip != nil {
		_, err := get("http://" + net.JoinHostPort(ip.String(), strconv.Itoa(port)) + "/debug/pprof/")
		require.Error(t, err, "the profiler answered on %s", ip)
	} else {
		t.Log("the host has no address but loopback: only loopback was checked")
	}

	stop()
	_, err := get(url)
	require.Error(t, err, "stopped")
}

// otherAddress is one of the host's IPv4 addresses that is not loopback,
// nil when it has none.
func otherAddress(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}
