package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"dispatch-engine/internal/periodic"
	"dispatch-engine/internal/store"
	"dispatch-engine/workflows"
)

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

// ResumeOperations starts, every interval until ctx ends, the workflows of
// RUNNING operations idle for longer than idle: one whose API process
// crashed between storing it and starting its workflow, or whose workflow
// was terminated. A running workflow is found and left alone.
func ResumeOperations(ctx context.Context, pool *pgxpool.Pool, tc WorkflowStarter, tq TaskQueues, interval, idle time.Duration, log *zap.Logger) {
	resume := func(ctx context.Context) error {
		ids, err := store.StaleOperations(ctx, pool, idle)
		for _, id := range ids {
			if err := StartOperation(ctx, tc, tq, id, "operation "+id.String()+" (resumed)"); err != nil {
				log.Warn("could not resume an operation", zap.String("operation_id", id.String()), zap.Error(err))
			}
		}
		return err
	}
	periodic.Run(ctx, interval, log, "resuming idle operations", resume)
}
