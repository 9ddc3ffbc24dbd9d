package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// promServer serves page as a Prometheus text exposition at /metrics.
func promServer(t *testing.T, status int, page string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(page))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestGaugeReadsTheFirstNamedGaugeOfAPrometheusPage(t *testing.T) {
	goPage := "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n" +
		"# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 5.2e+07\n"
	// Temporal's dev server reports num_goroutines once per service.
	temporalPage := "# TYPE num_goroutines gauge\n" +
		"num_goroutines{service_name=\"frontend\"} 310\nnum_goroutines{service_name=\"history\"} 312\nnum_goroutines{service_name=\"matching\"} 305\n" +
		"# TYPE go_goroutines gauge\ngo_goroutines 1\n"
	untypedPage := "num_goroutines 77\n"
	for _, tc := range []struct {
		name, page string
		want       float64
	}{
		{"the Go runtime's gauge", goPage, 42},
		{"the first name found wins, the largest over its label sets", temporalPage, 312},
		{"an untyped sample", untypedPage, 77},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &soakGauges{http: http.DefaultClient}
			got, err := g.gauge(context.Background(), promServer(t, http.StatusOK, tc.page), "num_goroutines", "go_goroutines")
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestGaugeTellsWhyItHasNoValue(t *testing.T) {
	g := &soakGauges{http: http.DefaultClient}
	ctx := context.Background()

	u := promServer(t, http.StatusOK, "# TYPE up gauge\nup 1\n")
	_, err := g.gauge(ctx, u, "num_goroutines", "go_goroutines")
	require.EqualError(t, err, u+" has no num_goroutines or go_goroutines")

	u = promServer(t, http.StatusServiceUnavailable, "")
	_, err = g.gauge(ctx, u, "go_goroutines")
	require.EqualError(t, err, "GET "+u+": 503 Service Unavailable")

	u = promServer(t, http.StatusOK, "go_goroutines not-a-number\n")
	_, err = g.gauge(ctx, u, "go_goroutines")
	require.ErrorContains(t, err, "reading "+u+": ")
}

func TestMetricsPortsReadsATemporalDevServersArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		want []string
	}{
		{"with an equals sign", []string{"temporal", "server", "start-dev", "--metrics-port=9233"}, []string{"9233"}},
		{"as the next argument", []string{"temporal", "server", "start-dev", "--metrics-port", "9233", "--port", "7233"}, []string{"9233"}},
		{"given twice, both in order", []string{"temporal", "--metrics-port", "1", "--metrics-port=2"}, []string{"1", "2"}},
		{"with nothing after it", []string{"temporal", "server", "start-dev", "--metrics-port"}, nil},
		{"not given (a random port then)", []string{"temporal", "server", "start-dev", "--port", "7233"}, nil},
		{"a longer flag is not it", []string{"temporal", "--metrics-port-x=5"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, metricsPorts(tc.argv))
		})
	}
}

func TestMetricsLineReadsTheDevServersStartBanner(t *testing.T) {
	banner := func(port string) string {
		return "CLI 1.5.1 (Server 1.29.1, UI 2.41.0)\n\n" +
			"Server:  127.0.0.1:7233\nUI:      http://127.0.0.1:8233\nMetrics: http://127.0.0.1:" + port + "/metrics\n"
	}
	for _, tc := range []struct{ name, log, want string }{
		{"one start", banner("41234") + "time=... level=INFO msg=started\n", "http://127.0.0.1:41234/metrics"},
		{"a log appended to by a restart: the last start's", banner("41234") + "...\n" + banner("45678"), "http://127.0.0.1:45678/metrics"},
		{"indented, with Windows line ends", "  Metrics:   http://localhost:9000/metrics\r\n", "http://localhost:9000/metrics"},
		{"no banner", "time=... level=INFO msg=started\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, metricsLine(tc.log))
		})
	}
}

