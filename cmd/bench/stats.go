package main

import (
	"math"
	"slices"
	"time"
)

// Latency is a distribution's percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
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
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }
	return Latency{
		P50: ms(percentile(s, 50)),
		P95: ms(percentile(s, 95)),
		P99: ms(percentile(s, 99)),
		Max: ms(s[len(s)-1]),
	}
}

// round3 rounds x to three decimals, for a readable JSON line.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// percentile is the nearest-rank p-th percentile of the sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
