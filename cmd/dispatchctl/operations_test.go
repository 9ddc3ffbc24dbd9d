package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

func TestOperationsCreateSendsTheFilterAndWaits(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	var created client.CreateOperation
	f.handle("POST /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, json.NewDecoder(r.Body).Decode(&created))
		w.Header().Set("Location", "/v1/operations/"+id.String())
		answer(w, http.StatusAccepted, operation(id, client.OperationStatusRUNNING, created.Filter))
	})
	var gets atomic.Int32
	f.handle("GET /v1/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		op := operation(id, client.OperationStatusRUNNING, created.Filter)
		op.Matched = 500
		switch gets.Add(1) {
		case 1:
			op.Processed, op.Succeeded = 200, 200
		default:
			op.Status, op.Processed, op.Succeeded, op.Skipped = client.OperationStatusCOMPLETED, 500, 498, 2
			op.SkippedReasons = map[string]int{"in-flight": 2}
			op.FinishedAt = &t0
		}
		answer(w, http.StatusOK, op)
	})

	res := f.dispatchctl("operations", "create", "--action", "retry", "--status", "FAILED", "--channel", "sms",
		"--created-from", "2026-01-02T14:00:00Z", "--failure-reason", "exhausted", "--max-per-second", "200",
		"--idempotency-key", "retry-sms", "--wait")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	reqs := f.requests()
	require.Len(t, reqs, 3)
	assert.Equal(t, "POST /v1/operations", reqs[0].Method+" "+reqs[0].Path)
	assert.Equal(t, "retry-sms", reqs[0].Header.Get("Idempotency-Key"))
	assert.Equal(t, "Bearer test-key", reqs[0].Header.Get("Authorization"))
	assert.JSONEq(t, `{"action":"retry","filter":{"status":"FAILED","channel":"sms","createdFrom":"2026-01-02T14:00:00Z","failureReason":"exhausted"},"maxPerSecond":200}`, string(reqs[0].Body))
	assert.Equal(t, "GET /v1/operations/"+id.String(), reqs[2].Method+" "+reqs[2].Path)
	assertField(t, res.stdout, "status", "COMPLETED")
	assertField(t, res.stdout, "skipped", "2 (in-flight=2)")
	assertField(t, res.stdout, "filter", "status=FAILED channel=sms created-from=2026-01-02T14:00:00.000Z failure-reason=exhausted")
	assert.Equal(t, "RUNNING: processed 200 of 500 (succeeded 200, skipped 0)\nCOMPLETED: processed 500 of 500 (succeeded 498, skipped 2)\n", res.stderr)
}

func TestOperationsCreateWaitForACancelledOneExitsOne(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	filter := client.OperationFilter{Channel: ptr(client.ChannelPush)}
	f.handle("POST /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/v1/operations/"+id.String())
		answer(w, http.StatusAccepted, operation(id, client.OperationStatusRUNNING, filter))
	})
	f.handle("GET /v1/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, operation(id, client.OperationStatusCANCELLED, filter))
	})
	res := f.dispatchctl("operations", "create", "--action", "cancel", "--channel", "push", "--wait", "--json")
	assert.Equal(t, app.ExitFailed, res.code)
	var op client.Operation
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &op), res.stdout)
	assert.Equal(t, client.OperationStatusCANCELLED, op.Status)
	got := requireJSONFailure(t, res, app.ExitFailed, "outcome")
	assert.Equal(t, "operation "+id.String()+" ended CANCELLED", got.Error.Message)
}

func TestOperationsDryRun(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("POST /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.DryRun{DryRun: true, Action: client.DryRunActionErase,
			Filter: client.OperationFilter{Recipient: ptr("+14•••••••23")}, Matched: 12})
	})

	res := f.dispatchctl("operations", "create", "--action", "erase", "--recipient", "+14155550123", "--dry-run")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"action":"erase","filter":{"recipient":"+14155550123"},"dryRun":true}`, string(f.only().Body))
	assert.Equal(t, "dry run: erase would act on 12 notifications matching recipient=+14•••••••23\n", res.stdout)
}

func TestOperationsGetListCancel(t *testing.T) {
	f := newFakeAPI(t)
	id, other := newID(), newID()
	filter := client.OperationFilter{Status: ptr(client.StatusFAILED)}
	f.handle("GET /v1/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, operation(id, client.OperationStatusRUNNING, filter))
	})
	f.handle("POST /v1/operations/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		op := operation(id, client.OperationStatusRUNNING, filter)
		op.CancelRequestedAt = &t0
		answer(w, http.StatusAccepted, op)
	})
	f.handle("GET /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cursor") == "" {
			answer(w, http.StatusOK, client.OperationPage{Data: []client.Operation{operation(id, client.OperationStatusRUNNING, filter)}, NextCursor: ptr("c2")})
			return
		}
		answer(w, http.StatusOK, client.OperationPage{Data: []client.Operation{operation(other, client.OperationStatusCOMPLETED, filter)}})
	})

	res := f.dispatchctl("operations", "get", id.String())
	require.Equal(t, app.ExitOK, res.code)
	assertField(t, res.stdout, "id", id.String())
	assertField(t, res.stdout, "action", "retry")

	res = f.dispatchctl("operations", "cancel", id.String())
	require.Equal(t, app.ExitOK, res.code)
	assertField(t, res.stdout, "cancel requested", "2026-01-02T15:04:05.123Z")

	res = f.dispatchctl("operations", "list")
	require.Equal(t, app.ExitOK, res.code)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 2)
	assert.Regexp(t, `^ID\s+ACTION\s+STATUS\s+PROCESSED/MATCHED`, lines[0])
	assert.Regexp(t, `^`+id.String()+`\s+retry\s+RUNNING\s+0/0\s+0\s+0\s+2026-01-02T15:04:05.123Z\s+status=FAILED$`, lines[1])
	assert.Equal(t, "more: --cursor c2 (or --all)\n", res.stderr)

	res = f.dispatchctl("operations", "list", "--all", "--json", "--limit", "1")
	require.Equal(t, app.ExitOK, res.code)
	var page client.OperationPage
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &page))
	require.Len(t, page.Data, 2)
	assert.Equal(t, other, page.Data[1].ID)

	var calls []string
	for _, r := range f.requests() {
		calls = append(calls, r.Method+" "+r.URL())
	}
	assert.Equal(t, []string{
		"GET /v1/operations/" + id.String(),
		"POST /v1/operations/" + id.String() + "/cancel",
		"GET /v1/operations",
		"GET /v1/operations?limit=1",
		"GET /v1/operations?cursor=c2&limit=1",
	}, calls)
}
