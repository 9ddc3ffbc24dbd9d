package dispatch

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/periodic"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
)

// ResumeOperations starts, every interval until ctx ends, the workflows of
// RUNNING operations idle for longer than idle: one whose API process
// crashed between storing it and starting its workflow, or whose workflow
// was terminated. A running workflow is found and left alone.
func ResumeOperations(ctx context.Context, pool *pgxpool.Pool, tc wfclient.WorkflowStarter, tq wfclient.TaskQueues, interval, idle time.Duration, log *zap.Logger) {
	resume := func(ctx context.Context) error {
		ids, err := store.StaleOperations(ctx, pool, idle)
		for _, id := range ids {
			if err := wfclient.StartOperation(ctx, tc, tq, id, "operation "+id.String()+" (resumed)"); err != nil {
				log.Warn("could not resume an operation", zap.String("operation_id", id.String()), zap.Error(err))
			}
		}
		return err
	}
	periodic.Run(ctx, interval, log, "resuming idle operations", resume)
}
