package httpapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestWrongMethodIs405ProblemWithAllow(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	for _, tc := range []struct {
		method, path, allow string
	}{
		{http.MethodDelete, "/v1/notifications", "GET, HEAD, POST"},
		{http.MethodPut, "/v1/notifications/" + id, "GET, HEAD"},
		{http.MethodGet, "/v1/notifications/" + id + "/cancel", "POST"},
		{http.MethodPost, "/v1/notifications/" + id + "/attempts", "GET, HEAD"},
		// batch is a literal segment, not an {id}.
		{http.MethodGet, "/v1/notifications/batch", "POST"},
		{http.MethodPatch, "/v1/batches/" + id, "GET, HEAD"},
		{http.MethodPost, "/livez", "GET, HEAD"},
		{http.MethodOptions, "/metrics", "GET, HEAD"},
	} {
		resp, body := f.do(tc.method, tc.path, nil)
		p := requireProblem(t, resp, body, http.StatusMethodNotAllowed)
		require.Equal(t, "/problems/method-not-allowed", p.Type)
		require.Equal(t, tc.allow, resp.Header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
}

func TestBodyOverTheLimitIs413Problem(t *testing.T) {
	f := setup(t, withConfig(func(c *config) { c.BodyLimit, c.BatchBodyLimit = 1<<10, 4<<10 }))
	big := func(n int) string {
		return `{"channel":"email","recipient":"user@example.com","subject":"s","content":"` + strings.Repeat("x", n) + `"}`
	}

	resp, body := f.post("/v1/notifications", big(2<<10))
	p := requireProblem(t, resp, body, http.StatusRequestEntityTooLarge)
	require.Equal(t, "/problems/payload-too-large", p.Type)

	// A batch may be larger than a single notification, up to its own limit.
	resp, body = f.post("/v1/notifications/batch", `{"notifications":[`+big(2<<10)+`]}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	resp, body = f.post("/v1/notifications/batch", `{"notifications":[`+big(5<<10)+`]}`)
	p = requireProblem(t, resp, body, http.StatusRequestEntityTooLarge)
	require.Equal(t, "/problems/payload-too-large", p.Type)

	require.Equal(t, 1, count(t, f.pool, "notifications"), "only the batch within its limit is stored")
}

func TestDefaultLimitsTakeTheLargestValidNotificationAndA1000ItemBatch(t *testing.T) {
	f := setup(t)
	// 256 KiB of email content, every byte \u-escaped: 1.5 MiB of JSON.
	content := strings.Repeat(`\u0001`, 256<<10)
	resp, body := f.post("/v1/notifications", `{"channel":"email","recipient":"user@example.com","subject":"s","content":"`+content+`"}`)
	// Control characters are allowed content; what matters is that the
	// body was read and validated rather than refused for its size.
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %.300s", body)

	var b bytes.Buffer
	b.WriteString(`{"notifications":[`)
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"channel":"sms","recipient":"+14155550123","content":"` + strings.Repeat("x", 1600) + `"}`)
	}
	b.WriteString(`]}`)
	resp, body = f.post("/v1/notifications/batch", b.String())
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %.300s", body)
	require.Equal(t, 1001, count(t, f.pool, "notifications"))
}

func TestPanicIs500ProblemLoggedWithRequestIDAndNoInternals(t *testing.T) {
	rec := &signalRecorder{panicWith: "secret internal state 0xdeadbeef"}
	f := setup(t, withSignaler(rec))
	id := f.create(smsBody)

	resp, body := f.post("/v1/notifications/"+id+"/cancel", "", "X-Request-Id", "req-panic-1", "Content-Type", "")
	p := requireProblem(t, resp, body, http.StatusInternalServerError)
	require.Equal(t, "/problems/internal-error", p.Type)
	require.NotContains(t, string(body), "secret")
	require.NotContains(t, string(body), "deadbeef")
	require.Equal(t, "req-panic-1", resp.Header.Get("X-Request-Id"))

	logged := f.logs.FilterMessage("panic serving request").All()
	require.Len(t, logged, 1)
	fields := logged[0].ContextMap()
	require.Equal(t, "req-panic-1", fields["request_id"])
	require.Equal(t, "secret internal state 0xdeadbeef", fields["panic"])
	require.NotEmpty(t, fields["stack"])

	// The server still serves after a panic.
	resp, body = f.get("/v1/notifications/" + id)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
}

func TestMetricsLabelRequestsByRouteTemplate(t *testing.T) {
	f := setup(t)
	id := f.create(smsBody)
	f.get("/v1/notifications/" + id)
	f.get("/v1/notifications/" + id + "/attempts")
	f.get("/v1/batches/" + uuid.NewString())
	f.get("/v1/nowhere")

	_, body := f.get("/metrics")
	for _, want := range []string{
		`{code="202",method="POST",route="/v1/notifications"}`,
		`{code="200",method="GET",route="/v1/notifications/:id"}`,
		`{code="200",method="GET",route="/v1/notifications/:id/attempts"}`,
		`{code="404",method="GET",route="/v1/batches/:batchId"}`,
		`{code="404",method="GET",route="unmatched"}`,
	} {
		require.Contains(t, string(body), "dispatch_http_requests_total"+want)
	}
	require.NotContains(t, string(body), id, "ids never become label values")
}

// A push may carry a subject, its title; an sms may not.
func TestAPushTakesASubjectAsItsTitleAndAnSMSRefusesOne(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications", `{"channel":"push","recipient":"tok-1","subject":"Order shipped","content":"It is on its way"}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)

	resp, body = f.post("/v1/notifications", `{"channel":"sms","recipient":"+14155550123","subject":"no","content":"hi"}`)
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Len(t, p.Errors, 1)
	require.Equal(t, "subject", p.Errors[0].Field)

	resp, body = f.post("/v1/notifications", `{"channel":"push","recipient":"tok-1","subject":"two\nlines","content":"hi"}`)
	p = requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, "subject", p.Errors[0].Field)
}
