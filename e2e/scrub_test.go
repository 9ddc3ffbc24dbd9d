package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// historyOf is every event of a notification's workflow history as text,
// payloads decoded (historyText), all runs.
func (s *stack) historyOf(id string) string {
	s.t.Helper()
	var b strings.Builder
	iter := s.temporal.GetWorkflowHistory(context.Background(), "notification-"+id, "", false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(s.t, err)
		b.WriteString(historyText(s.t, ev))
		b.WriteString("\n")
	}
	return b.String()
}

// TestAProvidersURLPathReachesNoTenantDeadLetterLogOrHistory: a webhook
// provider whose URL carries tokens in its path and query does not answer.
// The attempt log, lastError, GET /v1/providers, the dead-letter header, the
// worker's log and the workflow's history name it by scheme and host alone.
func TestAProvidersURLPathReachesNoTenantDeadLetterLogOrHistory(t *testing.T) {
	deadPort := freePort(t) // nothing listens: connection refused
	origin := "http://127.0.0.1:" + strconv.Itoa(deadPort)
	s := setupWith(t, withProviders(`
providers:
  - name: hook
    kind: webhook
    url: "`+origin+`/services/T0000/B0000/XXXXsecretpath?api_key=k-0123456789"
routes:
  push: [hook]
`, "RETRY_MAX_ATTEMPTS=2"))
	leaks := func(text string) bool {
		return strings.Contains(text, "secretpath") || strings.Contains(text, "api_key") ||
			strings.Contains(text, "k-0123456789") || strings.Contains(text, "/services/")
	}

	code, _, n := s.post("/v1/notifications", map[string]any{"channel": "push", "recipient": "device-token-scrub", "content": "hi"})
	require.Equal(t, http.StatusAccepted, code, "%v", n)
	id := n["id"].(string)
	failed := s.waitStatus(id, "FAILED", 60*time.Second)
	require.Contains(t, fmt.Sprint(failed["lastError"]), origin, "the host is named: an operator can tell which provider")
	require.False(t, leaks(fmt.Sprint(failed)), "notification: %v", failed)
	_, attempts := s.get("/v1/notifications/" + id + "/attempts")
	require.False(t, leaks(fmt.Sprint(attempts)), "attempts: %v", attempts)
	_, providers := s.get("/v1/providers")
	require.False(t, leaks(fmt.Sprint(providers)), "providers: %v", providers)
	require.Contains(t, fmt.Sprint(providers), origin)

	var deadLetters map[string]any
	require.Eventually(t, func() bool {
		_, deadLetters = s.get("/v1/dead-letters/push")
		return strings.Contains(fmt.Sprint(deadLetters), id)
	}, 30*time.Second, 100*time.Millisecond)
	require.Contains(t, fmt.Sprint(deadLetters), origin, "x-last-error names the host")
	require.False(t, leaks(fmt.Sprint(deadLetters)), "dead letters: %v", deadLetters)

	require.False(t, leaks(s.historyOf(id)), "the workflow's history")
	require.False(t, leaks(s.worker.Output()), "the worker's log")
	require.False(t, leaks(s.api.Output()), "the API's log")
}

// TestErasingAPersonRefusedAtRcptLeavesNothingOfThemInTheHistory: the mail
// server refuses the person's address at RCPT TO (its reply repeats the
// address, and go-mail adds it again); the notification fails; the person
// is erased. Nothing of the address is in the workflow's history: no
// activity result, FailInput or continue-as-new input carried it.
func TestErasingAPersonRefusedAtRcptLeavesNothingOfThemInTheHistory(t *testing.T) {
	const person = "Refused.Person@example.com"
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	mail.RefuseRecipient(person, 550, "5.1.1 <"+strings.ToLower(person)+">: Recipient address rejected: User unknown")
	s := setupWith(t, withProviders(mailProviders(port)))
	leaks := func(text string) bool { return strings.Contains(strings.ToLower(text), "refused.person") }

	code, _, n := s.post("/v1/notifications", map[string]any{"channel": "email", "recipient": person, "subject": "Your code", "content": "hi"})
	require.Equal(t, http.StatusAccepted, code, "%v", n)
	id := n["id"].(string)
	failed := s.waitStatus(id, "FAILED", 60*time.Second)
	require.Contains(t, fmt.Sprint(failed["lastError"]), "Recipient address rejected", "the refusal is kept, without the address")
	require.Empty(t, mail.Messages())

	code, _, op := s.post("/v1/operations", map[string]any{"action": "erase", "filter": map[string]any{"recipient": person}})
	require.Equal(t, http.StatusAccepted, code, "%v", op)
	done := s.waitOperation(op["id"].(string), "COMPLETED", 60*time.Second)
	require.EqualValues(t, 1, done["succeeded"])

	_, erased := s.get("/v1/notifications/" + id)
	require.False(t, leaks(fmt.Sprint(erased)), "answer: %v", erased)
	_, attempts := s.get("/v1/notifications/" + id + "/attempts")
	require.False(t, leaks(fmt.Sprint(attempts)), "attempts: %v", attempts)
	history := s.historyOf(id)
	require.NotEmpty(t, history)
	require.False(t, leaks(history), "the workflow's history: %s", history)
	require.False(t, leaks(s.worker.Output()), "the worker's log")
}
