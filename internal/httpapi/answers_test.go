package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// A wrong method is a 405 whether or not the request carries a key: which
// methods a path serves is public (openapi.yaml), and a receipt's path takes
// no API key at all.
func TestWrongMethodWithoutAKeyIs405NotUnauthorized(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	for _, tc := range []struct {
		method, path, allow string
	}{
		{http.MethodGet, "/v1/receipts/push", "POST"},
		{http.MethodGet, "/v1/notifications/" + id + "/cancel", "POST"},
		{http.MethodGet, "/v1/notifications/batch", "POST"},
		{http.MethodDelete, "/v1/notifications", "GET, HEAD, POST"},
		{http.MethodPost, "/v1/providers", "GET, HEAD"},
	} {
		resp, body := f.do(tc.method, tc.path, nil, "Authorization", "")
		p := requireProblem(t, resp, body, http.StatusMethodNotAllowed)
		require.Equal(t, "/problems/method-not-allowed", p.Type, "%s %s", tc.method, tc.path)
		require.Equal(t, tc.allow, resp.Header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
	// A known method without a key is still refused.
	resp, body := f.do(http.MethodGet, "/v1/notifications", nil, "Authorization", "")
	requireProblem(t, resp, body, http.StatusUnauthorized)
}

// A receipt carries no API key; its body has a limit of its own, and a
// body over it is a 413, not a 401.
func TestReceiptOverItsBodyLimitIs413NotUnauthorized(t *testing.T) {
	f := setup(t)
	answer := rawRequest(t, f, "/v1/receipts/push", 1<<20)
	require.True(t, strings.HasPrefix(answer, "HTTP/1.1 413"), "answer: %q", answer)
	require.Contains(t, answer, "/problems/payload-too-large")
	require.Contains(t, answer, "application/problem+json")

	// A receipt larger than an anonymous request's 4 KiB reaches the
	// handler (no provider "push" takes receipts here: 404).
	body := `{"webhookId":"` + uuid.NewString() + `","status":"failed","reason":"` + strings.Repeat("x", 8<<10) + `"}`
	resp, raw := f.post("/v1/receipts/push", body, "Authorization", "")
	requireProblem(t, resp, []byte(raw), http.StatusNotFound)
}
