package workflows

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.temporal.io/sdk/workflow"
)

// What the Temporal Web UI shows of a run without opening its events: each
// attempt, timer and wait carries a one-line summary (Temporal's user
// metadata), and the run's current details say where it stands. Neither
// holds a recipient, a message or a secret: only attempt numbers, provider
// names, outcomes, status codes and times. Summaries are stored on the
// events they label; current details are no event at all (the UI reads them
// with a built-in query), so they cost the history nothing.

// maxDetailLines bounds the attempt lines the current details keep (the
// latest ones): a run that waits through a long outage must not grow them
// without end.
const maxDetailLines = 10

// maxDetailError bounds the error text of an attempt line.
const maxDetailError = 120

// attemptSummary labels the activity of the attempt in hand.
func (r *run) attemptSummary(fastPath bool) string {
	s := fmt.Sprintf("attempt %d", r.attempt)
	switch {
	case fastPath:
		s += " (fast path)"
	case r.after != "":
		s += " after " + r.after
	}
	return s
}

// noteAttempt adds what the attempt in hand came to, to the current details.
func (r *run) noteAttempt(ctx workflow.Context, attemptErr error) {
	line := fmt.Sprintf("attempt %d", r.attempt)
	if r.last.Provider != "" {
		line += " · " + r.last.Provider
	}
	outcome := string(r.last.Outcome)
	if attemptErr != nil {
		outcome = "did not report back"
		if isNotAttempted(attemptErr) {
			outcome = "could not begin"
		}
	}
	line += " · " + outcome
	if r.last.StatusCode != 0 {
		line += fmt.Sprintf(" (%d)", r.last.StatusCode)
	}
	if r.last.Error != "" && r.last.Outcome != OutcomeDelivered {
		line += ": " + clip(r.last.Error, maxDetailError)
	}
	r.lines = append(r.lines, line)
	if len(r.lines) > maxDetailLines {
		r.lines = r.lines[len(r.lines)-maxDetailLines:]
	}
	r.showDetails(ctx)
}

// showDetails sets the run's current details from its status view and
// attempt lines, e.g.
//
//	**RETRYING** · 2 attempt(s) · next attempt at 15:04:05 UTC
//
//	- attempt 1 · primary · retry (503): provider answered 503
//	- attempt 2 · backup · retry (503): provider answered 503
func (r *run) showDetails(ctx workflow.Context) {
	var b strings.Builder
	b.WriteString("**" + string(r.view.Status) + "** · " + strconv.Itoa(r.view.Attempts) + " attempt(s)")
	if r.view.NextAttemptAt != nil {
		b.WriteString(" · next attempt at " + r.view.NextAttemptAt.UTC().Format(time.TimeOnly) + " UTC")
	}
	if len(r.lines) > 0 {
		// A blank line first, so the UI's Markdown renders the lines as a list.
		b.WriteString("\n")
	}
	for _, line := range r.lines {
		b.WriteString("\n- " + line)
	}
	workflow.SetCurrentDetails(ctx, b.String())
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
