package app

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// say writes to w and sayln writes a line, leaving the error alone: what
// dispatchctl prints goes to a terminal or a pipe, and when writing there
// fails (a closed pipe) there is nowhere left to tell.
func say(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }

func sayln(w io.Writer, args ...any) { _, _ = fmt.Fprintln(w, args...) }

// printJSON writes v as indented JSON and a newline.
func printJSON(w io.Writer, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", raw)
	return err
}

// output prints v as JSON under --json, and with text otherwise.
func (a *cli) output(v any, text func(w io.Writer)) error {
	if a.jsonOut {
		return printJSON(a.opts.Stdout, v)
	}
	text(a.opts.Stdout)
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func stampPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return stamp(*t)
}

func str[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// kv writes "name  value" lines with the values in one column, leaving
// out empty values.
type kv struct{ w io.Writer }

func newKV(w io.Writer) *kv { return &kv{w} }

func (k *kv) add(name, value string) {
	if value != "" {
		say(k.w, "%-16s  %s\n", name, value)
	}
}

func (k *kv) flush() {}

// printNotification writes one notification as aligned fields.
func printNotification(w io.Writer, n *client.Notification) {
	k := newKV(w)
	k.add("id", n.ID.String())
	k.add("status", string(n.Status))
	k.add("channel", string(n.Channel))
	k.add("priority", string(n.Priority))
	k.add("recipient", n.Recipient)
	k.add("subject", str(n.Subject))
	k.add("content", oneLine(n.Content, 200))
	if n.Template != nil {
		version := 0
		if n.TemplateVersion != nil {
			version = *n.TemplateVersion
		}
		k.add("template", *n.Template+" v"+strconv.Itoa(version)+" "+str(n.Locale))
	}
	k.add("idempotency key", str(n.IdempotencyKey))
	if n.BatchID != nil {
		k.add("batch", n.BatchID.String())
	}
	k.add("attempts", strconv.Itoa(n.Attempts))
	k.add("retries", strconv.Itoa(n.Retries))
	k.add("provider", str(n.Provider))
	k.add("receipt", str(n.Receipt))
	k.add("failure reason", str(n.FailureReason))
	if n.LastError != nil {
		k.add("last error", oneLine(*n.LastError, 200))
	}
	k.add("created", stamp(n.CreatedAt))
	k.add("updated", stamp(n.UpdatedAt))
	k.add("category", str(n.Category))
	k.add("scheduled", stampPtr(n.ScheduledAt))
	k.add("deferred by", str(n.DeferredBy))
	k.add("ordering key", str(n.OrderingKey))
	k.add("max hold", str(n.MaxHold))
	if n.OrderingBroken != nil && *n.OrderingBroken {
		k.add("ordering broken", "true: it went before the one ahead of it ended")
	}
	k.add("digest key", str(n.DigestKey))
	if n.Digest != nil {
		k.add("digest", fmt.Sprintf("%s (%d items; its attempts are this one's)", n.Digest.ID, n.Digest.Items))
	}
	k.add("expires", stampPtr(n.ExpiresAt))
	k.add("next attempt", stampPtr(n.NextAttemptAt))
	k.add("cancel requested", stampPtr(n.CancelRequestedAt))
	k.add("delivered", stampPtr(n.DeliveredAt))
	k.add("erased", stampPtr(n.ErasedAt))
	k.add("workflow", n.WorkflowID)
	k.add("temporal", n.Links.Temporal)
	k.flush()
}

// notificationTable writes notifications as rows of fixed-width columns, so
// that pages printed one after the other line up.
type notificationTable struct {
	w      io.Writer
	header bool
}

func (t *notificationTable) rows(ns []client.Notification) {
	if !t.header {
		say(t.w, "%-36s  %-10s  %-7s  %-8s  %-8s  %-24s  %-24s  %-11s  %s\n",
			"ID", "STATUS", "CHANNEL", "PRIORITY", "ATTEMPTS", "CREATED", "SCHEDULED", "DEFERRED BY", "RECIPIENT")
		t.header = true
	}
	for i := range ns {
		n := &ns[i]
		say(t.w, "%-36s  %-10s  %-7s  %-8s  %-8d  %-24s  %-24s  %-11s  %s\n",
			n.ID, n.Status, n.Channel, n.Priority, n.Attempts, stamp(n.CreatedAt), dash(stampPtr(n.ScheduledAt)),
			dash(str(n.DeferredBy)), oneLine(n.Recipient, 64))
	}
}

func printAttempts(w io.Writer, as []client.Attempt) {
	if len(as) == 0 {
		sayln(w, "no attempts yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	sayln(tw, "#\tSTARTED\tDURATION\tSTATUS\tOUTCOME\tPROVIDER\tRECEIPT\tERROR")
	for _, at := range as {
		code := "-"
		if at.StatusCode != nil {
			code = strconv.Itoa(*at.StatusCode)
		}
		receipt := str(at.Receipt)
		if at.ReceiptReason != nil {
			receipt += " (" + *at.ReceiptReason + ")"
		}
		say(tw, "%d\t%s\t%dms\t%s\t%s\t%s\t%s\t%s\n", at.Attempt, stamp(at.StartedAt), at.DurationMs,
			code, at.Outcome, dash(str(at.Provider)), dash(receipt), dash(oneLine(str(at.Error), 120)))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine flattens s to one line of at most max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// statusOrder is the order in which counts by status are shown.
var statusOrder = []client.Status{
	client.StatusACCEPTED, client.StatusQUEUED, client.StatusSCHEDULED, client.StatusPROCESSING,
	client.StatusRETRYING, client.StatusSENT, client.StatusDELIVERED, client.StatusFAILED, client.StatusCANCELLED,
	client.StatusSKIPPED,
}

func byStatus(s *client.BatchSummary_ByStatus) map[client.Status]int {
	return map[client.Status]int{
		client.StatusACCEPTED: s.ACCEPTED, client.StatusQUEUED: s.QUEUED, client.StatusSCHEDULED: s.SCHEDULED,
		client.StatusPROCESSING: s.PROCESSING, client.StatusRETRYING: s.RETRYING, client.StatusSENT: s.SENT,
		client.StatusDELIVERED: s.DELIVERED, client.StatusFAILED: s.FAILED, client.StatusCANCELLED: s.CANCELLED,
		client.StatusSKIPPED: s.SKIPPED,
	}
}

// batchDone tells how many of a batch's notifications are terminal.
func batchDone(b *client.BatchSummary) int {
	return b.ByStatus.DELIVERED + b.ByStatus.FAILED + b.ByStatus.CANCELLED + b.ByStatus.SKIPPED
}

// statusCounts is "QUEUED=12 DELIVERED=270 FAILED=5": the statuses with a
// count, in lifecycle order.
func statusCounts(b *client.BatchSummary) string {
	counts := byStatus(&b.ByStatus)
	var parts []string
	for _, s := range statusOrder {
		if c := counts[s]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, c))
		}
	}
	return strings.Join(parts, " ")
}

func printOperation(w io.Writer, op *client.Operation) {
	k := newKV(w)
	k.add("id", op.ID.String())
	k.add("action", string(op.Action))
	k.add("status", string(op.Status))
	k.add("filter", filterString(&op.Filter))
	k.add("max per second", strconv.Itoa(op.MaxPerSecond))
	k.add("matched", strconv.Itoa(op.Matched))
	k.add("processed", strconv.Itoa(op.Processed))
	k.add("succeeded", strconv.Itoa(op.Succeeded))
	k.add("skipped", strconv.Itoa(op.Skipped)+skippedReasons(op.SkippedReasons))
	k.add("error", str(op.Error))
	k.add("created", stamp(op.CreatedAt))
	k.add("updated", stamp(op.UpdatedAt))
	k.add("cancel requested", stampPtr(op.CancelRequestedAt))
	k.add("finished", stampPtr(op.FinishedAt))
	k.add("workflow", op.WorkflowID)
	k.add("temporal", op.Links.Temporal)
	k.flush()
}

func skippedReasons(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return " (" + strings.Join(parts, " ") + ")"
}

// filterString is an operation's filter as the flags that would make it.
func filterString(f *client.OperationFilter) string {
	var parts []string
	add := func(name, value string) {
		if value != "" {
			parts = append(parts, name+"="+value)
		}
	}
	add("status", str(f.Status))
	add("channel", str(f.Channel))
	add("priority", str(f.Priority))
	if f.BatchID != nil {
		add("batch", f.BatchID.String())
	}
	add("created-from", stampPtr(f.CreatedFrom))
	add("created-to", stampPtr(f.CreatedTo))
	add("failure-reason", str(f.FailureReason))
	add("recipient", str(f.Recipient))
	return strings.Join(parts, " ")
}

type operationTable struct {
	w      io.Writer
	header bool
}

func (t *operationTable) rows(ops []client.Operation) {
	if !t.header {
		say(t.w, "%-36s  %-6s  %-9s  %-19s  %-9s  %-7s  %-24s  %s\n",
			"ID", "ACTION", "STATUS", "PROCESSED/MATCHED", "SUCCEEDED", "SKIPPED", "CREATED", "FILTER")
		t.header = true
	}
	for i := range ops {
		op := &ops[i]
		say(t.w, "%-36s  %-6s  %-9s  %-19s  %-9d  %-7d  %-24s  %s\n",
			op.ID, op.Action, op.Status, fmt.Sprintf("%d/%d", op.Processed, op.Matched),
			op.Succeeded, op.Skipped, stamp(op.CreatedAt), filterString(&op.Filter))
	}
}
