package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// apiClient talks to the Dispatch Engine API.
type apiClient struct {
	base     string
	key      string
	http     *http.Client
	hasBatch bool
}

func newAPIClient(base, key string, conns int) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns + 8
	tr.MaxIdleConnsPerHost = conns + 8
	return &apiClient{
		base: strings.TrimRight(base, "/"),
		key:  key,
		http: &http.Client{Transport: tr, Timeout: 60 * time.Second},
	}
}

// defaultAPIKey is the first of API_KEYS (environment, then .env), else the
// key make run leaves in .data/dev-api-key, else none.
func defaultAPIKey() string {
	for k := range strings.SplitSeq(setting("API_KEYS", ""), ",") {
		if k = strings.TrimSpace(k); k != "" {
			return k
		}
	}
	if b, err := os.ReadFile(".data/dev-api-key"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

// createRequest is the body of one notification.
type createRequest struct {
	Channel   string  `json:"channel"`
	Recipient string  `json:"recipient"`
	Subject   *string `json:"subject,omitempty"`
	Content   string  `json:"content"`
	Priority  string  `json:"priority"`
}

// created is the part of the API's answer the bench uses.
type created struct {
	ID         string    `json:"id"`
	Channel    string    `json:"channel"`
	CreatedAt  time.Time `json:"createdAt"`
	WorkflowID string    `json:"workflowId"`
}

var (
	channels   = []string{"sms", "email", "push"}
	priorities = []string{"HIGH", "NORMAL", "LOW"}
)

// notificationFor returns the i-th notification of a run: channels rotate,
// and priorities rotate across channels, so every pair occurs.
func notificationFor(run string, i int) createRequest {
	ch := channels[i%3]
	req := createRequest{
		Channel:  ch,
		Priority: priorities[(i/3)%3],
		Content:  fmt.Sprintf("bench %s #%d", run, i),
	}
	switch ch {
	case "sms":
		req.Recipient = "+14155550123"
	case "email":
		req.Recipient = "bench@example.com"
		subject := "Bench " + run
		req.Subject = &subject
	case "push":
		req.Recipient = "device-token-0123456789"
	}
	return req
}

// statusError is an answer the bench did not expect.
type statusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// do sends one request with the API key and decodes a 2xx answer into out.
func (a *apiClient) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		if len(raw) > 400 {
			raw = raw[:400]
		}
		return resp.StatusCode, &statusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// create POSTs one notification.
func (a *apiClient) create(ctx context.Context, n createRequest) (created, int, error) {
	var c created
	status, err := a.do(ctx, http.MethodPost, "/v1/notifications", n, &c)
	return c, status, err
}

// createBatch POSTs one batch and returns its notifications in order.
func (a *apiClient) createBatch(ctx context.Context, items []createRequest) ([]created, int, error) {
	var out struct {
		Notifications []created `json:"notifications"`
	}
	status, err := a.do(ctx, http.MethodPost, "/v1/notifications/batch", map[string]any{"notifications": items}, &out)
	if err == nil && len(out.Notifications) != len(items) {
		err = fmt.Errorf("batch of %d answered with %d notifications", len(items), len(out.Notifications))
	}
	return out.Notifications, status, err
}

// notificationState is what GET /v1/notifications/{id} says, for the report
// on notifications that did not arrive.
type notificationState struct {
	ID        string  `json:"id"`
	Status    string  `json:"status"`
	Attempts  int     `json:"attempts"`
	LastError *string `json:"lastError"`
}

func (a *apiClient) get(ctx context.Context, id string) (notificationState, error) {
	var s notificationState
	_, err := a.do(ctx, http.MethodGet, "/v1/notifications/"+id, nil, &s)
	return s, err
}

// probeBatch finds out whether the API has the batch endpoint and whether it
// takes our key, without storing anything: an empty batch is refused (422)
// where the endpoint exists, 404 or 405 where it does not.
func (a *apiClient) probeBatch(ctx context.Context) error {
	status, err := a.do(ctx, http.MethodPost, "/v1/notifications/batch", map[string]any{"notifications": []any{}}, nil)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		if a.key == "" {
			return fmt.Errorf("the API wants an API key (%d): pass --api-key <key> (one of the API_KEYS the API runs with), or set API_KEYS", status)
		}
		return fmt.Errorf("the API refused the API key (%d): pass --api-key <key> with one of the API_KEYS the API runs with", status)
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		a.hasBatch = false
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || status/100 == 2:
		a.hasBatch = true
	case err != nil:
		return fmt.Errorf("probing the batch endpoint: %w", err)
	}
	return nil
}

// routedElsewhere names the providers of the API's providers file that do
// not deliver to the sink at sinkURL (GET /v1/providers): their deliveries
// do not reach the sink the bench counts. Webhook providers at the sink are
// fine, so the cost of routes and breakers can be measured.
func (a *apiClient) routedElsewhere(ctx context.Context, sinkURL string) ([]string, error) {
	var page struct {
		Data []struct {
			Name     string   `json:"name"`
			Kind     string   `json:"kind"`
			Target   string   `json:"target"`
			Channels []string `json:"channels"`
		} `json:"data"`
	}
	status, err := a.do(ctx, http.MethodGet, "/v1/providers", nil, &page)
	if err != nil || status == http.StatusNotFound {
		return nil, err // an API from before providers: every channel goes to the sink
	}
	var names []string
	for _, p := range page.Data {
		atSink := p.Kind == "webhook" && strings.HasPrefix(p.Target, strings.TrimRight(sinkURL, "/")+"/")
		if !atSink && len(p.Channels) > 0 {
			names = append(names, p.Name)
		}
	}
	return names, nil
}
