package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// suppressionReason is the reason the default tenant's suppression list
// gives address on channel, "" when it is not there.
func (f *fixture) suppressionReason(channel, address string) string {
	f.t.Helper()
	var reason string
	err := f.pool.QueryRow(context.Background(), `SELECT reason FROM suppressions
		WHERE tenant_id = $1 AND channel = $2 AND address = $3`, store.DefaultTenantID, channel, address).Scan(&reason)
	if err != nil {
		return ""
	}
	return reason
}

func TestABouncedReceiptSuppressesTheAddress(t *testing.T) {
	f := setup(t, withProviders(t))
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"dead-token","content":"hi"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeSent, notification.StatusSent)

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "bounced"})

	require.Equal(t, http.StatusAccepted, resp.StatusCode, answer)
	require.Equal(t, "bounced", f.suppressionReason("push", "dead-token"))
	require.Empty(t, f.suppressionReason("push", "device-token-1"), "only the bounced address")
}

func TestAComplaintAfterTheDeliverySuppressesTheAddressAndOptsItOutOfTheCategory(t *testing.T) {
	f := setup(t, withProviders(t))
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"annoyed-token","content":"sale","category":"marketing"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeDelivered, notification.StatusDelivered)

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "complained"})

	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, false, answer["applied"], "the delivered notification itself does not change")
	require.Equal(t, "complained", f.suppressionReason("push", "annoyed-token"))
	var optedOut bool
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM opt_outs
		WHERE tenant_id = $1 AND channel = 'push' AND address = 'annoyed-token' AND category = 'marketing')`,
		store.DefaultTenantID).Scan(&optedOut))
	require.True(t, optedOut)
}

func TestAFailedReceiptSuppressesNothing(t *testing.T) {
	f := setup(t, withProviders(t))
	id := uuid.MustParse(f.create(`{"channel":"push","recipient":"busy-token","content":"hi"}`))
	f.attempted(id, 1, "hook", workflows.OutcomeSent, notification.StatusSent)

	resp, answer := f.hookReceipt(map[string]string{"webhookId": id.String(), "status": "failed"})

	require.Equal(t, http.StatusAccepted, resp.StatusCode, answer)
	require.Empty(t, f.suppressionReason("push", "busy-token"))
}
