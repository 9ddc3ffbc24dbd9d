package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// TestRecipientSideCallsReachTheirPathsAndReadTheirAnswers: the wrappers
// send each call to its path (an E.164 number's '+' intact), read a 201 and
// a 204, and turn a 404 into a *Problem.
func TestRecipientSideCallsReachTheirPathsAndReadTheirAnswers(t *testing.T) {
	var (
		mu    sync.Mutex
		calls []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.EscapedPath()+" "+string(body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/suppressions/sms/+14155550123":
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]any{"channel": "sms", "recipient": "+14155550123", "reason": "manual",
				"createdAt": "2026-01-02T15:04:05Z", "links": map[string]string{"self": "/v1/suppressions/sms/+14155550123"}})
		case r.Method == http.MethodPatch && r.Header.Get("Content-Type") == "application/merge-patch+json":
			_ = json.NewEncoder(w).Encode(map[string]any{"id": "ada", "addresses": map[string]any{}, "preferences": map[string]any{},
				"createdAt": "2026-01-02T15:04:05Z", "updatedAt": "2026-01-02T15:04:05Z", "links": map[string]string{"self": "/v1/recipients/ada"}})
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"type":"/problems/not-found","title":"Not found","status":404,"detail":"no recipient ada"}`))
		}
	}))
	t.Cleanup(srv.Close)
	d, err := client.New(srv.URL, testKey)
	require.NoError(t, err)
	ctx := context.Background()

	s, err := d.Suppress(ctx, client.ChannelSms, "+14155550123", client.SuppressionInput{})
	require.NoError(t, err)
	require.Equal(t, client.SuppressionReasonManual, s.Reason)
	require.NoError(t, d.Unsuppress(ctx, client.ChannelSms, "+14155550123"))
	patched, err := d.PatchRecipient(ctx, "ada", map[string]any{"timezone": nil})
	require.NoError(t, err)
	require.Equal(t, "ada", patched.ID)
	require.NoError(t, d.DeleteRecipient(ctx, "ada"))
	_, err = d.GetRecipient(ctx, "ada")
	var p *client.Problem
	require.ErrorAs(t, err, &p)
	require.Equal(t, http.StatusNotFound, p.Status)

	require.Equal(t, []string{
		"PUT /v1/suppressions/sms/+14155550123 {}",
		"DELETE /v1/suppressions/sms/+14155550123 ",
		`PATCH /v1/recipients/ada {"timezone":null}`,
		"DELETE /v1/recipients/ada ",
		"GET /v1/recipients/ada ",
	}, calls)
}
