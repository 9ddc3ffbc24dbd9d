package activities_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// TestTheWorkflowsWordsAreTheStoredOnes: the workflows package may import
// only the Temporal SDK, so it names statuses and receipts itself; they
// must be the words the rows and the providers use.
func TestTheWorkflowsWordsAreTheStoredOnes(t *testing.T) {
	t.Parallel()
	for wf, stored := range map[workflows.Status]notification.Status{
		workflows.StatusScheduled:  notification.StatusScheduled,
		workflows.StatusProcessing: notification.StatusProcessing,
		workflows.StatusRetrying:   notification.StatusRetrying,
		workflows.StatusSent:       notification.StatusSent,
		workflows.StatusDelivered:  notification.StatusDelivered,
		workflows.StatusFailed:     notification.StatusFailed,
		workflows.StatusCancelled:  notification.StatusCancelled,
	} {
		require.Equal(t, string(stored), string(wf))
		require.Equal(t, stored.Terminal(), wf.Terminal(), "%s", wf)
	}
	require.Equal(t, provider.ReceiptDelivered, workflows.ReceiptDelivered)
	require.Equal(t, provider.ReceiptFailed, workflows.ReceiptFailed)
	require.Equal(t, provider.ReceiptNone, workflows.ReceiptNone)
}
