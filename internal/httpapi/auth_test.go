package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

const smsBody = `{"channel":"sms","recipient":"+14155550123","content":"hi"}`

func TestV1WithoutAPIKeyIs401Problem(t *testing.T) {
	f := setup(t)
	for _, tc := range []struct {
		name    string
		headers []string
	}{
		{"no key", []string{"Authorization", ""}},
		{"unknown bearer key", []string{"Authorization", "Bearer not-a-key-of-this-server"}},
		{"unknown X-API-Key", []string{"Authorization", "", "X-API-Key", "not-a-key-of-this-server"}},
		{"basic scheme", []string{"Authorization", "Basic " + f.apiKey}},
		{"empty bearer", []string{"Authorization", "Bearer "}},
		// An Authorization header is the one used, even next to a good X-API-Key.
		{"bad bearer beside a good X-API-Key", []string{"Authorization", "Bearer wrong-key-0123456789", "X-API-Key", f.apiKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := f.in(t)
			for _, req := range []struct{ method, path, body string }{
				{http.MethodPost, "/v1/notifications", smsBody},
				{http.MethodGet, "/v1/notifications", ""},
				{http.MethodGet, "/v1/batches/0195b5f2-7f00-7000-8000-000000000000", ""},
				{http.MethodGet, "/v1/no-such-route", ""},
			} {
				var body []byte
				if req.body != "" {
					body = []byte(req.body)
				}
				resp, raw := f.do(req.method, req.path, body, tc.headers...)
				p := requireProblem(t, resp, raw, http.StatusUnauthorized)
				require.Equal(t, "/problems/unauthorized", p.Type)
				require.Equal(t, `Bearer realm="dispatch-engine"`, resp.Header.Get("WWW-Authenticate"))
				require.NotContains(t, string(raw), f.apiKey, "the answer never echoes a key")
			}
		})
	}
	require.Zero(t, count(t, f.pool, "notifications"))
	// A method a path does not serve is 405 with or without a key
	// (TestWrongMethodWithoutAKeyIs405NotUnauthorized): the answer says
	// nothing of the key.
}

func TestAPIKeyIsAcceptedAsBearerTokenOrXAPIKey(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", smsBody, "Authorization", "Bearer "+f.apiKey)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	resp, body = f.post("/v1/notifications", smsBody, "Authorization", "bearer "+f.apiKey)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the scheme is case-insensitive; body: %s", body)
	resp, body = f.post("/v1/notifications", smsBody, "Authorization", "", "X-API-Key", f.apiKey)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	require.Equal(t, 3, count(t, f.pool, "notifications"))
}

func TestEveryConfiguredAPIKeyIsAccepted(t *testing.T) {
	const first, second = "first-key-0123456789", "second-key-0123456789"
	f := setup(t, withConfig(func(c *config) { c.APIKeys = []string{first, " " + second + " "} }))
	for _, key := range []string{first, second} {
		resp, body := f.get("/v1/notifications", "Authorization", "Bearer "+key)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	}
}

func TestNoConfiguredAPIKeyRefusesEveryV1Request(t *testing.T) {
	f := setup(t, withConfig(func(c *config) { c.APIKeys = nil }))
	resp, body := f.get("/v1/notifications")
	requireProblem(t, resp, body, http.StatusUnauthorized)
	resp, body = f.get("/v1/notifications", "Authorization", "Bearer ")
	requireProblem(t, resp, body, http.StatusUnauthorized)
}

func TestProbesAndMetricsNeedNoAPIKey(t *testing.T) {
	f := setup(t)
	for _, path := range []string{"/livez", "/readyz", "/metrics"} {
		resp, body := f.get(path, "Authorization", "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
}
