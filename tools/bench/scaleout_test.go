package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCounterOfSumsAWorkersAttemptsOnAChannel(t *testing.T) {
	// As the worker's /metrics shows dispatch_delivery_attempts_total
	// (internal/metrics: channel, outcome, provider).
	page := "# HELP dispatch_delivery_attempts_total Delivery attempts by channel, outcome class and provider.\n" +
		"# TYPE dispatch_delivery_attempts_total counter\n" +
		"dispatch_delivery_attempts_total{channel=\"sms\",outcome=\"delivered\",provider=\"sms-primary\"} 120\n" +
		"dispatch_delivery_attempts_total{channel=\"sms\",outcome=\"retry\",provider=\"sms-primary\"} 3\n" +
		"dispatch_delivery_attempts_total{channel=\"email\",outcome=\"delivered\",provider=\"email-primary\"} 50\n" +
		"# TYPE go_goroutines gauge\ngo_goroutines 40\n"
	u := promServer(t, http.StatusOK, page)
	for _, tc := range []struct {
		name, counter, channel string
		want                   float64
	}{
		{"every channel", "dispatch_delivery_attempts_total", "", 173},
		{"one channel, every outcome", "dispatch_delivery_attempts_total", "sms", 123},
		{"a channel without attempts yet", "dispatch_delivery_attempts_total", "push", 0},
		{"a counter the page does not have", "dispatch_nothing_total", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := counterOf(context.Background(), u, tc.counter, tc.channel)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	_, err := counterOf(context.Background(), promServer(t, http.StatusNotFound, ""), "dispatch_delivery_attempts_total", "")
	require.ErrorContains(t, err, "404 Not Found")
}

func TestMaxInWindowIsTheBusiestWindow(t *testing.T) {
	ms := func(n ...int) []time.Time {
		out := make([]time.Time, len(n))
		for i, v := range n {
			out[i] = at(v)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Time
		want   int
	}{
		{"a window's end is outside it", ms(0, 500, 900, 1000, 1500), 3},
		{"a burst later on", ms(0, 2000, 2100, 2200, 2300, 2999), 5},
		{"all at once", ms(7, 7, 7), 3},
		{"one", ms(0), 1},
		{"none", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, maxInWindow(tc.sorted, time.Second))
		})
	}
}

func TestDuplicatesInCountsSecondRequestsAndSecondSuccesses(t *testing.T) {
	require.Equal(t, 2, duplicatesIn(map[string]sinkRecord{
		"once":    {Requests: 1, Delivered: 1},
		"retried": {Requests: 2, Delivered: 1},
		"twice":   {Requests: 2, Delivered: 2},
		"failed":  {Requests: 1, Delivered: 0},
	}))
	require.Zero(t, duplicatesIn(nil))
}

func TestByPortLabelsFiguresWithTheirURLsPort(t *testing.T) {
	urls := []string{"http://127.0.0.1:8080", "http://127.0.0.1:8180"}
	require.Equal(t, "8080 1500, 8180 1499", byPort(urls, []int{1500, 1499}))
	require.Equal(t, "8080 1, 8180 2, ? 3", byPort(urls, []int{1, 2, 3}), "more figures than URLs")
	require.Equal(t, "0 4", byPort([]string{"http://localhost"}, []int{4}), "a URL without a port")
	require.Equal(t, "", byPort(urls, nil))
}

func TestScaleVerdictFailsOnlyABrokenPromise(t *testing.T) {
	good := ScaleOutResult{
		Throughput: ScaleThroughput{Accepted: 3000},
		RateLimit:  &ScaleRateLimit{Channel: "sms", Limit: 50, Accepted: 1000, MeanPerSec: 49.8, Held: true},
	}
	require.NoError(t, scaleVerdict(&good))
	require.NoError(t, scaleVerdict(&ScaleOutResult{}), "no rate-limit part")

	bad := good
	bad.Throughput.Missing, bad.Throughput.Duplicates = 2, 1
	rl := *good.RateLimit
	rl.Missing, rl.Held, rl.MeanPerSec = 5, false, 61.25
	bad.RateLimit = &rl
	require.EqualError(t, scaleVerdict(&bad),
		"throughput: 2 of 3000 accepted notifications missing at the sink, 1 delivered more than once\n"+
			"rate limit: 5 of 1000 accepted sms missing at the sink, 0 delivered more than once\n"+
			"rate limit: sms arrived at 61.2/s on average, over 50/s × 1.05")
}

func TestScaleConnBudgetWarnsPastPostgreSQLsDefaultMaxConnections(t *testing.T) {
	t.Chdir(t.TempDir()) // no .env
	s := scaleOptions{APIs: 2, Workers: 3, Limit: 50}

	t.Setenv("DATABASE_MAX_CONNS", "10")
	require.Empty(t, scaleConnBudget(s), "2×10 + 4×6 + Temporal's 48 = 92 fit in 100")

	t.Setenv("DATABASE_MAX_CONNS", "20")
	require.Equal(t, "the running API and worker (DATABASE_MAX_CONNS 20 each) and 4 extra processes (6 each) may open 64 PostgreSQL connections, "+
		"with a Temporal server on PostgreSQL's 48 over the server's default max_connections of 100: refusals would show as refused requests or slow deliveries",
		scaleConnBudget(s))

	require.Contains(t, scaleConnBudget(scaleOptions{APIs: 2, Workers: 3, Limit: 0}), "and 3 extra processes (6 each) may open 58 PostgreSQL connections",
		"without the rate-limit part, one extra worker fewer")

	t.Setenv("DATABASE_MAX_CONNS", "lots")
	require.Empty(t, scaleConnBudget(s), "a setting that is not a number: no estimate")
}

func TestLogTailIsTheLastLinesOfAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.log")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join([]string{"one", "two", "three", "four", ""}, "\n")), 0o600))
	require.Equal(t, "three\nfour", logTail(path, 2))
	require.Equal(t, "one\ntwo\nthree\nfour", logTail(path, 10))
	require.Equal(t, "", logTail(filepath.Join(t.TempDir(), "missing.log"), 2))
}
