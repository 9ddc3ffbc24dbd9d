package main

import (
	"math"
	"slices"
	"time"
)

// Latency is a distribution's percentiles in milliseconds (the bursts are
// read by p95, a paced or soaking stack by p90).
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// latencyOf returns the nearest-rank percentiles of ds.
func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Latency{
		P50: msOf(percentile(s, 50)),
		P90: msOf(percentile(s, 90)),
		P95: msOf(percentile(s, 95)),
		P99: msOf(percentile(s, 99)),
		Max: msOf(s[len(s)-1]),
	}
}

// round3 rounds x to three decimals, for a readable JSON line.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// percentile is the nearest-rank p-th percentile of the sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
