package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentileIsTheNearestRank(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	one2ten := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tc := range []struct {
		name string
		s    []time.Duration
		p    float64
		want time.Duration
	}{
		{"median of ten is the fifth", one2ten, 50, 5 * time.Millisecond},
		{"p90 of ten is the ninth", one2ten, 90, 9 * time.Millisecond},
		{"p95 of ten rounds the rank up to the tenth", one2ten, 95, 10 * time.Millisecond},
		{"p99 of ten is the largest", one2ten, 99, 10 * time.Millisecond},
		{"p0 is the smallest, not out of range", one2ten, 0, time.Millisecond},
		{"p100 is the largest", one2ten, 100, 10 * time.Millisecond},
		{"any percentile of one value is that value", ms(7), 50, 7 * time.Millisecond},
		{"p50 of two is the first", ms(1, 9), 50, time.Millisecond},
		{"p51 of two is the second", ms(1, 9), 51, 9 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.s, tc.p))
		})
	}
}

func TestLatencyOfSortsACopyAndReportsMilliseconds(t *testing.T) {
	in := []time.Duration{
		40 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 20 * time.Millisecond,
		1234567 * time.Nanosecond,
	}
	orig := append([]time.Duration(nil), in...)

	got := latencyOf(in)

	// Sorted: 1.234567, 10, 20, 30, 40 ms. Ranks: p50 → 3rd, p90/p95/p99 → 5th.
	require.Equal(t, Latency{P50: 20, P90: 40, P95: 40, P99: 40, Max: 40}, got)
	require.Equal(t, orig, in, "the caller's slice keeps its order")
	require.Equal(t, Latency{}, latencyOf(nil), "no durations, no figures")
	require.Equal(t, 1.23, latencyOf([]time.Duration{1234567}).P50, "two decimals of a millisecond")
}

func TestRoundingHelpers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"msOf keeps two decimals", msOf(1234567 * time.Nanosecond), 1.23},
		{"msOf rounds half up", msOf(1235000 * time.Nanosecond), 1.24},
		{"msOf of a second", msOf(time.Second), 1000},
		{"msOf of zero", msOf(0), 0},
		{"round3 keeps three decimals", round3(2.0004), 2},
		{"round3 rounds half away from zero", round3(0.0125), 0.013},
		{"round3 of a negative", round3(-1.23449), -1.234},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.want, tc.got, 1e-9)
		})
	}
}
