package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// batchSent is one request of a batch file, as accepted.
type batchSent struct {
	BatchID  uuid.UUID            `json:"batchId"`
	Count    int                  `json:"count"`
	Replayed bool                 `json:"replayed"`
	Summary  *client.BatchSummary `json:"summary,omitempty"` // with --wait: how it ended
}

// batchReport is what `batch --json` prints.
type batchReport struct {
	Count          int         `json:"count"`
	IdempotencyKey string      `json:"idempotencyKey"`
	Batches        []batchSent `json:"batches"`
}

func (a *cli) batchCommand() *cobra.Command {
	var (
		idemKey string
		wait    waitFlags
	)
	cmd := &cobra.Command{
		Use:   "batch FILE",
		Short: "Send the notifications of a JSON or CSV file",
		Long: `Send the notifications of FILE (- for stdin) as batches
(POST /v1/notifications/batch) of at most 1,000, one after the other, and
print each batch's id and count.

FILE is JSON when it starts with '[' or '{': an array of notifications as
POST /v1/notifications takes them, or {"notifications": [...]}. Otherwise it
is CSV with a header row naming its columns: channel, to, content (required),
subject, priority (optional, empty cells are left out).

Every request carries an Idempotency-Key: --idempotency-key K sends K-1,
K-2, ... for the first, second, ... 1,000; without it a key is made up and
printed should a request fail. If one fails (an invalid item: nothing of that
request is stored), fix the file and run the command again with the same key:
the requests already accepted are replayed, not duplicated, and the rest is
sent. A bar on stderr shows the progress of a file of more than 1,000.

With --wait it then follows every batch until all its notifications are
terminal, and exits 1 unless every one ended DELIVERED.`,
		Example: `  dispatchctl batch recipients.csv --idempotency-key spring-campaign
  dispatchctl batch notifications.json --wait`,
		Args: exactArgs("FILE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			raw, err := a.readInput(args[0])
			if err != nil {
				return err
			}
			items, err := parseBatchFile(raw)
			if err != nil {
				return usageErrorf("%s: %v", args[0], err)
			}
			key := idemKey
			if key == "" {
				key = "dispatchctl-" + uuid.NewString()
			}
			ctx := cmd.Context()
			sent, err := a.sendBatches(ctx, items, key)
			if err != nil {
				return err
			}
			report := batchReport{Count: len(items), IdempotencyKey: key, Batches: sent}
			if !a.jsonOut {
				printBatchesSent(a.opts.Stdout, &report)
			}
			if !wait.wait {
				if a.jsonOut {
					return printJSON(a.opts.Stdout, report)
				}
				return nil
			}
			waitCtx, cancel := withWaitTimeout(ctx, wait.timeout)
			defer cancel()
			werr := a.waitBatches(waitCtx, report.Batches, len(items))
			if werr != nil && !waitGaveUp(ctx, waitCtx, werr) {
				return werr
			}
			if a.jsonOut {
				if err := printJSON(a.opts.Stdout, report); err != nil {
					return err
				}
			} else {
				printBatchesEnded(a.opts.Stdout, report.Batches)
			}
			if werr != nil {
				return outcomeErrorf("not every notification is terminal after --wait-timeout %s", wait.timeout)
			}
			delivered := 0
			for _, b := range report.Batches {
				delivered += b.Summary.ByStatus.DELIVERED
			}
			if delivered != len(items) {
				return outcomeErrorf("%d of %d notifications did not end DELIVERED", len(items)-delivered, len(items))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&idemKey, "idempotency-key", "", "key of the requests: K-1, K-2, ... (made up when not given)")
	wait.register(cmd.Flags(), "wait until every notification is terminal; exit 1 unless all ended DELIVERED")
	return cmd
}

// sendBatches sends items in requests of at most maxBatch, keyed key-1,
// key-2, ...
func (a *cli) sendBatches(ctx context.Context, items []batchItem, key string) ([]batchSent, error) {
	parts := chunks(items, maxBatch)
	var bar *progressbar.ProgressBar
	if len(parts) > 1 {
		bar = a.progress(len(items), "sending")
	}
	var sent []batchSent
	for i, part := range parts {
		body := make([]client.CreateNotification, len(part))
		for j := range part {
			body[j] = part[j].n
		}
		partKey := key + "-" + strconv.Itoa(i+1)
		res, note, err := call(ctx, func(ctx context.Context) (*client.BatchAccepted, error) {
			return a.api.SendBatch(ctx, body, client.WithIdempotencyKey(partKey))
		})
		if err != nil {
			if bar != nil {
				_ = bar.Exit()
			}
			return nil, a.batchFailed(err, items, sent, i, len(parts), key)
		}
		sent = append(sent, batchSent{BatchID: res.BatchID, Count: res.Count, Replayed: note.replayed})
		if bar != nil {
			_ = bar.Add(len(part))
		}
	}
	return sent, nil
}

// progress is a bar on stderr counting to total.
func (a *cli) progress(total int, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(a.opts.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { sayln(a.opts.Stderr) }),
	)
}

var itemIndex = regexp.MustCompile(`^notifications\[(\d+)\]`)

// batchFailed is the error of request i (of n) failing: a problem's item
// indexes become the file's (and its CSV line), and the notes say what
// was sent before and how to resume.
func (a *cli) batchFailed(err error, items []batchItem, sent []batchSent, i, n int, key string) error {
	offset := i * maxBatch
	var pe *problemError
	if errors.As(err, &pe) && len(pe.p.Errors) > 0 {
		p := *pe.p
		p.Errors = make([]client.FieldError, len(pe.p.Errors))
		for j, fe := range pe.p.Errors {
			if m := itemIndex.FindStringSubmatch(fe.Field); m != nil {
				if k, convErr := strconv.Atoi(m[1]); convErr == nil && offset+k < len(items) {
					fe.Field = fmt.Sprintf("notifications[%d]%s", offset+k, fe.Field[len(m[0]):])
					if line := items[offset+k].line; line > 0 {
						fe.Field += fmt.Sprintf(" (line %d)", line)
					}
				}
			}
			p.Errors[j] = fe
		}
		err = &problemError{p: &p, requestID: pe.requestID}
	}
	var notes []string
	fate := "nothing of it was stored"
	if _, refused := asProblem(err); !refused {
		fate = "it may have been stored or not"
	}
	if n > 1 {
		notes = append(notes, fmt.Sprintf("request %d of %d (notifications %d to %d) failed; %s",
			i+1, n, offset, min(offset+maxBatch, len(items))-1, fate))
	} else if fate != "nothing of it was stored" {
		notes = append(notes, "the request failed; "+fate)
	}
	if len(sent) > 0 {
		accepted := 0
		for _, b := range sent {
			accepted += b.Count
			notes = append(notes, fmt.Sprintf("accepted before it: batch %s, %d notifications", b.BatchID, b.Count))
		}
		notes = append(notes, fmt.Sprintf("%d of %d notifications were accepted", accepted, len(items)))
	}
	notes = append(notes, fmt.Sprintf("to resume, run it again with --idempotency-key %s (accepted requests are replayed, not sent twice)", key))
	return &notedError{err: err, notes: notes}
}

func printBatchesSent(w io.Writer, r *batchReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	sayln(tw, "BATCH\tCOUNT")
	for _, b := range r.Batches {
		replayed := ""
		if b.Replayed {
			replayed = "  (replayed: accepted by an earlier run with this key)"
		}
		say(tw, "%s\t%d%s\n", b.BatchID, b.Count, replayed)
	}
	_ = tw.Flush()
	say(w, "%d batch%s, %d notifications (idempotency key %s)\n",
		len(r.Batches), map[bool]string{true: "", false: "es"}[len(r.Batches) == 1], r.Count, r.IdempotencyKey)
}

func printBatchesEnded(w io.Writer, bs []batchSent) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	sayln(tw, "BATCH\tTOTAL\tDELIVERED\tFAILED\tCANCELLED\tSKIPPED")
	var total, delivered, failed, cancelled, skipped int
	for _, b := range bs {
		s := b.Summary
		if s == nil {
			continue
		}
		say(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", b.BatchID, s.Total, s.ByStatus.DELIVERED, s.ByStatus.FAILED, s.ByStatus.CANCELLED,
			s.ByStatus.SKIPPED)
		total += s.Total
		delivered += s.ByStatus.DELIVERED
		failed += s.ByStatus.FAILED
		cancelled += s.ByStatus.CANCELLED
		skipped += s.ByStatus.SKIPPED
	}
	if len(bs) > 1 {
		say(tw, "total\t%d\t%d\t%d\t%d\t%d\n", total, delivered, failed, cancelled, skipped)
	}
	_ = tw.Flush()
}

// waitBatches reads the summary of every batch each poll interval until all
// their notifications are terminal, keeping the last summary of each in
// bs. A bar on stderr counts the terminal ones when there are more than
// maxBatch.
func (a *cli) waitBatches(ctx context.Context, bs []batchSent, total int) error {
	var bar *progressbar.ProgressBar
	if total > maxBatch {
		bar = a.progress(total, "delivering")
	}
	for {
		done, all := 0, true
		for i := range bs {
			if s := bs[i].Summary; s != nil && batchDone(s) >= s.Total {
				done += s.Total
				continue
			}
			s, _, err := call(ctx, func(ctx context.Context) (*client.BatchSummary, error) { return a.api.Batch(ctx, bs[i].BatchID) })
			if err != nil {
				if bar != nil {
					_ = bar.Exit()
				}
				return err
			}
			bs[i].Summary = s
			done += batchDone(s)
			all = all && batchDone(s) >= s.Total
		}
		if bar != nil {
			_ = bar.Set(min(done, total))
		}
		if all {
			return nil
		}
		if err := pause(ctx, a.pollInterval); err != nil {
			if bar != nil {
				_ = bar.Exit()
			}
			return err
		}
	}
}

// pause waits d, or until ctx ends (its error).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
