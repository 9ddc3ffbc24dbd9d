package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestSummarizeMeasuresDeliveriesAgainstTheAPIsAcceptance(t *testing.T) {
	accepted := []created{
		{ID: "a", CreatedAt: at(0)},
		{ID: "b", CreatedAt: at(1000)},
		{ID: "c", CreatedAt: at(2000)},
	}
	records := map[string]sinkRecord{
		"a": {ID: "a", Requests: 2, Delivered: 1, FirstAt: at(2000)}, // retried once
		"b": {ID: "b", Requests: 2, Delivered: 2, FirstAt: at(5000)}, // delivered twice
	}
	wfIDs := []string{"notification-a", "notification-b"}

	t.Run("every workflow closed after the last arrival", func(t *testing.T) {
		var res EndToEndResult
		summarize(&res, accepted, records, wfIDs, map[string]time.Time{"notification-a": at(5100), "notification-b": at(6000)})
		require.Equal(t, EndToEndResult{
			Delivered:   2,
			Undelivered: 1,
			// The window runs from the first acceptance to the last arrival.
			DeliverySeconds: 5,
			DeliveredPerSec: 0.4,
			FirstDeliveryMS: 2000,
			// a took 2 s, b 4 s: nearest ranks of two values.
			LatencyMS:         Latency{P50: 2000, P90: 4000, P95: 4000, P99: 4000, Max: 4000},
			Timeline:          []int{0, 0, 0, 0, 1, 0, 0, 0, 0, 1},
			Retried:           2,
			Duplicates:        1,
			OpenAfterDelivery: 2,
			AllClosedAfterMS:  1000,
		}, res)
	})
	t.Run("a workflow closed before the last arrival, one never", func(t *testing.T) {
		var res EndToEndResult
		summarize(&res, accepted, records, wfIDs, map[string]time.Time{"notification-a": at(4000)})
		require.Equal(t, 1, res.OpenAfterDelivery)
		require.Equal(t, -1.0, res.AllClosedAfterMS, "not every workflow closed within the wait")
		require.Len(t, res.warnings, 1)
		require.Contains(t, res.warnings[0], "1 delivered notification(s) still had an open workflow 2m0s after the last delivery")
	})
	t.Run("nothing delivered", func(t *testing.T) {
		var res EndToEndResult
		summarize(&res, accepted, nil, nil, nil)
		require.Equal(t, EndToEndResult{Undelivered: 3, AllClosedAfterMS: -1}, res)
	})
}

func TestTimelineCountsArrivalsInEqualSlices(t *testing.T) {
	rec := func(ms ...int) map[string]sinkRecord {
		out := map[string]sinkRecord{}
		for i, m := range ms {
			out[string(rune('a'+i))] = sinkRecord{FirstAt: at(m)}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		records map[string]sinkRecord
		from    time.Time
		to      time.Time
		want    []int
	}{
		{"spread evenly", rec(0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000), at(0), at(10000), []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"a slice's start belongs to it", rec(999, 1000), at(0), at(10000), []int{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"the end falls in the last slice", rec(10000), at(0), at(10000), []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"before the window: the first slice", rec(-500), at(0), at(10000), []int{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"after the window: the last slice", rec(20000), at(0), at(10000), []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"an empty window: the last slice", rec(0, 0), at(0), at(0), []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 2}},
		{"no arrivals", nil, at(0), at(10000), []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, timeline(tc.records, tc.from, tc.to, 10))
		})
	}
}

func TestWorkflowsByArrivalOrdersTheDeliveredBySinkArrival(t *testing.T) {
	accepted := []created{{ID: "A"}, {ID: "B", WorkflowID: "wf-b"}, {ID: "C"}, {ID: "D"}}
	records := map[string]sinkRecord{
		"A": {FirstAt: at(300)},
		"B": {FirstAt: at(100)},
		"D": {FirstAt: at(200)},
	}
	require.Equal(t, []string{"wf-b", "notification-d", "notification-a"}, workflowsByArrival(accepted, records))
	require.Equal(t, []created{{ID: "A"}, {ID: "B", WorkflowID: "wf-b"}, {ID: "C"}, {ID: "D"}}, accepted, "the caller's slice is left as it was")
	require.Empty(t, workflowsByArrival(accepted, nil))
}
