package dispatch

import (
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

func workflowRegisterOptions() workflow.RegisterOptions {
	return workflow.RegisterOptions{Name: workflows.NotificationWorkflow}
}

func registerActivities(w worker.Worker, acts *activities.Activities) {
	w.RegisterActivityWithOptions(acts.Deliver, activity.RegisterOptions{Name: workflows.DeliverActivity})
	w.RegisterActivityWithOptions(acts.Fail, activity.RegisterOptions{Name: workflows.FailActivity})
	w.RegisterActivityWithOptions(acts.Cancel, activity.RegisterOptions{Name: workflows.CancelActivity})
	w.RegisterActivityWithOptions(acts.RecordAttempt, activity.RegisterOptions{Name: workflows.RecordAttemptActivity})
	w.RegisterActivityWithOptions(acts.SettleReceipt, activity.RegisterOptions{Name: workflows.SettleReceiptActivity})
	w.RegisterActivityWithOptions(acts.MarkRetrying, activity.RegisterOptions{Name: workflows.MarkRetryingActivity})
	w.RegisterActivityWithOptions(acts.Fallback, activity.RegisterOptions{Name: workflows.FallbackActivity})
	w.RegisterActivityWithOptions(acts.ReleaseOrdering, activity.RegisterOptions{Name: workflows.ReleaseOrderingActivity})
	w.RegisterActivityWithOptions(acts.SettleDigest, activity.RegisterOptions{Name: workflows.SettleDigestActivity})
	w.RegisterActivityWithOptions(acts.FlushDigest, activity.RegisterOptions{Name: workflows.FlushDigestActivity})
}

// registerOperations registers the operation workflow and its step.
func registerOperations(w worker.Worker, acts *activities.Activities) {
	w.RegisterWorkflowWithOptions(workflows.Operation, workflow.RegisterOptions{Name: workflows.OperationWorkflow})
	w.RegisterActivityWithOptions(acts.OperationStep, activity.RegisterOptions{Name: workflows.OperationStepActivity})
}
