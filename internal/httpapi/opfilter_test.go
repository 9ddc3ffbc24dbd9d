package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// runToTheEnd runs the operation's pages until it is finished.
func (f *fixture) runToTheEnd(id string) operationAnswer {
	f.t.Helper()
	for range 10 {
		res, err := store.RunPage(context.Background(), f.pool, uuid.MustParse(id), 100)
		require.NoError(f.t, err)
		if res.Done {
			break
		}
	}
	resp, body := f.get("/v1/operations/" + id)
	require.Equal(f.t, http.StatusOK, resp.StatusCode, "body: %s", body)
	return decodeOperation(f.t, body)
}

// An operation's filter shows its recipient masked, while it runs and
// after: a cancel, a retry or a failed operation never claims an erasure
// that did not happen, and keeps nothing of the address but its mask. An
// erase shows [erased] once it finished, and so does every earlier
// operation of the tenant that named the person it erased.
func TestAFinishedOperationShowsItsRecipientMaskedAndOnlyAnEraseErased(t *testing.T) {
	const person = "+14155550123" // smsBody's recipient
	masked := notification.MaskRecipient("", person)
	f := setup(t, withOperationStarter(&operationStarts{}))
	f.create(smsBody)
	other := f.startOperation(`{"action":"cancel","filter":{"recipient":"+14155550199"}}`)

	cancel := f.startOperation(`{"action":"cancel","filter":{"recipient":"` + person + `"}}`)
	require.Equal(t, masked, cancel.Filter["recipient"])
	done := f.runToTheEnd(cancel.ID)
	require.Equal(t, "COMPLETED", done.Status)
	require.EqualValues(t, 1, done.Succeeded)
	require.Equal(t, masked, done.Filter["recipient"], "a cancel erased nothing")

	failed := f.startOperation(`{"action":"retry","filter":{"recipient":"` + person + `"}}`)
	require.NoError(t, store.FailOperation(context.Background(), f.pool, uuid.MustParse(failed.ID), "the database refused the page"))
	_, body := f.get("/v1/operations/" + failed.ID)
	require.Equal(t, masked, decodeOperation(t, body).Filter["recipient"], "a failed retry erased nothing")

	require.Zero(t, count(t, f.pool, "operations WHERE status <> 'RUNNING' AND filter::text LIKE '%"+person+"%'"),
		"a finished operation keeps only the mask")

	erase := f.startOperation(`{"action":"erase","filter":{"recipient":"` + person + `"}}`)
	done = f.runToTheEnd(erase.ID)
	require.Equal(t, "COMPLETED", done.Status)
	require.Equal(t, store.Erased, done.Filter["recipient"])
	for _, id := range []string{cancel.ID, failed.ID} {
		_, body := f.get("/v1/operations/" + id)
		require.Equal(t, store.Erased, decodeOperation(t, body).Filter["recipient"], "it named the person erased")
	}
	_, body = f.get("/v1/operations/" + other.ID)
	require.Equal(t, notification.MaskRecipient("", "+14155550199"), decodeOperation(t, body).Filter["recipient"],
		"another person's operation is left alone")
}
