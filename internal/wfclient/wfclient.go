// Package wfclient is what the API and the worker both need of Temporal,
// without the worker's code: the connection options, the task queue names,
// starting an operation's workflow, and reading which generation of a
// notification a run delivers.
package wfclient

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// TaskQueues names the Temporal task queues. Prefix
// (TEMPORAL_TASK_QUEUE_PREFIX) lets deployments share a namespace.
type TaskQueues struct {
	Prefix string
}

// Workflows is the task queue of the notification workflows.
func (t TaskQueues) Workflows() string { return t.Prefix + "notifications" }

// Operations is the task queue of the operation workflows and their steps.
func (t TaskQueues) Operations() string { return t.Prefix + "operations" }

// Deliver is the activity task queue of one channel (deliver-sms, ...): the
// backlog of each channel waits in Temporal, in priority order.
func (t TaskQueues) Deliver(channel string) string { return t.Prefix + "deliver-" + channel }

// GenerationMemo is the memo field naming a retried run's generation.
const GenerationMemo = "generation"

// RunGeneration answers which generation of its notification a workflow
// run delivers (0 for a first run, which carries no memo).
func RunGeneration(info *workflowpb.WorkflowExecutionInfo) (int, error) {
	field, ok := info.GetMemo().GetFields()[GenerationMemo]
	if !ok {
		return 0, nil
	}
	var g int
	if err := converter.GetDefaultDataConverter().FromPayload(field, &g); err != nil {
		return 0, fmt.Errorf("reading the generation of workflow %s: %w", info.GetExecution().GetWorkflowId(), err)
	}
	return g, nil
}

// OperationWorkflowID is the workflow id of operation id.
func OperationWorkflowID(id uuid.UUID) string { return "operation-" + id.String() }

// WorkflowStarter starts workflows; a client.Client is one.
type WorkflowStarter interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
}

// StartOperation starts the workflow of operation id, or finds it running.
// A closed run of an operation still RUNNING in PostgreSQL (an operator
// terminated it) is followed by a new run, which goes on from the
// operation's cursor.
func StartOperation(ctx context.Context, tc WorkflowStarter, tq TaskQueues, id uuid.UUID, summary string) error {
	_, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    OperationWorkflowID(id),
		TaskQueue:             tq.Operations(),
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		StaticSummary:         summary,
	}, workflows.OperationWorkflow, workflows.OperationInput{OperationID: id.String()})
	if err != nil {
		return fmt.Errorf("starting the workflow of operation %s: %w", id, err)
	}
	return nil
}