func TestSlopeIsTheLeastSquaresSlope(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pts    [][2]float64
		want   float64
		wantOK bool
	}{
		{"a line", [][2]float64{{0, 1}, {1, 3}, {2, 5}}, 2, true},
		{"a flat series", [][2]float64{{0, 7}, {1, 7}, {5, 7}}, 0, true},
		{"a falling noisy series", [][2]float64{{0, 10}, {1, 9}, {2, 7}, {3, 6}}, -1.4, true},
		{"one point", [][2]float64{{1, 1}}, 0, false},
		{"none", nil, 0, false},
		{"all at one x", [][2]float64{{2, 1}, {2, 5}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := slope(tc.pts)
			require.Equal(t, tc.wantOK, ok)
			require.InDelta(t, tc.want, got, 1e-9)
		})
	}
}

func intp(n int) *int { return &n }

func TestSlopesOfFitsEachSeriesPerHourAfterTheWarmUp(t *testing.T) {
	rows := []SoakRow{
		// The warm-up row: left out, or its 1000 MiB would tilt every slope.
		{AtSeconds: 1800, RSSMB: map[string]float64{"api": 1000}, Delivered: 10, P99MS: 900, Outbox: intp(500)},
		{AtSeconds: 3600, RSSMB: map[string]float64{"api": 100, "worker": 50}, Goroutines: map[string]float64{"api": 30},
			Delivered: 10, P99MS: 40, Outbox: intp(0), Queue: intp(10)},
		{AtSeconds: 7200, RSSMB: map[string]float64{"api": 110, "worker": 50}, Goroutines: map[string]float64{"api": 60},
			Delivered: 0, P99MS: 0, Outbox: intp(3), Queue: nil},
		{AtSeconds: 10800, RSSMB: map[string]float64{"api": 120, "worker": 50}, Goroutines: map[string]float64{"api": 90},
			Delivered: 10, P99MS: 60, Outbox: intp(6), Queue: intp(10)},
	}
	require.Equal(t, map[string]float64{
		"rss.api":        10, // MiB an hour
		"rss.worker":     0,
		"goroutines.api": 30,
		"p99":            10, // the row without deliveries has no p99
		"outbox":         3,
		"queue":          0, // two rows read it
	}, slopesOf(rows))

	require.Empty(t, slopesOf(rows[:2]), "one row after the warm-up: no slope")
	require.Empty(t, slopesOf(nil))
}

// latRow is a soak row whose deliveries took d each, n of them.
func latRow(d time.Duration, n int) SoakRow {
	r := SoakRow{}
	for range n {
		r.lat = append(r.lat, d)
	}
	return r
}

func TestDriftOfComparesTheFirstAndLastWindowsP99(t *testing.T) {
	rows := func(warm time.Duration, first, last []time.Duration) []SoakRow {
		out := []SoakRow{latRow(warm, 5)}
		for _, d := range first {
			out = append(out, latRow(d, 3))
		}
		for _, d := range last {
			out = append(out, latRow(d, 3))
		}
		return out
	}
	ms := time.Millisecond
	five := func(d time.Duration) []time.Duration { return []time.Duration{d, d, d, d, d} }

	t.Run("the last window's p99 is ten times the first's", func(t *testing.T) {
		d := driftOf(rows(time.Second, five(10*ms), five(100*ms)), time.Minute)
		require.Equal(t, &SoakDrift{WindowSeconds: 300, FirstMS: 10, LastMS: 100, Ratio: 10, Drifted: true}, d)
	})
	t.Run("more than the ratio but within the floor is noise", func(t *testing.T) {
		d := driftOf(rows(time.Second, five(10*ms), five(25*ms)), time.Minute)
		require.Equal(t, &SoakDrift{WindowSeconds: 300, FirstMS: 10, LastMS: 25, Ratio: 2.5, Drifted: false}, d)
	})
	t.Run("over the floor but within the ratio is steady", func(t *testing.T) {
		d := driftOf(rows(time.Second, five(100*ms), five(140*ms)), time.Minute)
		require.False(t, d.Drifted)
		require.Equal(t, 1.4, d.Ratio)
	})
	t.Run("fewer rows than two windows: half the rows each", func(t *testing.T) {
		d := driftOf(rows(time.Second, []time.Duration{10 * ms, 10 * ms}, []time.Duration{50 * ms, 50 * ms}), time.Minute)
		require.Equal(t, &SoakDrift{WindowSeconds: 120, FirstMS: 10, LastMS: 50, Ratio: 5, Drifted: true}, d)
	})
	t.Run("a window is at least one row", func(t *testing.T) {
		d := driftOf(rows(time.Second, []time.Duration{10 * ms}, []time.Duration{50 * ms}), 10*time.Minute)
		require.Equal(t, 600.0, d.WindowSeconds)
	})
	t.Run("one row after the warm-up: nothing to compare", func(t *testing.T) {
		require.Nil(t, driftOf(rows(time.Second, []time.Duration{10 * ms}, nil), time.Minute))
		require.Nil(t, driftOf(nil, time.Minute))
	})
	t.Run("a window without deliveries: nothing to compare", func(t *testing.T) {
		r := rows(time.Second, []time.Duration{10 * ms}, []time.Duration{50 * ms})
		r[2].lat = nil
		require.Nil(t, driftOf(r, time.Minute))
	})
}

