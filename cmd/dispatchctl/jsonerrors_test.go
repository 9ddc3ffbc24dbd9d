package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

// jsonFailure is the object --json prints on stderr when a command fails.
type jsonFailure struct {
	Error struct {
		Kind     string   `json:"kind"`
		ExitCode int      `json:"exitCode"`
		Message  string   `json:"message"`
		Notes    []string `json:"notes"`
		Problem  *struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
			Errors []struct {
				Field   string `json:"field"`
				Message string `json:"message"`
			} `json:"errors"`
			RequestID string `json:"requestId"`
		} `json:"problem"`
	} `json:"error"`
}

func requireJSONFailure(t *testing.T, res result, code int, kind string) jsonFailure {
	t.Helper()
	require.Equal(t, code, res.code, res.stderr)
	// Progress and notes may come first; the error is the last line.
	lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
	var f jsonFailure
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &f), "the last line of stderr is a JSON object: %s", res.stderr)
	require.Equal(t, kind, f.Error.Kind)
	require.Equal(t, code, f.Error.ExitCode)
	require.NotEmpty(t, f.Error.Message)
	return f
}

// Under --json a failure is one line of JSON, the last on stderr, whatever
// its kind, with the exit code it always had; stdout holds only results.
func TestJSONErrorsAreOneJSONObjectOnStderrWithTheSameExitCodes(t *testing.T) {
	f := newFakeAPI(t)
	f.allowInvalid = true
	f.handle("POST /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answerProblem(w, "req-7f3a", client.Problem{
			Type: "/problems/validation-error", Title: "Validation failed", Status: 422,
			Detail: "one or more fields are invalid",
			Errors: []client.FieldError{{Field: "recipient", Message: "must be an E.164 phone number, e.g. +14155550123"}},
		})
	})
	res := f.dispatchctl("--json", "send", "--channel", "sms", "--to", "0415", "--content", "hi")
	got := requireJSONFailure(t, res, app.ExitFailed, "problem")
	require.Empty(t, res.stdout)
	require.NotNil(t, got.Error.Problem)
	require.Equal(t, 422, got.Error.Problem.Status)
	require.Equal(t, "/problems/validation-error", got.Error.Problem.Type)
	require.Equal(t, "req-7f3a", got.Error.Problem.RequestID)
	require.Len(t, got.Error.Problem.Errors, 1)
	require.Equal(t, "recipient", got.Error.Problem.Errors[0].Field)

	res = f.dispatchctl("--json", "get", "not-a-uuid")
	got = requireJSONFailure(t, res, app.ExitUsage, "usage")
	require.Contains(t, got.Error.Notes, "Run 'dispatchctl get --help' for usage.")

	res = f.dispatchctl("get", "--json", "--bogus")
	requireJSONFailure(t, res, app.ExitUsage, "usage")

	// What --wait followed ended badly: the notification on stdout, why on stderr.
	f = newFakeAPI(t)
	id := waitScript(t, f, client.StatusFAILED)
	res = f.dispatchctl("--json", "send", "--channel", "sms", "--to", "+14155550123", "--content", "hi", "--wait")
	requireJSONFailure(t, res, app.ExitFailed, "outcome")
	var n client.Notification
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &n), res.stdout)
	require.Equal(t, id, n.ID)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	res = runIn(t, isolatedDir(t), nil, "--json", "--url", url, "--api-key", "k", "get", newID().String())
	got = requireJSONFailure(t, res, app.ExitUnreachable, "unreachable")
	require.Contains(t, got.Error.Message, "connection refused")
}
