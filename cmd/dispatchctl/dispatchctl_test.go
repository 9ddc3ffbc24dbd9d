package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

// sendHandler answers POST /v1/notifications with an ACCEPTED
// notification made from the body, remembering its id in *id.
func sendHandler(t *testing.T, id uuid.UUID) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body client.CreateNotification
		require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		n := notification(id, client.StatusACCEPTED)
		n.Channel, n.Recipient, n.Content, n.Subject = body.Channel, body.Recipient, body.Content, body.Subject
		if body.Priority != nil {
			n.Priority = *body.Priority
		} else {
			n.Priority = client.PriorityNORMAL
		}
		n.ScheduledAt = body.ScheduledAt
		if k := r.Header.Get("Idempotency-Key"); k != "" {
			n.IdempotencyKey = &k
		}
		w.Header().Set("Location", n.Links.Self)
		answer(w, http.StatusAccepted, n)
	}
}

func TestSendPostsTheNotificationAndPrintsIt(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("POST /v1/notifications", sendHandler(t, id))

	res := f.dispatchctl("send", "--channel", "SMS", "--to", "+14155550123", "--content", "Your code is 1234",
		"--priority", "high", "--idempotency-key", "login-42", "--scheduled-at", "2026-01-02T16:00:00+01:00")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	req := f.only()
	assert.Equal(t, "POST", req.Method)
	assert.Equal(t, "/v1/notifications", req.Path)
	assert.Equal(t, "Bearer test-key", req.Header.Get("Authorization"))
	assert.Equal(t, "login-42", req.Header.Get("Idempotency-Key"))
	assert.Equal(t, "application/json", req.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"channel":"sms","recipient":"+14155550123","content":"Your code is 1234","priority":"HIGH","scheduledAt":"2026-01-02T15:00:00Z"}`, string(req.Body))

	assertField(t, res.stdout, "id", id.String())
	assertField(t, res.stdout, "status", "ACCEPTED")
	assertField(t, res.stdout, "idempotency key", "login-42")
	assert.Empty(t, res.stderr)
}

func TestSendJSONPrintsTheAPIsNotification(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("POST /v1/notifications", sendHandler(t, id))

	res := f.dispatchctl("send", "--json", "--channel", "email", "--to", "user@example.com", "--subject", "Welcome", "--content", "Hello!")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"channel":"email","recipient":"user@example.com","subject":"Welcome","content":"Hello!"}`, string(f.only().Body))
	assert.Empty(t, f.only().Header.Get("Idempotency-Key"))
	var n client.Notification
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &n), res.stdout)
	assert.Equal(t, id, n.ID)
	assert.Equal(t, "Welcome", *n.Subject)
}

func TestSendFileSendsTheBodyAsItIs(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("POST /v1/notifications", sendHandler(t, newID()))
	file := filepath.Join(t.TempDir(), "n.json")
	body := `{"channel":"push","recipient":"device-token-abc","content":"Your order shipped","metadata":{"order":42},"idempotencyKey":"order-42-shipped"}`
	require.NoError(t, os.WriteFile(file, []byte(body), 0o644))

	res := f.dispatchctl("send", "--file", file)

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, body, string(f.only().Body))
}

// waitScript answers POST /v1/notifications, then GET of it with each of
// statuses in turn (the last one again and again).
func waitScript(t *testing.T, f *fakeAPI, statuses ...client.Status) uuid.UUID {
	id := newID()
	f.handle("POST /v1/notifications", sendHandler(t, id))
	var gets atomic.Int32
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, id.String(), r.PathValue("id"))
		i := min(int(gets.Add(1))-1, len(statuses)-1)
		answer(w, http.StatusOK, notification(id, statuses[i]))
	})
	return id
}

func TestSendWaitEndsDeliveredAndExitsZero(t *testing.T) {
	f := newFakeAPI(t)
	id := waitScript(t, f, client.StatusQUEUED, client.StatusPROCESSING, client.StatusDELIVERED)

	res := f.dispatchctl("send", "--channel", "sms", "--to", "+14155550123", "--content", "hi", "--wait")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	reqs := f.requests()
	require.Len(t, reqs, 4, "one POST, then GETs until DELIVERED")
	for _, r := range reqs[1:] {
		assert.Equal(t, "GET /v1/notifications/"+id.String(), r.Method+" "+r.Path)
		assert.Equal(t, "Bearer test-key", r.Header.Get("Authorization"))
	}
	assertField(t, res.stdout, "status", "DELIVERED")
	assert.NotContains(t, res.stdout, "ACCEPTED", "only the final state is printed")
	assert.Empty(t, res.stderr)
}

