package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// contract holds the API's answers to openapi.yaml. Every request the tests
// send goes through fixture.do, which checks both directions:
//   - a request the contract forbids must be refused with a 4xx;
//   - every answer must be one the contract describes for that operation
//     and status (body, headers, content type), so an answer that drifts from
//     openapi.yaml fails the test that caused it.
//
// Paths or methods the contract does not list must answer a 404 or 405
// problem (or 401 under /v1 without a key), as its description says.
type contract struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	contractOnce sync.Once
	theContract  *contract
	contractErr  error
)

func loadContract(t *testing.T) *contract {
	t.Helper()
	contractOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile("../../openapi.yaml")
		if err != nil {
			contractErr = fmt.Errorf("loading openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			contractErr = fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
			return
		}
		doc.Servers = nil // match any host
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			contractErr = fmt.Errorf("routing openapi.yaml: %w", err)
			return
		}
		theContract = &contract{doc: doc, router: router}
	})
	require.NoError(t, contractErr)
	return theContract
}

// authenticate stands in for the server's key check: the contract only
// says where a key goes, not which keys are valid.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header
	switch in.SecurityScheme.Type {
	case "http":
		// The scheme is case-insensitive (RFC 9110 §11.1).
		if scheme, _, _ := strings.Cut(h.Get("Authorization"), " "); !strings.EqualFold(scheme, "Bearer") {
			return errors.New("no bearer token")
		}
	case "apiKey":
		if h.Get(in.SecurityScheme.Name) == "" {
			return errors.New("no " + in.SecurityScheme.Name)
		}
	}
	return nil
}

// verify checks one exchange against the contract.
func (c *contract) verify(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	ctx := context.Background()
	vreq := req.Clone(ctx)
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	vreq.URL.Scheme, vreq.URL.Host, vreq.Host = "http", "127.0.0.1", "127.0.0.1"
	route, params, err := c.router.FindRoute(vreq)

	// 405 also comes for a path the router matches only through a parameter
	// (GET /v1/notifications/batch looks like GET /v1/notifications/{id}).
	if resp.StatusCode == http.StatusMethodNotAllowed {
		allow := resp.Header.Get("Allow")
		if allow == "" || slices.Contains(strings.Split(allow, ", "), req.Method) {
			return fmt.Errorf("405 with Allow %q for %s", allow, req.Method)
		}
		return c.verifyProblem(resp, respBody)
	}
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("%s %s: the contract has no such operation, but the API answered %d, not 405", req.Method, req.URL.Path, resp.StatusCode)
		}
		return c.verifyProblem(resp, respBody)
	case errors.Is(err, routers.ErrPathNotFound):
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("%s %s: the contract has no such path, but the API answered %d, not 404", req.Method, req.URL.Path, resp.StatusCode)
		}
		return c.verifyProblem(resp, respBody)
	case err != nil:
		return fmt.Errorf("finding %s %s in the contract: %w", req.Method, req.URL.Path, err)
	}

	input := &openapi3filter.RequestValidationInput{
		Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: authenticate},
	}
	if reqErr := openapi3filter.ValidateRequest(ctx, input); reqErr != nil && resp.StatusCode/100 != 4 {
		return fmt.Errorf("the contract forbids this request (%v), but the API answered %d", reqErr, resp.StatusCode)
	}
	input.Options = &openapi3filter.Options{MultiError: true, AuthenticationFunc: authenticate}
	err = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(respBody)),
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	})
	if err != nil {
		return fmt.Errorf("%s %s answered %d outside the contract: %w\nbody: %s", req.Method, req.URL.Path, resp.StatusCode, err, respBody)
	}
	return nil
}

// verifyProblem checks an answer that no operation describes: a problem
// document per the contract's Problem schema.
func (c *contract) verifyProblem(resp *http.Response, body []byte) error {
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		return fmt.Errorf("%d answered with Content-Type %q, not application/problem+json", resp.StatusCode, ct)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		return fmt.Errorf("%d answered without X-Request-Id", resp.StatusCode)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%d answered a body that is not JSON: %w", resp.StatusCode, err)
	}
	if err := c.doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		return fmt.Errorf("%d answered a body outside the Problem schema: %w\nbody: %s", resp.StatusCode, err, body)
	}
	return nil
}

