package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"
)

// Contract is openapi.yaml, loaded and validated once, for checking
// exchanges with the API against it: the API's own tests check its
// answers, a client's tests the requests it sends and the fake's answers.
type Contract struct {
	Doc    *openapi3.T
	router routers.Router
}

var (
	contractOnce sync.Once
	theContract  *Contract
	contractErr  error
)

// LoadContract returns the repository's openapi.yaml as a Contract.
func LoadContract(t testing.TB) *Contract {
	t.Helper()
	contractOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			contractErr = err
			return
		}
		doc, err := openapi3.NewLoader().LoadFromFile(filepath.Join(root, "openapi.yaml"))
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
		theContract = &Contract{Doc: doc, router: router}
	})
	require.NoError(t, contractErr)
	return theContract
}

// Route finds the operation of req (whose body is body) in the contract.
// The error is the router's: routers.ErrPathNotFound,
// routers.ErrMethodNotAllowed, or another.
func (c *Contract) Route(req *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	vreq.URL.Scheme, vreq.URL.Host, vreq.Host = "http", "127.0.0.1", "127.0.0.1"
	route, params, err := c.router.FindRoute(vreq)
	if err != nil {
		return nil, err
	}
	return &openapi3filter.RequestValidationInput{
		Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: authenticate},
	}, nil
}

// CheckRequest reports what the contract forbids in the routed request.
func (c *Contract) CheckRequest(in *openapi3filter.RequestValidationInput) error {
	return openapi3filter.ValidateRequest(context.Background(), in)
}

// CheckResponse reports what the contract does not describe in the answer
// to the routed request (its body, headers, content type and status).
func (c *Contract) CheckResponse(in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) error {
	return openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	})
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