func TestSendWaitEndsFailedAndExitsOne(t *testing.T) {
	f := newFakeAPI(t)
	id := waitScript(t, f, client.StatusRETRYING, client.StatusFAILED)

	res := f.dispatchctl("send", "--json", "--channel", "sms", "--to", "+14155550123", "--content", "hi", "--wait")

	require.Equal(t, app.ExitFailed, res.code)
	var n client.Notification
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &n), res.stdout)
	assert.Equal(t, client.StatusFAILED, n.Status)
	got := requireJSONFailure(t, res, app.ExitFailed, "outcome")
	assert.Equal(t, fmt.Sprintf("notification %s ended FAILED (exhausted): provider answered 503", id), got.Error.Message)
}

func TestSendWaitTimeoutExitsOneWithTheLastState(t *testing.T) {
	f := newFakeAPI(t)
	waitScript(t, f, client.StatusSCHEDULED)

	res := f.dispatchctl("send", "--channel", "sms", "--to", "+14155550123", "--content", "hi", "--wait", "--wait-timeout", "20ms")

	require.Equal(t, app.ExitFailed, res.code)
	assert.Contains(t, res.stderr, "is still SCHEDULED after --wait-timeout 20ms")
}

func TestValidationProblemIsPrintedReadablyAndExitsOne(t *testing.T) {
	f := newFakeAPI(t)
	f.allowInvalid = true
	f.handle("POST /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answerProblem(w, "req-7f3a", client.Problem{
			Type: "/problems/validation-error", Title: "Validation failed", Status: 422,
			Detail: "one or more fields are invalid", Instance: ptr("/v1/notifications"),
			Errors: []client.FieldError{
				{Field: "recipient", Message: "must be an E.164 phone number, e.g. +14155550123"},
				{Field: "content", Message: "is required"},
			},
		})
	})

	res := f.dispatchctl("send", "--channel", "sms", "--to", "0415", "--content", "")

	assert.Equal(t, app.ExitFailed, res.code)
	assert.Empty(t, res.stdout)
	assert.Equal(t, `error: 422 Validation failed
  recipient: must be an E.164 phone number, e.g. +14155550123
  content: is required
one or more fields are invalid
request id: req-7f3a
`, res.stderr)
}

func TestNotFoundProblem(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		answerProblem(w, "req-404", client.Problem{Type: "/problems/not-found", Title: "Not found", Status: 404,
			Detail: "notification " + r.PathValue("id") + " does not exist"})
	})

	res := f.dispatchctl("get", id.String())

	assert.Equal(t, app.ExitFailed, res.code)
	assert.Equal(t, "error: 404 Not found\nnotification "+id.String()+" does not exist\nrequest id: req-404\n", res.stderr)
}

func TestUnauthorizedWithoutAKeySaysWhereOneComesFrom(t *testing.T) {
	f := newFakeAPI(t)
	f.allowInvalid = true // no key
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dispatch-engine"`)
		answerProblem(w, "req-401", client.Problem{Type: "/problems/unauthorized", Title: "Unauthorized", Status: 401, Detail: "a valid API key is required"})
	})

	res := runIn(t, isolatedDir(t), nil, "--url", f.srv.URL, "list")

	assert.Equal(t, app.ExitFailed, res.code)
	assert.Empty(t, f.only().Header.Get("Authorization"))
	assert.Contains(t, res.stderr, "error: 401 Unauthorized\n")
	assert.Contains(t, res.stderr, "hint: no API key was given")
}

func TestUnreachableAPIExitsThree(t *testing.T) {
	// A port nothing listens on: take one, and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + l.Addr().String()
	require.NoError(t, l.Close())

	res := runIn(t, isolatedDir(t), nil, "--url", url, "--api-key", "k", "get", newID().String())

	assert.Equal(t, app.ExitUnreachable, res.code)
	assert.Contains(t, res.stderr, "error: could not reach the API at "+url+": ")
	assert.Contains(t, res.stderr, "connection refused")
}

func TestAPIThatDoesNotAnswerInTimeExitsThree(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // until the client gives up
		answer(w, http.StatusOK, notification(newID(), client.StatusQUEUED))
	})

	res := f.dispatchctl("--timeout", "50ms", "get", newID().String())

	assert.Equal(t, app.ExitUnreachable, res.code)
	assert.Contains(t, res.stderr, "could not reach the API")
	assert.Contains(t, res.stderr, "Timeout")
}

