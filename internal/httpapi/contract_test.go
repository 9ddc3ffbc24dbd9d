package httpapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
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
	*testenv.Contract
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	return &contract{testenv.LoadContract(t)}
}

// verify checks one exchange against the contract.
func (c *contract) verify(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	input, err := c.Route(req, reqBody)

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

	if reqErr := c.CheckRequest(input); reqErr != nil && resp.StatusCode/100 != 4 {
		return fmt.Errorf("the contract forbids this request (%v), but the API answered %d", reqErr, resp.StatusCode)
	}
	if err := c.CheckResponse(input, resp, respBody); err != nil {
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
	if err := c.Doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
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
