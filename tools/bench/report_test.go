package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/stretchr/testify/require"
)

func TestCountsAndNotes(t *testing.T) {
	for _, tc := range []struct{ name, got, want string }{
		{"a tally, keys in order", counts(map[string]int{"503": 7, "0": 2, "429": 1}), "0 2, 429 1, 503 7"},
		{"an empty tally", counts(nil), ""},
		{"no errors", errorsNote(nil), ", no errors"},
		{"errors by status", errorsNote(map[string]int{"503": 3, "timeout": 1}), ", errors by status: 503 3, timeout 1"},
		{"a value", orDash("1.29.1"), "1.29.1"},
		{"no value", orDash(""), "-"},
		{"yes", yesNo(true), "yes"},
		{"no", yesNo(false), "no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.got)
		})
	}
}

func TestPrintNotesEndsATableWithItsWarnings(t *testing.T) {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	printNotes(w, []string{"the worker was not found", "the sink saw other deliveries"})
	require.Equal(t, "\nNOTES\n  - the worker was not found\n  - the sink saw other deliveries\n\n", b.String())

	b.Reset()
	printNotes(w, nil)
	require.Equal(t, "\n", b.String())
}

// TestBenchJSONKeepsTheFieldsBenchABReads guards the contract with
// scripts/bench-ab.sh, whose jq reads these names from the BENCH_JSON line.
func TestBenchJSONKeepsTheFieldsBenchABReads(t *testing.T) {
	r := &Result{
		EndToEnd: EndToEndResult{DeliveredPerSec: 812.5, History: HistoryShape{Events: 17}},
		Cost: CostResult{
			Processes:         []ProcCost{{Name: "api", PID: 10, CPUSecondsPer1000: 1.5}, {Name: "worker", PID: 11, CPUSecondsPer1000: 3.25}},
			CPUSecondsPer1000: 4.75,
		},
		Warnings: []string{"a note"},
	}
	var b bytes.Buffer
	require.NoError(t, printJSON(&b, r))

	line, ok := strings.CutPrefix(b.String(), "BENCH_JSON ")
	require.True(t, ok, "the line starts with the prefix tools grep for: %q", b.String())
	require.True(t, strings.HasSuffix(line, "}\n"))
	require.NotContains(t, strings.TrimSuffix(line, "\n"), "\n", "one line")

	var got struct {
		EndToEnd struct {
			DeliveredPerSec float64 `json:"deliveredPerSec"`
			History         struct {
				Events float64 `json:"events"`
			} `json:"history"`
		} `json:"endToEnd"`
		Cost struct {
			Processes []struct {
				Name              string  `json:"name"`
				CPUSecondsPer1000 float64 `json:"cpuSecondsPer1000"`
			} `json:"processes"`
			CPUSecondsPer1000 float64 `json:"cpuSecondsPer1000"`
		} `json:"cost"`
		Warnings []string       `json:"warnings"`
		Idle     map[string]any `json:"idle"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &got))
	require.Equal(t, 812.5, got.EndToEnd.DeliveredPerSec)
	require.Equal(t, 17.0, got.EndToEnd.History.Events)
	require.Len(t, got.Cost.Processes, 2)
	require.Equal(t, "worker", got.Cost.Processes[1].Name)
	require.Equal(t, 3.25, got.Cost.Processes[1].CPUSecondsPer1000)
	require.Equal(t, 4.75, got.Cost.CPUSecondsPer1000)
	require.Equal(t, []string{"a note"}, got.Warnings)
	require.Nil(t, got.Idle, "a section that did not run is left out")
}

func TestPrintTableShowsTheRunsFigures(t *testing.T) {
	r := &Result{
		Options: PublicOptions{Temporal: "127.0.0.1:7233", Concurrency: 32},
		EndToEnd: EndToEndResult{
			Requested: 300, Accepted: 300, Via: "batch", Delivered: 298, Undelivered: 2, DeliveredPerSec: 151.25,
			DeliverySeconds: 1.97, AllClosedAfterMS: -1, OpenAfterDelivery: 2, Stuck: map[string]int{"RETRYING": 2},
		},
		Cost: CostResult{Processes: []ProcCost{{Name: "worker", PID: 4242, CPUSeconds: 3.5, CPUSecondsPer1000: 11.74, PeakRSSMB: 61}}, CPUSecondsPer1000: 11.74},
	}
	var b bytes.Buffer
	printTable(&b, r)
	out := b.String()

	require.Contains(t, out, "Temporal - at 127.0.0.1:7233; batch endpoint: false")
	require.Contains(t, out, "END TO END  (300 notifications via batch POSTs")
	require.Regexp(t, `delivered/s \(sink arrivals\) +151\.2  \(298 delivered, 2 not, in 2\.0s`, out)
	require.Regexp(t, `workflows open at last delivery +2 of 298; not within the wait`, out)
	require.Regexp(t, `not delivered, by API status +RETRYING 2`, out)
	require.Regexp(t, `worker +4242 +3\.50 +11\.74 +61`, out)
	require.Regexp(t, `total +11\.74`, out)
	require.NotContains(t, out, "IDLE", "a section that did not run is not printed")
	require.NotContains(t, out, "NOTES")
}

func TestCostOfIsCPUPerThousandDelivered(t *testing.T) {
	ps := &processes{list: []process{
		{Name: "api", PID: os.Getpid()},
		{Name: "worker", PID: os.Getpid()},
		{Name: "redis", PID: 0},               // not found
		{Name: "temporal", PID: os.Getppid()}, // not in both samples
	}}
	before := procSample{"api": 10, "worker": 100, "redis": 1, "temporal": 5}
	after := procSample{"api": 12.5, "worker": 130, "redis": 2}

	c := costOf(ps, before, after, 2000)
	require.Equal(t, 2000, c.Notifications)
	require.Len(t, c.Processes, 2)
	require.Equal(t, "api", c.Processes[0].Name)
	require.Equal(t, 2.5, c.Processes[0].CPUSeconds)
	require.Equal(t, 1.25, c.Processes[0].CPUSecondsPer1000)
	require.Equal(t, 15.0, c.Processes[1].CPUSecondsPer1000)
	require.Greater(t, c.Processes[0].PeakRSSMB, 0.0, "this process's VmHWM")
	require.Equal(t, 16.25, c.CPUSecondsPer1000)

	none := costOf(ps, before, after, 0)
	require.Equal(t, 2.5, none.Processes[0].CPUSeconds)
	require.Zero(t, none.Processes[0].CPUSecondsPer1000, "nothing delivered: no rate")
}
