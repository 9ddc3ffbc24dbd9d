package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ev is one event of a test history: its type and its time since the start.
type ev struct {
	typ enumspb.EventType
	at  time.Duration
}

// historyFrom counts events as historyOf does.
func historyFrom(events []ev) history {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var h history
	for _, e := range events {
		h.add(&historypb.HistoryEvent{EventType: e.typ, EventTime: timestamppb.New(start.Add(e.at))})
	}
	return h
}

func TestHistoryCountsTheShapeOfAWorkflow(t *testing.T) {
	const (
		started    = enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
		wtSched    = enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
		wtStarted  = enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED
		wtDone     = enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
		wtTimeout  = enumspb.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
		actSched   = enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
		actStarted = enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED
		actDone    = enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
		actFailed  = enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED
		marker     = enumspb.EVENT_TYPE_MARKER_RECORDED
		timer      = enumspb.EVENT_TYPE_TIMER_STARTED
	)
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		events []ev
		want   history
	}{
		{
			name: "delivered at the first attempt",
			events: []ev{
				{started, 0}, {wtSched, 0}, {wtStarted, ms}, {wtDone, 2 * ms}, {marker, 2 * ms}, {actSched, 2 * ms},
				{actStarted, 3 * ms}, {actDone, 40 * ms}, {wtSched, 40 * ms}, {wtStarted, 41 * ms},
				{wtDone, 42 * ms}, {enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, 45 * ms},
			},
			want: history{events: 12, workflowTasks: 2, activities: 1, markers: 1, closed: true, closeLag: 5 * ms},
		},
		{
			name: "a sticky task timed out, a retry after a failed attempt",
			events: []ev{
				{started, 0}, {wtSched, 0}, {wtStarted, ms}, {wtDone, 2 * ms}, {actSched, 2 * ms},
				{actStarted, 3 * ms}, {actFailed, 10 * ms}, {wtSched, 10 * ms}, {wtStarted, 15 * ms},
				{wtTimeout, 5015 * ms}, {wtSched, 5015 * ms}, {wtStarted, 5016 * ms}, {wtDone, 5017 * ms},
				{timer, 5017 * ms}, {enumspb.EVENT_TYPE_TIMER_FIRED, 6017 * ms}, {wtSched, 6017 * ms},
				{wtStarted, 6018 * ms}, {wtDone, 6019 * ms}, {actSched, 6019 * ms}, {actStarted, 6020 * ms},
				{actDone, 6030 * ms}, {wtSched, 6030 * ms}, {wtStarted, 6031 * ms}, {wtDone, 6032 * ms},
				{enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, 6250 * ms},
			},
			want: history{events: 25, workflowTasks: 4, taskTimeouts: 1, activities: 2, closed: true, closeLag: 220 * ms},
		},
		{
			name: "still open: no close, no lag",
			events: []ev{
				{started, 0}, {wtSched, 0}, {wtStarted, ms}, {wtDone, 2 * ms}, {actSched, 2 * ms},
				{actStarted, 3 * ms}, {actDone, 9 * ms},
			},
			want: history{events: 7, workflowTasks: 1, activities: 1},
		},
		{
			name: "closed before any activity finished: no lag",
			events: []ev{
				{started, 0}, {wtSched, 0}, {enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, 3 * ms},
			},
			want: history{events: 3, closed: true},
		},
		{
			name: "continued as new counts as closed",
			events: []ev{
				{started, 0}, {actSched, 0}, {actDone, 10 * ms},
				{enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW, 12 * ms},
			},
			want: history{events: 4, activities: 1, closed: true, closeLag: 2 * ms},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := historyFrom(tc.events)
			got.lastActivity = time.Time{} // bookkeeping, not a figure
			require.Equal(t, tc.want, got)
		})
	}
}

func TestWorkflowIDIsTheAPIsElseDerivedFromTheID(t *testing.T) {
	require.Equal(t, "notification-0190a3b4-aaaa-7bbb-8ccc-0123456789ab",
		workflowID(created{ID: "0190A3B4-AAAA-7BBB-8CCC-0123456789AB"}))
	require.Equal(t, "tenant-x/notification-1", workflowID(created{ID: "1", WorkflowID: "tenant-x/notification-1"}))
}