func TestResponsesFollowTheOpenAPIContract(t *testing.T) {
	f := setup(t, withChecks(map[string]checkFn{"postgres": down, "redis": up}))

	_, body := f.post("/v1/notifications",
		`{"channel":"email","recipient":"user@example.com","subject":"Hi","content":"hello","metadata":{"k":"v"}}`)
	id := extractID(t, body)
	_, batch := f.post("/v1/notifications/batch", `{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"a"}]}`)
	var b struct {
		BatchID string `json:"batchId"`
	}
	require.NoError(t, json.Unmarshal(batch, &b))

	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodGet, "/v1/notifications/" + id, "", http.StatusOK},
		{http.MethodGet, "/v1/notifications/" + id + "/attempts", "", http.StatusOK},
		{http.MethodGet, "/v1/notifications?limit=1", "", http.StatusOK},
		{http.MethodGet, "/v1/batches/" + b.BatchID, "", http.StatusOK},
		{http.MethodPost, "/v1/notifications/" + id + "/cancel", "", http.StatusAccepted},
		{http.MethodPost, "/v1/notifications/" + id + "/cancel", "", http.StatusOK},
		{http.MethodGet, "/v1/notifications/0195b5f2-7f00-7000-8000-000000000000", "", http.StatusNotFound},
		{http.MethodGet, "/v1/notifications/not-a-uuid", "", http.StatusBadRequest},
		{http.MethodPost, "/v1/notifications", `{"channel":"sms"`, http.StatusBadRequest},
		{http.MethodPost, "/v1/notifications", `{"channel":"fax","recipient":"x","content":"y"}`, http.StatusUnprocessableEntity},
		{http.MethodGet, "/livez", "", http.StatusOK},
		{http.MethodGet, "/readyz", "", http.StatusServiceUnavailable},
		{http.MethodGet, "/metrics", "", http.StatusOK},
	} {
		resp, _ := f.do(tc.method, tc.path, []byte(tc.body))
		require.Equal(t, tc.want, resp.StatusCode, "%s %s", tc.method, tc.path)
	}
}

func TestContractCheckCatchesAnAnswerThatDrifts(t *testing.T) {
	c := loadContract(t)
	id := uuid.NewString()
	req := httptest.NewRequest(http.MethodGet, "/v1/notifications/"+id, nil)
	req.Header.Set("Authorization", "Bearer k")
	answer := func(status int, body string) error {
		resp := &http.Response{StatusCode: status, Header: http.Header{
			"Content-Type": {"application/json"}, "X-Request-Id": {"r1"},
		}}
		return c.verify(req, nil, resp, []byte(body))
	}
	good := `{"id":"` + id + `","status":"QUEUED","channel":"sms","priority":"HIGH","recipient":"+14155550123",
		"content":"hi","attempts":0,"retries":0,"createdAt":"2026-01-02T15:04:05Z","updatedAt":"2026-01-02T15:04:05Z",
		"workflowId":"notification-` + id + `","links":{"self":"s","attempts":"a","temporal":"t"}}`
	require.NoError(t, answer(http.StatusOK, good))

	require.Error(t, answer(http.StatusOK, strings.Replace(good, `"attempts":0,`, `"attempts":0,"undocumented":true,`, 1)),
		"a field the contract does not list")
	require.Error(t, answer(http.StatusOK, strings.Replace(good, `"QUEUED"`, `"WAITING"`, 1)), "a status outside the enum")
	require.Error(t, answer(http.StatusOK, strings.Replace(good, `"channel":"sms",`, ``, 1)), "a required field missing")
	require.Error(t, answer(http.StatusTeapot, good), "a status the operation does not declare")
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
