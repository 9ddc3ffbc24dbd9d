package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/client"
)

func (a *cli) watchCommand() *cobra.Command {
	var (
		batch   string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch ID | --batch BATCH_ID",
		Short: "Follow a notification, or a batch, until it is terminal",
		Long: `Follow a notification until it is terminal (DELIVERED, FAILED, CANCELLED
or SKIPPED), printing a line each time its status (or its attempt count)
changes; exit 1 unless it ended DELIVERED.

With --batch, follow a batch's summary (GET /v1/batches/{id}) instead,
printing its counts by status each time they change, until every
notification of it is terminal; exit 1 unless all ended DELIVERED.

--json prints each state as one JSON object per line. --poll-interval sets
how often it reads.`,
		Example: `  dispatchctl watch 01a22001-d5be-7c3d-975c-b69a729f588b
  dispatchctl watch --batch 01a22002-0000-7000-8000-000000000001 --poll-interval 5s`,
		Args: func(cmd *cobra.Command, args []string) error {
			if batch != "" {
				return exactArgs()(cmd, args)
			}
			return exactArgs("ID (or --batch BATCH_ID)")(cmd, args)
		},
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			waitCtx, cancel := withWaitTimeout(ctx, timeout)
			defer cancel()
			var err error
			if batch != "" {
				id, perr := parseID("batch", batch)
				if perr != nil {
					return perr
				}
				err = a.watchBatch(waitCtx, id)
			} else {
				id, perr := parseID("notification", args[0])
				if perr != nil {
					return perr
				}
				err = a.watchNotification(waitCtx, id)
			}
			if err != nil && waitGaveUp(ctx, waitCtx, err) {
				return outcomeErrorf("not terminal after --wait-timeout %s", timeout)
			}
			return err
		}),
	}
	cmd.Flags().StringVar(&batch, "batch", "", "follow this batch's summary instead of one notification")
	cmd.Flags().DurationVar(&timeout, "wait-timeout", 0, "give up after this long and exit 1 (0: no limit)")
	return cmd
}

// printLine writes v as one line of JSON.
func (a *cli) printLine(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.opts.Stdout, "%s\n", raw)
	return err
}

// watchNotification prints a line for each change of the notification's
// status or attempt count, until it is terminal.
func (a *cli) watchNotification(ctx context.Context, id client.NotificationID) error {
	var last *client.Notification
	for {
		n, _, err := call(ctx, func(ctx context.Context) (*client.Notification, error) { return a.api.Get(ctx, id) })
		if err != nil {
			return err
		}
		if last == nil || n.Status != last.Status || n.Attempts != last.Attempts || waitChanged(last, n) {
			if a.jsonOut {
				if err := a.printLine(n); err != nil {
					return err
				}
			} else {
				sayln(a.opts.Stdout, notificationLine(n))
			}
		}
		if n.Status.Terminal() {
			return notDelivered(n)
		}
		last = n
		if err := pause(ctx, a.pollInterval); err != nil {
			return err
		}
	}
}

// notificationLine is one state of a notification:
//
//	2026-01-02T15:04:05.123Z  RETRYING    attempts=2  next=2026-01-02T15:04:07.000Z  error=provider answered 503
func notificationLine(n *client.Notification) string {
	var b strings.Builder
	say(&b, "%s  %-10s  attempts=%d", stamp(n.UpdatedAt), n.Status, n.Attempts)
	if n.Status == client.StatusRETRYING && n.NextAttemptAt != nil {
		say(&b, "  next=%s", stamp(*n.NextAttemptAt))
	}
	if n.Status == client.StatusSCHEDULED && n.ScheduledAt != nil {
		say(&b, "  scheduled=%s", stamp(*n.ScheduledAt))
	}
	if n.DeferredBy != nil {
		say(&b, "  deferred=%s", *n.DeferredBy)
	}
	if n.OrderingBroken != nil && *n.OrderingBroken {
		say(&b, "  ordering=broken")
	}
	if n.FailureReason != nil {
		say(&b, "  reason=%s", *n.FailureReason)
	}
	if n.LastError != nil && *n.LastError != "" && n.Status != client.StatusDELIVERED {
		say(&b, "  error=%s", oneLine(*n.LastError, 160))
	}
	return b.String()
}

// waitChanged reports whether why or until when n waits changed since
// last: a throttled notification may wait again for quiet hours.
func waitChanged(last, n *client.Notification) bool {
	return str(last.DeferredBy) != str(n.DeferredBy) || stampPtr(last.ScheduledAt) != stampPtr(n.ScheduledAt)
}

// watchBatch prints the batch's counts by status each time they change,
// until all its notifications are terminal.
func (a *cli) watchBatch(ctx context.Context, id client.NotificationID) error {
	last := ""
	for {
		s, _, err := call(ctx, func(ctx context.Context) (*client.BatchSummary, error) { return a.api.Batch(ctx, id) })
		if err != nil {
			return err
		}
		done := batchDone(s)
		if counts := statusCounts(s); counts != last {
			if a.jsonOut {
				if err := a.printLine(s); err != nil {
					return err
				}
			} else {
				say(a.opts.Stdout, "%s  terminal %d/%d  %s\n", stamp(time.Now()), done, s.Total, counts)
			}
			last = counts
		}
		if done >= s.Total {
			if s.ByStatus.DELIVERED == s.Total {
				return nil
			}
			return outcomeErrorf("batch %s: %d of %d did not end DELIVERED (FAILED=%d CANCELLED=%d SKIPPED=%d)",
				s.BatchID, s.Total-s.ByStatus.DELIVERED, s.Total, s.ByStatus.FAILED, s.ByStatus.CANCELLED, s.ByStatus.SKIPPED)
		}
		if err := pause(ctx, a.pollInterval); err != nil {
			return err
		}
	}
}
