package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// The ceiling's workflow and activity, registered under these names on a
// task queue of their own.
const (
	ceilingWorkflow = "BenchCeiling"
	ceilingActivity = "BenchNoop"
)

// BenchCeiling is the bare reference: one workflow, one no-op activity.
func BenchCeiling(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	return workflow.ExecuteActivity(ctx, ceilingActivity).Get(ctx, nil)
}

// benchNoop does nothing.
func benchNoop(context.Context) error { return nil }

// CeilingResult is the ceiling section's figures.
type CeilingResult struct {
	Workflows int     `json:"workflows"`
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	// PerSec is completed workflows / (last completion − first start).
	PerSec    float64 `json:"perSec"`
	LatencyMS Latency `json:"latencyMs"`
	// Events and WorkflowTasks are those of one BenchCeiling history.
	Events        int `json:"events"`
	WorkflowTasks int `json:"workflowTasks"`
}

// runCeiling starts a worker for BenchCeiling on a unique task queue in
// this process, warms it up, then starts o.CeilingN workflows with
// o.Concurrency starters and waits for every result. The worker and the
// starts use the SDK's defaults (no eager start), the plain reference.
func runCeiling(ctx context.Context, tc client.Client, o options) (CeilingResult, error) {
	run := uuid.NewString()[:8]
	queue := "bench-ceiling-" + run
	w := worker.New(tc, queue, worker.Options{})
	w.RegisterWorkflowWithOptions(BenchCeiling, workflow.RegisterOptions{Name: ceilingWorkflow})
	w.RegisterActivityWithOptions(benchNoop, activity.RegisterOptions{Name: ceilingActivity})
	if err := w.Start(); err != nil {
		return CeilingResult{}, fmt.Errorf("starting the ceiling worker: %w", err)
	}
	defer w.Stop()

	execute := func(id string) error {
		r, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, ceilingWorkflow)
		if err != nil {
			return err
		}
		return r.Get(ctx, nil)
	}
	// Warm-up: the worker's pollers and the task queue exist before timing.
	for i := range 3 {
		if err := execute(fmt.Sprintf("%s-warmup-%d", queue, i)); err != nil {
			return CeilingResult{}, fmt.Errorf("warm-up workflow: %w", err)
		}
	}

	type outcome struct {
		start, end time.Time
		err        error
	}
	outcomes := make([]outcome, o.CeilingN)
	starters := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i := range o.CeilingN {
		starters <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: fmt.Sprintf("%s-%d", queue, i), TaskQueue: queue,
			}, ceilingWorkflow)
			<-starters // the start is done; the next one may go
			if err == nil {
				err = r.Get(ctx, nil)
			}
			outcomes[i] = outcome{start: start, end: time.Now(), err: err}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return CeilingResult{}, err
	}

	res := CeilingResult{Workflows: o.CeilingN}
	var first, last time.Time
	var lat []time.Duration
	var firstErr error
	for _, oc := range outcomes {
		if first.IsZero() || oc.start.Before(first) {
			first = oc.start
		}
		if oc.err != nil {
			res.Failed++
			if firstErr == nil {
				firstErr = oc.err
			}
			continue
		}
		res.Completed++
		lat = append(lat, oc.end.Sub(oc.start))
		if oc.end.After(last) {
			last = oc.end
		}
	}
	if res.Completed == 0 {
		return res, fmt.Errorf("no ceiling workflow completed: %w", firstErr)
	}
	elapsed := last.Sub(first).Seconds()
	res.Seconds = round3(elapsed)
	res.PerSec = round3(float64(res.Completed) / elapsed)
	res.LatencyMS = latencyOf(lat)
	if h, err := historyOf(ctx, tc, fmt.Sprintf("%s-%d", queue, 0)); err == nil {
		res.Events, res.WorkflowTasks = h.events, h.workflowTasks
	}
	return res, nil
}
