package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"dispatch-engine/internal/health"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/testenv"
)

// contract holds the API's answers to openapi.yaml.
type contract struct {
	router routers.Router
}

func loadContract(t *testing.T) contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../../openapi.yaml")
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()), "openapi.yaml is not a valid OpenAPI document")
	doc.Servers = nil // match any host
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return contract{router: router}
}

// check sends req to the app and fails the test unless both the request and
// the response conform to the contract. It returns the status and body.
func (c contract) check(t *testing.T, s *Server, method, path, body string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.App().Test(req, -1)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)

	vreq := httptest.NewRequest(method, "http://127.0.0.1"+path, strings.NewReader(body))
	vreq.Header = req.Header
	route, params, err := c.router.FindRoute(vreq)
	require.NoError(t, err, "%s %s is not in openapi.yaml", method, path)
	input := &openapi3filter.RequestValidationInput{
		Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true},
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(raw)),
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	})
	var schemaErr openapi3.MultiError
	if errors.As(err, &schemaErr) {
		t.Logf("body: %s", raw)
	}
	require.NoError(t, err, "%s %s answered %d outside the contract", method, path, resp.StatusCode)
	return resp.StatusCode, raw
}

func TestResponsesFollowTheOpenAPIContract(t *testing.T) {
	pool, _ := testenv.Pool(t)
	down := func(context.Context) error { return errors.New("connection refused") }
	up := func(context.Context) error { return nil }
	s := New(Config{TemporalUIURL: "http://127.0.0.1:8233", TemporalNamespace: "default"}, pool,
		map[string]health.Check{"postgres": up, "redis": down}, metrics.NewAPI(), zap.NewNop())
	c := loadContract(t)

	code, body := c.check(t, s, http.MethodPost, "/v1/notifications",
		`{"channel":"email","recipient":"user@example.com","subject":"Hi","content":"hello","metadata":{"k":"v"}}`)
	require.Equal(t, http.StatusAccepted, code)
	id := extractID(t, body)

	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodGet, "/v1/notifications/" + id, "", http.StatusOK},
		{http.MethodGet, "/v1/notifications/0195b5f2-7f00-7000-8000-000000000000", "", http.StatusNotFound},
		{http.MethodGet, "/v1/notifications/not-a-uuid", "", http.StatusBadRequest},
		{http.MethodPost, "/v1/notifications", `{"channel":"sms"`, http.StatusBadRequest},
		{http.MethodPost, "/v1/notifications", `{"channel":"fax","recipient":"x","content":"y"}`, http.StatusUnprocessableEntity},
		{http.MethodGet, "/livez", "", http.StatusOK},
		{http.MethodGet, "/readyz", "", http.StatusServiceUnavailable},
	} {
		code, _ := c.check(t, s, tc.method, tc.path, tc.body)
		require.Equal(t, tc.want, code, "%s %s", tc.method, tc.path)
	}
}

func extractID(t *testing.T, body []byte) string {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	require.NotEmpty(t, r.ID, "no id in %s", body)
	return r.ID
}
