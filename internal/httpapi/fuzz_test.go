package httpapi_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/httpapi"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// fuzzServer is the API on a real database, answering in-process.
func fuzzServer(f *testing.F) *httpapi.Server {
	pool, _ := testenv.Pool(f)
	return httpapi.New(httpapi.Config{APIKeys: []string{fuzzKey}, TemporalUIURL: "http://127.0.0.1:8233", TemporalNamespace: "default",
		Operations: (&operationStarts{}).start},
		pool, &signalRecorder{}, nil, metrics.NewAPI(), zap.NewNop())
}

const fuzzKey = "fuzz-key-0123456789abcdef"

// fuzzPost sends body to path and fails unless the answer is 2xx or 4xx.
func fuzzPost(t *testing.T, srv *httpapi.Server, path string, body []byte) {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+fuzzKey)
	resp, err := srv.App().Test(req, -1)
	if err != nil {
		t.Fatalf("request failed: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 500 || resp.StatusCode < 200 || (resp.StatusCode >= 300 && resp.StatusCode < 400) {
		t.Fatalf("POST %s %q answered %d: %s", path, body, resp.StatusCode, out)
	}
}

// FuzzCreateNotification: any body gives a 2xx or a 4xx, never a panic or a 5xx.
func FuzzCreateNotification(f *testing.F) {
	for _, seed := range []string{
		`{"channel":"sms","recipient":"+14155550123","content":"hi"}`,
		`{"channel":"email","recipient":"a@example.com","subject":"s","content":"hi","metadata":{"k":[1,2,{"x":null}]}}`,
		`{"channel":"push","recipient":"tok","content":"x","priority":"HIGH","scheduledAt":"2030-01-01T00:00:00Z","expiresAt":"2031-01-01T00:00:00+02:00"}`,
		`{"channel":"sms","recipient":"+1","content":"\u0000"}`,
		`{"channel":5}`, `[]`, `null`, `{`, `{"idempotencyKey":""}`, `{"metadata":"x"}`, "\xff\xfe",
		// Text PostgreSQL refuses: NUL, and in jsonb an unpaired surrogate.
		`{"channel":"push","recipient":"tok","content":"x","metadata":{"k":"\ud800"}}`,
		`{"channel":"push","recipient":"tok","content":"x","metadata":{"\udc00\u0000":["\\u0000"]}}`,
		`{"channel":"email","recipient":"a@example.com","subject":"s\u0000","content":"x","idempotencyKey":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzPost(t, srv, "/v1/notifications", body)
	})
}

// FuzzCreateBatch: any batch body gives a 2xx or a 4xx, never a panic or a 5xx.
func FuzzCreateBatch(f *testing.F) {
	for _, seed := range []string{
		`{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"hi"}]}`,
		`{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"a","idempotencyKey":"k"},{"channel":"sms","recipient":"+14155550123","content":"b","idempotencyKey":"k"}]}`,
		`{"notifications":[]}`, `{"notifications":[1,"x",null]}`, `{"notifications":{}}`, `{}`,
	} {
		f.Add([]byte(seed))
	}
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzPost(t, srv, "/v1/notifications/batch", body)
	})
}

// FuzzCreateOperation: any operation body gives a 2xx or a 4xx, never a
// panic or a 5xx; the filter reaches PostgreSQL (jsonb and a text match).
func FuzzCreateOperation(f *testing.F) {
	for _, seed := range []string{
		`{"action":"cancel","filter":{"recipient":"+14155550123"}}`,
		`{"action":"erase","dryRun":true,"filter":{"recipient":"a@example.com"}}`,
		`{"action":"retry","filter":{"status":"FAILED","channel":"sms","createdTo":"2030-01-01T00:00:00Z"},"maxPerSecond":10}`,
		`{"action":"cancel","filter":{"recipient":"+1415\u00005550123"}}`,
		`{"action":"cancel","dryRun":true,"filter":{"recipient":"\ud800","batchId":"\u0000"}}`,
		`{"action":"retry","filter":{"failureReason":"\u0000","createdFrom":"\u0000"}}`,
		`{"action":"x"}`, `{}`, `{"filter":{}}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzPost(t, srv, "/v1/operations", body)
	})
}