func TestUsageErrorsExitTwoAndSendNothing(t *testing.T) {
	f := newFakeAPI(t)
	for _, args := range [][]string{
		{"send", "--bogus"},
		{"send", "--channel", "sms", "--to", "+14155550123"},                    // no --content
		{"send", "--channel", "fax", "--to", "+14155550123", "--content", "hi"}, // no such channel
		{"send", "--file", "n.json", "--channel", "sms"},                        // both
		{"send", "--channel", "sms", "--to", "x", "--content", "y", "--scheduled-at", "tomorrow"},
		{"get"},
		{"get", "not-a-uuid"},
		{"list", "--status", "LOST"},
		{"list", "--limit", "500"},
		{"batch"},
		{"batch", filepath.Join(t.TempDir(), "missing.csv")},
		{"watch"},
		{"operations", "create", "--status", "FAILED"}, // no --action
		{"operations", "create", "--action", "retry"},  // no filter
		{"operations", "create", "--action", "delete", "--status", "FAILED"},
		{"nonsense"},
		{"operations", "nonsense"},
		{"--timeout", "0", "list"},
	} {
		res := f.dispatchctl(args...)
		assert.Equal(t, app.ExitUsage, res.code, "dispatchctl %v", args)
		assert.True(t, strings.HasPrefix(res.stderr, "error: "), "dispatchctl %v: %s", args, res.stderr)
		assert.Contains(t, res.stderr, "--help' for usage.", "dispatchctl %v", args)
	}
	assert.Empty(t, f.requests())
}

func TestHelpListsTheExitCodes(t *testing.T) {
	res := runIn(t, isolatedDir(t), nil, "--help")
	require.Equal(t, app.ExitOK, res.code)
	for _, s := range []string{"Exit codes:", "  0 ", "  1 ", "  2 ", "  3 ", "send", "batch", "watch", "operations", "DISPATCH_URL", ".data/dev-api-key"} {
		assert.Contains(t, res.stdout, s)
	}
}

func TestGetAttemptsCancelRetry(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, notification(id, client.StatusRETRYING))
	})
	f.handle("GET /v1/notifications/{id}/attempts", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.AttemptList{Data: []client.Attempt{
			{Attempt: 1, StartedAt: t0, DurationMs: 84, StatusCode: ptr(503), Outcome: "retry", Error: ptr("provider answered 503"), Provider: ptr("default")},
			{Attempt: 2, StartedAt: t0, DurationMs: 12, Outcome: "retry", Error: ptr("timeout")},
		}})
	})
	f.handle("POST /v1/notifications/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		n := notification(id, client.StatusRETRYING)
		n.CancelRequestedAt = &t0
		answer(w, http.StatusAccepted, n)
	})
	f.handle("POST /v1/notifications/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Idempotent-Replayed", "true")
		answer(w, http.StatusOK, notification(id, client.StatusACCEPTED))
	})

	res := f.dispatchctl("get", id.String())
	require.Equal(t, app.ExitOK, res.code)
	assertField(t, res.stdout, "status", "RETRYING")

	res = f.dispatchctl("attempts", id.String())
	require.Equal(t, app.ExitOK, res.code)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 3)
	assert.Regexp(t, `^#\s+STARTED\s+DURATION\s+STATUS\s+OUTCOME\s+PROVIDER\s+RECEIPT\s+ERROR$`, lines[0])
	assert.Regexp(t, `^1\s+2026-01-02T15:04:05.123Z\s+84ms\s+503\s+retry\s+default\s+-\s+provider answered 503$`, lines[1])
	assert.Regexp(t, `^2\s+.*12ms\s+-\s+retry\s+-\s+-\s+timeout$`, lines[2])

	res = f.dispatchctl("attempts", "--json", id.String())
	require.Equal(t, app.ExitOK, res.code)
	var list client.AttemptList
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &list))
	assert.Len(t, list.Data, 2)

	res = f.dispatchctl("cancel", id.String())
	require.Equal(t, app.ExitOK, res.code)
	assertField(t, res.stdout, "cancel requested", "2026-01-02T15:04:05.123Z")
	assert.Contains(t, res.stderr, "becomes CANCELLED once its workflow acts on it")

	res = f.dispatchctl("retry", id.String(), "--idempotency-key", "retry-1")
	require.Equal(t, app.ExitOK, res.code)
	assert.Contains(t, res.stderr, "replayed")

	var paths []string
	for _, r := range f.requests() {
		paths = append(paths, r.Method+" "+r.Path)
		assert.Equal(t, "Bearer test-key", r.Header.Get("Authorization"))
		assert.Empty(t, r.Body, "%s %s takes no body", r.Method, r.Path)
	}
	p := "/v1/notifications/" + id.String()
	assert.Equal(t, []string{"GET " + p, "GET " + p + "/attempts", "GET " + p + "/attempts", "POST " + p + "/cancel", "POST " + p + "/retry"}, paths)
	assert.Equal(t, "retry-1", f.requests()[4].Header.Get("Idempotency-Key"))
}

func ptr[T any](v T) *T { return &v }

// assertField checks that out has the line "name  value" of a resource
// printed as text.
func assertField(t *testing.T, out, name, value string) {
	t.Helper()
	assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(name)+` {2,}`+regexp.QuoteMeta(value)+`$`, out)
}
