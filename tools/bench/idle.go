package main

import (
	"context"
	"fmt"
	"time"
)

// IdleResult is the latency of single notifications sent one at a time to
// an otherwise idle stack: what one notification costs, without a queue.
type IdleResult struct {
	N int `json:"n"`
	// LatencyMS is the API's createdAt → the sink's first arrival.
	LatencyMS Latency `json:"latencyMs"`
}

// runIdle sends n notifications one after another, each after the previous
// one reached the sink.
func runIdle(ctx context.Context, api *apiClient, snk *sinkClient, n int) (IdleResult, error) {
	res := IdleResult{N: n}
	var lat []time.Duration
	for i := range n {
		c, status, err := api.create(ctx, notificationFor("idle", i))
		if err != nil {
			return res, fmt.Errorf("creating notification %d (status %d): %w", i, status, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			rec, found, err := snk.record(ctx, c.ID)
			if err == nil && found && rec.Delivered > 0 {
				lat = append(lat, rec.FirstAt.Sub(c.CreatedAt))
				break
			}
			if time.Now().After(deadline) {
				return res, fmt.Errorf("notification %s did not reach the sink within 30s", c.ID)
			}
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
		// A pause, so each one finds the stack idle.
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	res.LatencyMS = latencyOf(lat)
	return res, nil
}
