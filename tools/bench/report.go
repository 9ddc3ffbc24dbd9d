package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is everything one run measured; it is printed as a table and as
// the BENCH_JSON line.
type Result struct {
	Machine  Machine        `json:"machine"`
	Options  PublicOptions  `json:"options"`
	Ceiling  CeilingResult  `json:"ceiling"`
	Idle     *IdleResult    `json:"idle,omitempty"`
	EndToEnd EndToEndResult `json:"endToEnd"`
	Paced    *PacedResult   `json:"paced,omitempty"`
	Ingest   *IngestResult  `json:"ingest,omitempty"`
	Cost     CostResult     `json:"cost"`
	Warnings []string       `json:"warnings,omitempty"`

	ScaleOut *ScaleOutResult `json:"scaleOut,omitempty"`
}

// Machine describes where the figures come from.
type Machine struct {
	Date           string `json:"date"`
	CPUs           int    `json:"cpus"`
	CPUModel       string `json:"cpuModel"`
	LoadAvg        string `json:"loadAvg"`
	Go             string `json:"go"`
	Commit         string `json:"commit,omitempty"`
	TemporalServer string `json:"temporalServer,omitempty"`
	BatchEndpoint  bool   `json:"batchEndpoint"`
}

// PublicOptions are the options as reported (no API key).
type PublicOptions struct {
	Quick          bool   `json:"quick"`
	N              int    `json:"n"`
	Concurrency    int    `json:"concurrency"`
	CeilingN       int    `json:"ceilingN"`
	IngestDuration string `json:"ingestDuration"`
	IngestClients  int    `json:"ingestClients"`
	Batches        int    `json:"batches"`
	BatchSize      int    `json:"batchSize"`
	API            string `json:"api"`
	Sink           string `json:"sink"`
	Temporal       string `json:"temporal"`
}

func (o options) public() PublicOptions {
	return PublicOptions{
		Quick: o.Quick, N: o.N, Concurrency: o.Concurrency, CeilingN: o.CeilingN,
		IngestDuration: o.IngestDuration.String(), IngestClients: o.IngestClients,
		Batches: o.Batches, BatchSize: o.BatchSize, API: o.API, Sink: o.Sink, Temporal: o.Temporal,
	}
}