func TestRestartsTellsOfChangedAndMissingPIDs(t *testing.T) {
	rows := []SoakRow{
		{AtSeconds: 60, PIDs: map[string]int{"api": 10, "worker": 20, "redis": 30}},
		{AtSeconds: 120, PIDs: map[string]int{"api": 11, "redis": 30}},
		{AtSeconds: 185, PIDs: map[string]int{"api": 11, "worker": 20, "redis": 30}},
		{AtSeconds: 240, PIDs: map[string]int{"api": 11, "worker": 21, "redis": 30}},
	}
	require.Equal(t, []string{
		"the api's pid changed from 10 to 11 by 02:00: it restarted",
		"the worker (pid 20) was not found at 02:00",
		"the worker's pid changed from 20 to 21 by 04:00: it restarted",
	}, restarts(rows))
	require.Empty(t, restarts(rows[2:3]))
}

func TestClockPrintsMinutesAndSeconds(t *testing.T) {
	for _, tc := range []struct {
		secs float64
		want string
	}{{0, "00:00"}, {59.4, "00:59"}, {59.6, "01:00"}, {125, "02:05"}, {3600, "60:00"}, {6001, "100:01"}} {
		require.Equal(t, tc.want, clock(tc.secs), "%v", tc.secs)
	}
}

func TestSoakLineDashesWhatWasNotRead(t *testing.T) {
	full := SoakRow{
		AtSeconds: 120, SentPerSec: 50, AcceptedPerSec: 49.96, DeliveredPerSec: 48.04, Delivered: 2882, P50MS: 31.4, P99MS: 88.6,
		RSSMB:      map[string]float64{"api": 40.2, "worker": 61, "temporal": 300, "postgres": 150, "rabbitmq": 120, "redis": 9},
		Goroutines: map[string]float64{"api": 30, "worker": 200, "temporal": 1200},
		Outbox:     intp(0), Queue: intp(12),
	}
	require.Equal(t,
		[]string{"02:00", "50.0", "50.0", "48.0", "31", "89", "40", "61", "300", "150", "120", "9", "30", "200", "1200", "0", "12"},
		strings.Fields(soakLine(full)))

	empty := SoakRow{AtSeconds: 60}
	require.Equal(t,
		[]string{"01:00", "0.0", "0.0", "0.0", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"},
		strings.Fields(soakLine(empty)))

	// Each cell is right-aligned under its column's head.
	var head strings.Builder
	printSoakHeader(&head)
	heads := strings.Split(strings.TrimRight(head.String(), "\n"), "\n")[1]
	require.Len(t, soakLine(full), len(heads))
}

func TestSoakSummaryNotes(t *testing.T) {
	require.Equal(t, "-", dashSigned(3, false))
	require.Equal(t, "+3.0", dashSigned(3, true))
	require.Equal(t, "-0.2", dashSigned(-0.25, true))
	require.Equal(t, "", refusedNote(nil))
	require.Equal(t, " (by status: 0 2, 503 7)", refusedNote(map[string]int{"503": 7, "0": 2}))
}
