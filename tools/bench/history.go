package main

import (
	"context"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
)

// history is the shape of one workflow's history.
type history struct {
	events        int
	workflowTasks int // WorkflowTaskCompleted
	taskTimeouts  int // WorkflowTaskTimedOut (e.g. a sticky task nobody took in time)
	activities    int // ActivityTaskScheduled
	markers       int // MarkerRecorded (local activities, side effects)
	closed        bool
	// closeLag is the workflow's close − its last ActivityTaskCompleted:
	// how long the workflow stayed open after its last attempt reported.
	closeLag time.Duration

	lastActivity time.Time // the last ActivityTaskCompleted's time so far
}

// historyOf reads a workflow's history as it stands.
func historyOf(ctx context.Context, tc client.Client, workflowID string) (history, error) {
	var h history
	it := tc.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return h, err
		}
		h.add(ev)
	}
	return h, nil
}

// add counts one event of the history; events come in their order.
func (h *history) add(ev *historypb.HistoryEvent) {
	h.events++
	switch ev.GetEventType() {
	case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
		h.workflowTasks++
	case enumspb.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
		h.taskTimeouts++
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
		h.activities++
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
		h.lastActivity = ev.GetEventTime().AsTime()
	case enumspb.EVENT_TYPE_MARKER_RECORDED:
		h.markers++
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
		h.closed = true
		if !h.lastActivity.IsZero() {
			h.closeLag = ev.GetEventTime().AsTime().Sub(h.lastActivity)
		}
	}
}

// HistoryShape averages a sample of closed notification workflows.
type HistoryShape struct {
	Sampled int `json:"sampled"`
	// Open counts sampled workflows still open when the wait ran out; the
	// averages leave them out.
	Open          int     `json:"open"`
	Events        float64 `json:"events"`
	WorkflowTasks float64 `json:"workflowTasks"`
	TaskTimeouts  float64 `json:"workflowTaskTimeouts"`
	Activities    float64 `json:"activities"`
	Markers       float64 `json:"markers"`
	// CloseLagMS is the largest close − last ActivityTaskCompleted seen.
	CloseLagMaxMS float64 `json:"closeLagMaxMs"`
}

// historyShape reads the histories of up to n delivered notifications,
// spread over the run (so over channels and priorities). The sink saw each
// delivery, but the workflow closes only after one more workflow task, so
// it waits for them to close, up to wait in all.
func historyShape(ctx context.Context, tc client.Client, accepted []created, delivered map[string]sinkRecord, n int, wait time.Duration) HistoryShape {
	var ids []string
	for _, c := range accepted {
		if _, ok := delivered[c.ID]; ok {
			ids = append(ids, workflowID(c))
		}
	}
	var hs HistoryShape
	if n <= 0 || len(ids) == 0 {
		return hs
	}
	deadline := time.Now().Add(wait)
	closed := 0
	for i := 0; i < len(ids) && hs.Sampled < n; i += max(len(ids)/n, 1) {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		_ = tc.GetWorkflow(wctx, ids[i], "").Get(wctx, nil) // returns once closed
		cancel()
		h, err := historyOf(ctx, tc, ids[i])
		if err != nil {
			continue
		}
		hs.Sampled++
		if !h.closed {
			hs.Open++
			continue
		}
		closed++
		hs.Events += float64(h.events)
		hs.WorkflowTasks += float64(h.workflowTasks)
		hs.TaskTimeouts += float64(h.taskTimeouts)
		hs.Activities += float64(h.activities)
		hs.Markers += float64(h.markers)
		hs.CloseLagMaxMS = max(hs.CloseLagMaxMS, round3(float64(h.closeLag.Microseconds())/1000))
	}
	if closed > 0 {
		k := float64(closed)
		hs.Events, hs.WorkflowTasks = round3(hs.Events/k), round3(hs.WorkflowTasks/k)
		hs.TaskTimeouts = round3(hs.TaskTimeouts / k)
		hs.Activities, hs.Markers = round3(hs.Activities/k), round3(hs.Markers/k)
	}
	return hs
}

// awaitClosed waits, until deadline, for every workflow in ids (ordered by
// delivery) to close, and returns each closed one's close time (from
// DescribeWorkflow, the server's own record). To load the server
// little while it still works, it first watches only the last delivered
// few, then reads all the others once, then again those still open.
func awaitClosed(ctx context.Context, tc client.Client, ids []string, deadline time.Time) map[string]time.Time {
	closed := make(map[string]time.Time, len(ids))
	poll := func(batch []string) {
		// The ids to ask about are chosen before the workers write to closed.
		var pending []string
		for _, id := range batch {
			if _, ok := closed[id]; !ok {
				pending = append(pending, id)
			}
		}
		var (
			mu   sync.Mutex
			next = make(chan string)
			wg   sync.WaitGroup
		)
		for range 16 {
			wg.Go(func() {
				for id := range next {
					d, err := tc.DescribeWorkflow(ctx, id, "")
					if err != nil {
						continue
					}
					info := d.RawResponse.GetWorkflowExecutionInfo()
					if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && info.GetCloseTime() != nil {
						mu.Lock()
						closed[id] = info.GetCloseTime().AsTime()
						mu.Unlock()
					}
				}
			})
		}
		for _, id := range pending {
			next <- id
		}
		close(next)
		wg.Wait()
	}
	open := func(batch []string) int {
		n := 0
		for _, id := range batch {
			if _, ok := closed[id]; !ok {
				n++
			}
		}
		return n
	}
	tail := ids[max(len(ids)-20, 0):]
	for _, batch := range [][]string{tail, ids} {
		for {
			poll(batch)
			if open(batch) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return closed
}

// workflowID is the id of a notification's workflow: the one the API
// answered with, else the one it derives from the notification's id.
func workflowID(c created) string {
	if c.WorkflowID != "" {
		return c.WorkflowID
	}
	return "notification-" + strings.ToLower(c.ID)
}