func describeMachine() Machine {
	m := Machine{
		Date: time.Now().Format(time.RFC3339),
		CPUs: runtime.NumCPU(),
		Go:   runtime.Version(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fs := strings.Fields(string(b)); len(fs) >= 3 {
			m.LoadAvg = strings.Join(fs[:3], " ")
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.Commit += "+dirty"
		}
	}
	return m
}

func printHeader(r *Result) {
	m := r.Machine
	mode := "full"
	if r.Options.Quick {
		mode = "quick"
	}
	fmt.Printf("Dispatch Engine bench (%s) — %s\n", mode, m.Date)
	fmt.Printf("machine: %d CPU × %s, load %s, %s", m.CPUs, m.CPUModel, m.LoadAvg, m.Go)
	if m.Commit != "" {
		fmt.Printf(", commit %s", m.Commit)
	}
	fmt.Println()
}

func printTable(out io.Writer, r *Result) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %s\t"+format+"\n", append([]any{label}, args...)...)
	}
	ms := func(l Latency) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f ms (max %.0f)", l.P50, l.P95, l.P99, l.Max)
	}

	fmt.Fprintf(w, "\nTemporal %s at %s; batch endpoint: %v\n", orDash(r.Machine.TemporalServer), r.Options.Temporal, r.Machine.BatchEndpoint)

	if r.Idle != nil {
		fmt.Fprintf(w, "\nIDLE  (%d single notifications, one at a time)\n", r.Idle.N)
		row("accepted → delivered p50/p95/p99", "%s", ms(r.Idle.LatencyMS))
	}

	c := r.Ceiling
	fmt.Fprintf(w, "\nCEILING  (BenchCeiling: one no-op activity, SDK defaults; %d workflows, %d starters)\n", c.Workflows, r.Options.Concurrency)
	row("completed/s", "%.1f  (%d completed, %d failed, in %.1fs)", c.PerSec, c.Completed, c.Failed, c.Seconds)
	row("start → result p50/p95/p99", "%s", ms(c.LatencyMS))
	row("history", "%d events, %d workflow tasks", c.Events, c.WorkflowTasks)

	e := r.EndToEnd
	fmt.Fprintf(w, "\nEND TO END  (%d notifications via %s POSTs, sms/email/push × HIGH/NORMAL/LOW)\n", e.Requested, e.Via)
	row("accepted/s (API)", "%.1f  (%d accepted, %d refused)", e.AcceptedPerSec, e.Accepted, e.Rejected)
	row("delivered/s (sink arrivals)", "%.1f  (%d delivered, %d not, in %.1fs from first accept to last arrival)", e.DeliveredPerSec, e.Delivered, e.Undelivered, e.DeliverySeconds)
	row("delivered/s ÷ ceiling", "%.2f×", e.RatioToCeiling)
	row("accepted → delivered p50/p95/p99", "%s", ms(e.LatencyMS))
	row("first delivery after", "%.0f ms", e.FirstDeliveryMS)
	if len(e.Timeline) > 0 {
		row("arrivals per tenth of the window", "%v", e.Timeline)
	}
	row("retried / duplicates (ours)", "%d / %d", e.Retried, e.Duplicates)
	row("sink's own stats", "delivered %d, ids %d, requests %d, failed %d, duplicates %d", e.Sink.Delivered, e.Sink.UniqueIDs, e.Sink.Requests, e.Sink.Failed, e.Sink.Duplicates)
	h := e.History
	row("per notification workflow", "%.1f events, %.1f workflow tasks, %.1f activities, %.1f markers  (%d closed histories)", h.Events, h.WorkflowTasks, h.Activities, h.Markers, h.Sampled-h.Open)
	row("  workflow task timeouts", "%.2f per workflow; closed up to %.0f ms after the last activity; %d sampled still open after %s", h.TaskTimeouts, h.CloseLagMaxMS, h.Open, historyWait)
	if e.Delivered > 0 {
		closed := "not within the wait"
		if e.AllClosedAfterMS >= 0 {
			closed = fmt.Sprintf("all closed %.1fs later", e.AllClosedAfterMS/1000)
		}
		row("workflows open at last delivery", "%d of %d; %s", e.OpenAfterDelivery, e.Delivered, closed)
	}
	if len(e.Stuck) > 0 {
		row("not delivered, by API status", "%s", counts(e.Stuck))
	}

	if p := r.Paced; p != nil {
		printPaced(w, row, p)
	}

	if in := r.Ingest; in != nil {
		s := in.Single
		fmt.Fprintf(w, "\nINGEST  (after end to end; what it creates is delivered afterwards)\n")
		row(fmt.Sprintf("single POST, %d clients, %.1fs", s.Clients, s.Seconds), "%.0f req/s, p50 %.1f ms, p99 %.1f ms  (%d accepted%s)", s.ReqPerSec, s.LatencyMS.P50, s.LatencyMS.P99, s.Accepted, errorsNote(s.Errors))
		if s.APICPUMSPerRequest > 0 {
			row("API CPU per single POST", "%.2f ms", s.APICPUMSPerRequest)
		}
		if b := in.Batch; b != nil {
			row(fmt.Sprintf("batch, %d × %d, %d clients", b.Batches, b.Size, b.Clients), "%.0f notifications/s, p50 %.0f ms per batch  (%d created, %d batches failed)", b.NotificationsPerSec, b.LatencyMS.P50, b.Notifications, b.Failed)
		}
		row("left to deliver", "%d notifications, ~%s at the end-to-end rate", in.Created, (time.Duration(in.BacklogETASeconds) * time.Second).String())
	}

	printScaleOut(w, row, r.ScaleOut)

	k := r.Cost
	fmt.Fprintf(w, "\nCOST  (end to end: first request until every workflow closed; per 1,000 delivered; peak RSS is VmHWM since the process started; for postgres and rabbitmq, the PSS of the process tree at the end)\n")
	fmt.Fprintf(w, "  process\tpid\tCPU s\tCPU s / 1,000\tpeak RSS MiB\n")
	for _, p := range k.Processes {
		fmt.Fprintf(w, "  %s\t%d\t%.2f\t%.2f\t%.0f\n", p.Name, p.PID, p.CPUSeconds, p.CPUSecondsPer1000, p.PeakRSSMB)
	}
	fmt.Fprintf(w, "  total\t\t\t%.2f\t\n", k.CPUSecondsPer1000)

	printNotes(w, r.Warnings)
}

// printNotes ends a table: its warnings, if any, then the flush.
func printNotes(w *tabwriter.Writer, warnings []string) {
	if len(warnings) > 0 {
		fmt.Fprintf(w, "\nNOTES\n")
		for _, msg := range warnings {
			fmt.Fprintf(w, "  - %s\n", msg)
		}
	}
	fmt.Fprintln(w)
	_ = w.Flush()
}

// printJSON prints the result as one line, for tools: grep '^BENCH_JSON '.
func printJSON(out io.Writer, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "BENCH_JSON %s\n", b)
	return err
}

func errorsNote(errs map[string]int) string {
	if len(errs) == 0 {
		return ", no errors"
	}
	return ", errors by status: " + counts(errs)
}

// counts prints a tally as "A 3, B 1", keys in order.
func counts(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
