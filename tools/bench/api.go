package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
)

// apiClient talks to the Dispatch Engine API through the generated client
// (github.com/dispatch-engine/dispatch-engine/client), which sends the key with every request.
type apiClient struct {
	key      string
	api      *dispatch.Dispatch
	raw      *dispatch.Client // for the status code of an answer that does not parse
	hasBatch bool
}

func newAPIClient(base, key string, conns int) (*apiClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns + 8
	tr.MaxIdleConnsPerHost = conns + 8
	api, err := dispatch.New(base, key, dispatch.WithHTTPClient(&http.Client{Transport: tr, Timeout: 60 * time.Second}))
	if err != nil {
		return nil, err
	}
	raw, ok := api.Raw().ClientInterface.(*dispatch.Client)
	if !ok {
		return nil, fmt.Errorf("the generated client is a %T", api.Raw().ClientInterface)
	}
	return &apiClient{key: key, api: api, raw: raw}, nil
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
type createRequest = dispatch.CreateNotification

// created is the part of the API's answer the bench uses.
type created struct {
	ID         string    `json:"id"`
	Channel    string    `json:"channel"`
	CreatedAt  time.Time `json:"createdAt"`
	WorkflowID string    `json:"workflowId"`
}

var (
	channels   = []dispatch.Channel{dispatch.ChannelSms, dispatch.ChannelEmail, dispatch.ChannelPush}
	priorities = []dispatch.Priority{dispatch.PriorityHIGH, dispatch.PriorityNORMAL, dispatch.PriorityLOW}
)

// notificationFor returns the i-th notification of a run: channels rotate,
// and priorities rotate across channels, so every pair occurs.
func notificationFor(run string, i int) createRequest {
	ch := channels[i%3]
	priority := priorities[(i/3)%3]
	req := createRequest{
		Channel:  ch,
		Priority: &priority,
		Content:  fmt.Sprintf("bench %s #%d", run, i),
	}
	switch ch {
	case dispatch.ChannelSms:
		req.Recipient = "+14155550123"
	case dispatch.ChannelEmail:
		req.Recipient = "bench@example.com"
		subject := "Bench " + run
		req.Subject = &subject
	case dispatch.ChannelPush:
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

// answer is the part of a generated response the bench reads.
type answer interface {
	StatusCode() int
	GetBody() []byte
}

// check turns a non-2xx answer into a *statusError.
func check(method, path string, r answer) error {
	if r.StatusCode()/100 == 2 {
		return nil
	}
	raw := r.GetBody()
	if len(raw) > 400 {
		raw = raw[:400]
	}
	return &statusError{Method: method, Path: path, Status: r.StatusCode(), Body: string(raw)}
}

// send finishes a call of the generated client: the answer's status, even
// when its body does not parse, and parse's result.
func send[R answer](method, path string, call func() (*http.Response, error), parse func(*http.Response) (R, error)) (R, int, error) {
	var zero R
	rsp, err := call()
	if err != nil {
		return zero, 0, err
	}
	defer func() { _ = rsp.Body.Close() }() // parse reads it whole
	r, err := parse(rsp)
	if err != nil {
		return zero, rsp.StatusCode, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return r, rsp.StatusCode, check(method, path, r)
}

func createdOf(n *dispatch.Notification) created {
	return created{ID: n.ID.String(), Channel: string(n.Channel), CreatedAt: n.CreatedAt, WorkflowID: n.WorkflowID}
}

// create POSTs one notification.
func (a *apiClient) create(ctx context.Context, n createRequest) (created, int, error) {
	r, status, err := send(http.MethodPost, "/v1/notifications", func() (*http.Response, error) { return a.raw.CreateNotification(ctx, nil, n) }, dispatch.ParseCreateNotificationResponse)
	if err != nil {
		return created{}, status, err
	}
	switch {
	case r.JSON202 != nil:
		return createdOf(r.JSON202), status, nil
	case r.JSON200 != nil:
		return createdOf(r.JSON200), status, nil
	}
	return created{}, status, fmt.Errorf("POST /v1/notifications: a %d answer without a notification", status)
}

// createBatch POSTs one batch and returns its notifications in order.
func (a *apiClient) createBatch(ctx context.Context, items []createRequest) ([]created, int, error) {
	r, status, err := send(http.MethodPost, "/v1/notifications/batch", func() (*http.Response, error) {
		return a.raw.CreateBatch(ctx, nil, dispatch.CreateBatch{Notifications: items})
	}, dispatch.ParseCreateBatchResponse)
	if err != nil {
		return nil, status, err
	}
	var got []dispatch.Notification
	if b := r.JSON202; b != nil {
		got = b.Notifications
	} else if b := r.JSON200; b != nil {
		got = b.Notifications
	}
	out := make([]created, len(got))
	for i := range got {
		out[i] = createdOf(&got[i])
	}
	if len(out) != len(items) {
		err = fmt.Errorf("batch of %d answered with %d notifications", len(items), len(out))
	}
	return out, status, err
}

// notificationState is what GET /v1/notifications/{id} says, for the report
// on notifications that did not arrive and the ordered mode's broken count.
type notificationState struct {
	ID             string  `json:"id"`
	Status         string  `json:"status"`
	Attempts       int     `json:"attempts"`
	LastError      *string `json:"lastError"`
	OrderingBroken bool    `json:"orderingBroken"`
}

func (a *apiClient) get(ctx context.Context, id string) (notificationState, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return notificationState{}, err
	}
	n, err := a.api.Get(ctx, uid)
	if err != nil {
		return notificationState{}, err
	}
	return notificationState{
		ID: n.ID.String(), Status: string(n.Status), Attempts: n.Attempts, LastError: n.LastError,
		OrderingBroken: n.OrderingBroken != nil && *n.OrderingBroken,
	}, nil
}

// probeBatch finds out whether the API has the batch endpoint and whether it
// takes our key, without storing anything: an empty batch is refused (422)
// where the endpoint exists, 404 or 405 where it does not.
func (a *apiClient) probeBatch(ctx context.Context) error {
	_, status, err := send(http.MethodPost, "/v1/notifications/batch", func() (*http.Response, error) {
		return a.raw.CreateBatch(ctx, nil, dispatch.CreateBatch{Notifications: []createRequest{}})
	}, dispatch.ParseCreateBatchResponse)
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
	r, status, err := send(http.MethodGet, "/v1/providers", func() (*http.Response, error) { return a.raw.ListProviders(ctx, nil) }, dispatch.ParseListProvidersResponse)
	if err != nil || status == http.StatusNotFound {
		return nil, err // an API from before providers: every channel goes to the sink
	}
	if r.JSON200 == nil {
		return nil, fmt.Errorf("GET /v1/providers: a %d answer without the providers", status)
	}
	var names []string
	for _, p := range r.JSON200.Data {
		// The API shows a URL's scheme and host (older ones the path too).
		sink := strings.TrimRight(sinkURL, "/")
		atSink := p.Kind == dispatch.ProviderKindWebhook && (p.Target == sink || strings.HasPrefix(p.Target, sink+"/"))
		if !atSink && len(p.Channels) > 0 {
			names = append(names, p.Name)
		}
	}
	return names, nil
}
