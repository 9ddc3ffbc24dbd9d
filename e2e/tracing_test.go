package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is one span an OTLP receiver got, with the service that sent it.
type otlpSpan struct {
	Service  string
	Name     string
	TraceID  string
	SpanID   string
	ParentID string
	Attrs    map[string]string
}

// otlpReceiver is an OTLP/HTTP trace receiver of the test's own: it takes
// POST /v1/traces (protobuf, gzipped or not) as a collector does, and keeps
// every span.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []otlpSpan
}

// newOTLPReceiver starts a receiver and returns it with its base URL, the
// value of OTEL_EXPORTER_OTLP_ENDPOINT.
func newOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	r := &otlpReceiver{}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// ServeHTTP decodes one export request.
func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	body := io.Reader(req.Body)
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.keep(&export)
	answer, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(answer)
}

func (r *otlpReceiver) keep(export *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range export.GetResourceSpans() {
		service := stringAttrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.spans = append(r.spans, otlpSpan{
					Service: service, Name: sp.GetName(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()), Attrs: stringAttrs(sp.GetAttributes()),
				})
			}
		}
	}
}

// stringAttrs keeps the string attributes.
func stringAttrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		if v, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
			out[kv.GetKey()] = v.StringValue
		}
	}
	return out
}

// trace returns the spans of traceID received so far.
func (r *otlpReceiver) trace(traceID string) []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpSpan
	for _, sp := range r.spans {
		if sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

// find returns the first span received that match says yes to.
func (r *otlpReceiver) find(match func(otlpSpan) bool) (otlpSpan, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sp := range r.spans {
		if match(sp) {
			return sp, true
		}
	}
	return otlpSpan{}, false
}

// spanNamed finds, in spans, the one from service whose name starts with prefix.
func spanNamed(spans []otlpSpan, service, prefix string) (otlpSpan, bool) {
	for _, sp := range spans {
		if sp.Service == service && strings.HasPrefix(sp.Name, prefix) {
			return sp, true
		}
	}
	return otlpSpan{}, false
}

func TestOneNotificationIsOneTraceAcrossAPIWorkerAndProvider(t *testing.T) {
	receiver, endpoint := newOTLPReceiver(t)
	s := setupWith(t, func(s *stack) {
		s.env = append(s.env,
			"OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint,
			"OTEL_BSP_SCHEDULE_DELAY=100",
		)
	})

	_, _, created := s.post("/v1/notifications", smsRequest("traced"))
	id := created["id"].(string)
	s.waitStatus(id, "DELIVERED", 30*time.Second)

	var api otlpSpan
	require.Eventually(t, func() bool {
		var ok bool
		api, ok = receiver.find(func(sp otlpSpan) bool {
			return sp.Service == "dispatch-api" && sp.Attrs["notification.id"] == id
		})
		return ok
	}, 10*time.Second, 50*time.Millisecond, "the API's span of the request")
	require.Equal(t, "sms", api.Attrs["notification.channel"])
	require.NotEmpty(t, api.Attrs["tenant.id"])
	require.Empty(t, api.ParentID, "the request came without a trace: its span is the root")

	// Every step's span, in the API's trace: the relay's publish and the
	// consumer's start, the workflow start and run (Temporal's interceptor),
	// the Deliver attempt and the call to the provider.
	want := []struct{ service, prefix string }{
		{"dispatch-worker", "outbox publish"},
		{"dispatch-worker", "notification consume"},
		{"dispatch-worker", "StartWorkflow:"},
		{"dispatch-worker", "RunWorkflow:"},
		{"dispatch-worker", "RunActivity:Deliver"},
		{"dispatch-worker", "webhook send"},
	}
	var spans []otlpSpan
	require.Eventually(t, func() bool {
		spans = receiver.trace(api.TraceID)
		for _, w := range want {
			if _, ok := spanNamed(spans, w.service, w.prefix); !ok {
				return false
			}
		}
		return true
	}, 15*time.Second, 100*time.Millisecond, "spans of every step in trace %s", api.TraceID)

	byID := make(map[string]otlpSpan, len(spans))
	for _, sp := range spans {
		byID[sp.SpanID] = sp
	}
	for _, sp := range spans {
		if sp.SpanID == api.SpanID {
			continue
		}
		parent, ok := byID[sp.ParentID]
		require.True(t, ok, "span %q (%s) names parent %s, which is not in the trace", sp.Name, sp.Service, sp.ParentID)
		t.Logf("%s: %s <- %s", sp.Service, sp.Name, parent.Name)
	}
	parentOf := func(prefix string) string {
		sp, _ := spanNamed(spans, "dispatch-worker", prefix)
		return byID[sp.ParentID].Name
	}
	require.Equal(t, api.Name, parentOf("outbox publish"), "the publish continues the request")
	require.Equal(t, "outbox publish", parentOf("notification consume"), "the consumer continues the publish")
	require.Equal(t, "notification consume", parentOf("StartWorkflow:"), "the workflow starts in the consumer's span")
	require.True(t, strings.HasPrefix(parentOf("RunWorkflow:"), "StartWorkflow:"), "the run continues its start")
	require.True(t, strings.HasPrefix(parentOf("RunActivity:Deliver"), "StartActivity:"), "the attempt runs as the workflow scheduled it")
	require.Equal(t, "RunActivity:Deliver", parentOf("webhook send"), "the provider call is the attempt's")

	// The provider got the W3C traceparent of its call's span.
	rec, ok := s.sink.Record(id)
	require.True(t, ok)
	traceparent := rec.Headers.Get("traceparent")
	parts := strings.Split(traceparent, "-")
	require.Len(t, parts, 4, "traceparent %q", traceparent)
	require.Equal(t, api.TraceID, parts[1], "the provider's traceparent names the notification's trace")
	call, ok := byID[parts[2]]
	require.True(t, ok, "the provider's traceparent names span %s, not in the trace", parts[2])
	require.Equal(t, "webhook send", call.Name)
}
