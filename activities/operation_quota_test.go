package activities_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// TestARetryOperationIsChargedToTheTenantsQuotaAsItGoes: a retry operation
// accepts notifications again, so each one it retries counts against its
// tenant's acceptance quota; with 4 left of the day's quota and 6 failed
// notifications, a step retries 4, waits for the quota for the rest of the
// step, and the day's quota is spent.
func TestARetryOperationIsChargedToTheTenantsQuotaAsItGoes(t *testing.T) {
	pool, _ := testenv.Pool(t)
	rdb, prefix := testenv.Redis(t)
	q := quota.New(rdb, prefix+"quota:")
	ctx := context.Background()
	day := 4
	tn, err := store.SetTenant(ctx, pool, "retrying", store.TenantSettings{AcceptPerDay: &day})
	require.NoError(t, err)
	const failed = 6
	for i := range failed {
		n, err := store.CreateNotification(ctx, pool, store.NewNotification{
			ID: uuid.Must(uuid.NewV7()), TenantID: tn.ID, Channel: notification.SMS, Priority: notification.Normal,
			Recipient: "+1555010" + string(rune('0'+i)), Content: "hi", Metadata: json.RawMessage(`{}`),
		})
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `DELETE FROM outbox WHERE notification_id = $1`, n.ID)
		require.NoError(t, err)
		_, err = store.Fail(ctx, pool, n.ID, notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastError: "503"})
		require.NoError(t, err)
	}
	st := notification.StatusFailed
	op, _, err := store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), TenantID: tn.ID,
		Action: store.ActionRetry, Filter: store.OperationFilter{Status: &st, Tenant: &tn.ID}, MaxPerSecond: 5000})
	require.NoError(t, err)
	require.EqualValues(t, failed, op.Matched)

	acts := &activities.Activities{Pool: pool, Quotas: q, Metrics: metrics.NewWorker(), Log: zap.NewNop()}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.OperationStep, activity.RegisterOptions{Name: workflows.OperationStepActivity})
	_, err = env.ExecuteActivity(workflows.OperationStepActivity, workflows.OperationStepInput{OperationID: op.ID.String()})
	require.NoError(t, err)

	op, err = store.GetOperation(ctx, pool, op.ID)
	require.NoError(t, err)
	require.EqualValues(t, day, op.Succeeded, "retried as far as the quota goes")
	var still int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM notifications WHERE tenant_id = $1 AND status = 'FAILED'`, tn.ID).Scan(&still))
	require.Equal(t, failed-day, still, "the rest wait for the quota")
	d, err := q.Peek(ctx, tn.ID.String(), quota.Limits{PerDay: day})
	require.NoError(t, err)
	w, _ := d.Window(quota.PolicyPerDay)
	require.Equal(t, day, w.Used, "each retried notification was counted")
}
