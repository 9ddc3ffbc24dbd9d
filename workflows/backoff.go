package workflows

import (
	"hash/fnv"
	"math"
	"strconv"
	"time"
)

// Backoff is the wait after the given (1-based) failed attempt: exponential
// from p.InitialInterval by p.BackoffCoefficient, capped at p.MaxInterval,
// with "equal jitter" (between half and all of it). The jitter is derived
// from the workflow id and the attempt, never from rand or the clock, so a
// replay computes the same wait. A provider's Retry-After wins when longer.
func Backoff(workflowID string, attempt int, p RetryPolicy, retryAfter time.Duration) time.Duration {
	base := float64(p.InitialInterval) * math.Pow(p.BackoffCoefficient, float64(max(attempt-1, 0)))
	base = min(base, float64(p.MaxInterval))
	d := time.Duration(base/2 + jitterFraction(workflowID, attempt)*base/2)
	return max(d, retryAfter)
}

// jitterFraction is a uniform value in [0, 1) fixed by (workflowID, attempt).
func jitterFraction(workflowID string, attempt int) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(workflowID))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(strconv.Itoa(attempt)))
	return float64(h.Sum64()>>11) / (1 << 53)
}
