package app

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dispatch-engine/dispatch-engine/client"
)

func (a *cli) sendCommand() *cobra.Command {
	var (
		channel, to, content, subject, priority string
		idemKey, scheduledAt, file              string
		category, orderingKey, maxHold, digest  string
		wait                                    waitFlags
	)
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Send one notification",
		Long: `Send one notification (POST /v1/notifications) and print it.

Give it with flags (--channel, --to, --content; --subject for email), or as
the JSON body of POST /v1/notifications with --file (- for stdin).
--idempotency-key is sent as the Idempotency-Key header: repeating the
command with the same key and content prints the stored notification.
--ordering-key delivers it after the tenant's earlier notifications with
that key (--max-hold bounds the wait for the one before it); --digest-key
gathers it into its --category's digest (docs/RECIPIENTS.md).
With --wait, it waits until the notification is terminal and prints it then,
exiting 1 unless it ended DELIVERED.`,
		Example: `  dispatchctl send --channel sms --to +14155550123 --content "Your code is 1234" --wait
  dispatchctl send --channel email --to user@example.com --subject Welcome --content Hello! --priority HIGH
  dispatchctl send --file notification.json --idempotency-key order-42-shipped
  dispatchctl send --channel sms --to +14155550123 --content "Order 42 shipped" --ordering-key order-42 --max-hold 30s
  dispatchctl send --channel email --to user@example.com --subject News --content "A new post" --category news --digest-key daily`,
		Args: exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var body client.CreateNotification
			fieldFlags := []string{"channel", "to", "content", "subject", "priority", "scheduled-at",
				"category", "ordering-key", "max-hold", "digest-key"}
			if file != "" {
				for _, f := range fieldFlags {
					if cmd.Flags().Changed(f) {
						return usageErrorf("--file gives the whole notification: --%s cannot go with it", f)
					}
				}
				raw, err := a.readInput(file)
				if err != nil {
					return err
				}
				if err := strictJSON(raw, &body); err != nil {
					return usageErrorf("%s: not a notification as POST /v1/notifications takes it: %v", file, err)
				}
			} else {
				var missing []string
				for _, f := range []string{"channel", "to", "content"} {
					if !cmd.Flags().Changed(f) {
						missing = append(missing, "--"+f)
					}
				}
				if len(missing) > 0 {
					return usageErrorf("send needs %s (or --file)", strings.Join(missing, ", "))
				}
				ch, err := parseChannel(channel)
				if err != nil {
					return err
				}
				body = client.CreateNotification{Channel: *ch, Recipient: to, Content: content}
				if cmd.Flags().Changed("subject") {
					body.Subject = &subject
				}
				if body.Priority, err = parsePriority(priority); err != nil {
					return err
				}
				if body.ScheduledAt, err = parseTime("scheduled-at", scheduledAt); err != nil {
					return err
				}
				if err := pacingFlags(cmd, &body, category, orderingKey, maxHold, digest); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			n, note, err := call(ctx, func(ctx context.Context) (*client.Notification, error) {
				return a.api.Send(ctx, body, idempotency(idemKey)...)
			})
			if err != nil {
				return err
			}
			if note.replayed {
				say(a.opts.Stderr, "replayed: notification %s was created by an earlier request with this idempotency key\n", n.ID)
			}
			if !wait.wait {
				return a.output(n, func(w io.Writer) { printNotification(w, n) })
			}
			return a.waitNotification(ctx, n, wait.timeout)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&channel, "channel", "", "sms, email or push")
	f.StringVar(&to, "to", "", "the recipient: an E.164 number, an email address or a device token")
	f.StringVar(&content, "content", "", "the message")
	f.StringVar(&subject, "subject", "", "the subject (email only, required there)")
	f.StringVar(&priority, "priority", "", "HIGH, NORMAL or LOW (the API's default: NORMAL)")
	f.StringVar(&idemKey, "idempotency-key", "", "sent as Idempotency-Key: a repeat replays the stored notification")
	f.StringVar(&scheduledAt, "scheduled-at", "", "deliver no earlier than this instant (RFC 3339)")
	f.StringVar(&category, "category", "", "its category (whose preferences, throttle and digest apply)")
	f.StringVar(&orderingKey, "ordering-key", "", "deliver it after the tenant's earlier notifications with this key")
	f.StringVar(&maxHold, "max-hold", "", "with --ordering-key: wait at most this long for the one before it (e.g. 30s)")
	f.StringVar(&digest, "digest-key", "", "with --category: gather it into the category's digest with this key")
	f.StringVar(&file, "file", "", "a JSON file with the whole body (- for stdin), instead of the field flags")
	wait.register(f, "wait until the notification is terminal; exit 1 unless it ended DELIVERED")
	return cmd
}

// pacingFlags puts the flags given of --category, --ordering-key,
// --max-hold and --digest-key into body. What goes with what is the API's
// to check, but a --max-hold that is no duration is refused here.
func pacingFlags(cmd *cobra.Command, body *client.CreateNotification, category, orderingKey, maxHold, digest string) error {
	changed := cmd.Flags().Changed
	if changed("category") {
		body.Category = &category
	}
	if changed("ordering-key") {
		body.OrderingKey = &orderingKey
	}
	if changed("max-hold") {
		if _, err := time.ParseDuration(maxHold); err != nil {
			return usageErrorf("--max-hold %q: not a duration (30s, 5m, 1h)", maxHold)
		}
		body.MaxHold = &maxHold
	}
	if changed("digest-key") {
		body.DigestKey = &digest
	}
	return nil
}

// waitFlags are --wait and --wait-timeout.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) register(f *pflag.FlagSet, usage string) {
	f.BoolVar(&w.wait, "wait", false, usage)
	f.DurationVar(&w.timeout, "wait-timeout", 0, "give up waiting after this long and exit 1 (0: no limit)")
}

// withWaitTimeout is ctx bounded by --wait-timeout, when one is given.
func withWaitTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// waitGaveUp tells whether err is the end of a --wait-timeout (and not of
// the command's own context, which an interrupt cancels).
func waitGaveUp(parent, waitCtx context.Context, err error) bool {
	return parent.Err() == nil && waitCtx.Err() != nil && errors.Is(err, context.DeadlineExceeded)
}

// waitNotification waits for n to be terminal, prints it then, and fails
// unless it ended DELIVERED.
func (a *cli) waitNotification(ctx context.Context, n *client.Notification, timeout time.Duration) error {
	waitCtx, cancel := withWaitTimeout(ctx, timeout)
	defer cancel()
	final, _, err := call(waitCtx, func(ctx context.Context) (*client.Notification, error) {
		return a.api.Wait(ctx, n.ID, a.pollInterval)
	})
	if err != nil {
		if waitGaveUp(ctx, waitCtx, err) {
			last := n
			if final != nil {
				last = final
			}
			if err := a.output(last, func(w io.Writer) { printNotification(w, last) }); err != nil {
				return err
			}
			return outcomeErrorf("notification %s is still %s after --wait-timeout %s", n.ID, last.Status, timeout)
		}
		return err
	}
	if err := a.output(final, func(w io.Writer) { printNotification(w, final) }); err != nil {
		return err
	}
	return notDelivered(final)
}

// notDelivered is the error for a terminal notification that did not end
// DELIVERED, nil for one that did.
func notDelivered(n *client.Notification) error {
	if n.Status == client.StatusDELIVERED {
		return nil
	}
	why := ""
	if n.FailureReason != nil {
		why = " (" + string(*n.FailureReason) + ")"
	}
	if n.LastError != nil && *n.LastError != "" {
		why += ": " + oneLine(*n.LastError, 200)
	}
	return outcomeErrorf("notification %s ended %s%s", n.ID, n.Status, why)
}

func idempotency(key string) []client.RequestEditorFn {
	if key == "" {
		return nil
	}
	return []client.RequestEditorFn{client.WithIdempotencyKey(key)}
}

// readInput reads a file named on the command line, or stdin for "-".
func (a *cli) readInput(name string) ([]byte, error) {
	var (
		raw []byte
		err error
	)
	if name == "-" {
		raw, err = io.ReadAll(a.opts.Stdin)
	} else {
		raw, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, usageErr(err)
	}
	return raw, nil
}

func parseID(what, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(strings.TrimSpace(s))
	if err != nil {
		return uuid.UUID{}, usageErrorf("%q is not a %s id (a UUID)", s, what)
	}
	return id, nil
}

func parseChannel(s string) (*client.Channel, error) {
	if s == "" {
		return nil, nil
	}
	c := client.Channel(strings.ToLower(strings.TrimSpace(s)))
	if !c.Valid() {
		return nil, usageErrorf("channel %q: want sms, email or push", s)
	}
	return &c, nil
}

func parsePriority(s string) (*client.Priority, error) {
	if s == "" {
		return nil, nil
	}
	p := client.Priority(strings.ToUpper(strings.TrimSpace(s)))
	if !p.Valid() {
		return nil, usageErrorf("priority %q: want HIGH, NORMAL or LOW", s)
	}
	return &p, nil
}

func parseStatus(s string) (*client.Status, error) {
	if s == "" {
		return nil, nil
	}
	st := client.Status(strings.ToUpper(strings.TrimSpace(s)))
	if !st.Valid() {
		return nil, usageErrorf("status %q: want one of %s", s, joinStatuses())
	}
	return &st, nil
}

func joinStatuses() string {
	names := make([]string, len(statusOrder))
	for i, s := range statusOrder {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func parseTime(flag, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return nil, usageErrorf("--%s %q: not an RFC 3339 instant (2026-01-02T15:04:05Z)", flag, s)
	}
	t = t.UTC()
	return &t, nil
}

// notificationCommand is a command on one notification by id: get, cancel.
func (a *cli) notificationCommand(use, short, long, example string,
	do func(ctx context.Context, id uuid.UUID) (*client.Notification, error),
	after func(n *client.Notification)) *cobra.Command {
	return &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			id, err := parseID("notification", args[0])
			if err != nil {
				return err
			}
			n, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Notification, error) { return do(ctx, id) })
			if err != nil {
				return err
			}
			if after != nil {
				after(n)
			}
			return a.output(n, func(w io.Writer) { printNotification(w, n) })
		}),
	}
}

func (a *cli) getCommand() *cobra.Command {
	return a.notificationCommand("get", "Show one notification",
		"Show one notification in its current state (GET /v1/notifications/{id}).",
		"  dispatchctl get 01a22001-d5be-7c3d-975c-b69a729f588b",
		func(ctx context.Context, id uuid.UUID) (*client.Notification, error) { return a.api.Get(ctx, id) }, nil)
}

func (a *cli) cancelCommand() *cobra.Command {
	return a.notificationCommand("cancel", "Cancel a notification",
		`Cancel a notification not yet terminal (POST /v1/notifications/{id}/cancel)
and print it. One not delivering yet is CANCELLED at once; otherwise the
cancel is recorded and it becomes CANCELLED when its workflow acts on it
(dispatchctl watch ID follows that). A DELIVERED or FAILED one cannot be
cancelled (409). Repeating it is safe.`,
		"  dispatchctl cancel 01a22001-d5be-7c3d-975c-b69a729f588b",
		func(ctx context.Context, id uuid.UUID) (*client.Notification, error) { return a.api.Cancel(ctx, id) },
		func(n *client.Notification) {
			if n.Status != client.StatusCANCELLED {
				say(a.opts.Stderr, "cancel requested: %s becomes CANCELLED once its workflow acts on it\n", n.ID)
			}
		})
}

func (a *cli) retryCommand() *cobra.Command {
	var idemKey string
	cmd := &cobra.Command{
		Use:   "retry ID",
		Short: "Deliver a FAILED or CANCELLED notification again",
		Long: `Retry a FAILED or CANCELLED notification (POST /v1/notifications/{id}/retry):
it gets a fresh budget of attempts and is ACCEPTED again. --idempotency-key
makes the retry safe to repeat.`,
		Example: "  dispatchctl retry 01a22001-d5be-7c3d-975c-b69a729f588b --idempotency-key retry-588b-1",
		Args:    exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			id, err := parseID("notification", args[0])
			if err != nil {
				return err
			}
			n, note, err := call(cmd.Context(), func(ctx context.Context) (*client.Notification, error) {
				return a.api.Retry(ctx, id, idempotency(idemKey)...)
			})
			if err != nil {
				return err
			}
			if note.replayed {
				sayln(a.opts.Stderr, "replayed: this idempotency key already retried it; nothing changed")
			}
			return a.output(n, func(w io.Writer) { printNotification(w, n) })
		}),
	}
	cmd.Flags().StringVar(&idemKey, "idempotency-key", "", "sent as Idempotency-Key: a repeat changes nothing")
	return cmd
}

func (a *cli) attemptsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "attempts ID",
		Short:   "List a notification's delivery attempts",
		Long:    "List every provider call made for a notification, in order (GET /v1/notifications/{id}/attempts).",
		Example: "  dispatchctl attempts 01a22001-d5be-7c3d-975c-b69a729f588b",
		Args:    exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			id, err := parseID("notification", args[0])
			if err != nil {
				return err
			}
			as, _, err := call(cmd.Context(), func(ctx context.Context) ([]client.Attempt, error) { return a.api.Attempts(ctx, id) })
			if err != nil {
				return err
			}
			if as == nil {
				as = []client.Attempt{}
			}
			return a.output(client.AttemptList{Data: as}, func(w io.Writer) { printAttempts(w, as) })
		}),
	}
}

// filterFlags are the filters list and operations create share.
type filterFlags struct {
	status, channel, priority, batch, createdFrom, createdTo string
}

func (ff *filterFlags) register(f *pflag.FlagSet) {
	f.StringVar(&ff.status, "status", "", "only this status: "+joinStatuses())
	f.StringVar(&ff.channel, "channel", "", "only this channel: sms, email or push")
	f.StringVar(&ff.priority, "priority", "", "only this priority: HIGH, NORMAL or LOW")
	f.StringVar(&ff.batch, "batch", "", "only the notifications of this batch (its id)")
	f.StringVar(&ff.createdFrom, "created-from", "", "only those created at or after this instant (RFC 3339)")
	f.StringVar(&ff.createdTo, "created-to", "", "only those created before this instant (RFC 3339)")
}

type filter struct {
	status                 *client.Status
	channel                *client.Channel
	priority               *client.Priority
	batch                  *uuid.UUID
	createdFrom, createdTo *time.Time
}

func (ff *filterFlags) parse() (filter, error) {
	var (
		f   filter
		err error
	)
	if f.status, err = parseStatus(ff.status); err != nil {
		return f, err
	}
	if f.channel, err = parseChannel(ff.channel); err != nil {
		return f, err
	}
	if f.priority, err = parsePriority(ff.priority); err != nil {
		return f, err
	}
	if ff.batch != "" {
		id, err := parseID("batch", ff.batch)
		if err != nil {
			return f, err
		}
		f.batch = &id
	}
	if f.createdFrom, err = parseTime("created-from", ff.createdFrom); err != nil {
		return f, err
	}
	if f.createdTo, err = parseTime("created-to", ff.createdTo); err != nil {
		return f, err
	}
	return f, nil
}

func (a *cli) listCommand() *cobra.Command {
	var (
		ff     filterFlags
		limit  int
		cursor string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List notifications, newest first",
		Long: `List notifications, newest first (GET /v1/notifications), as a table, or
with --json as the API's page ({"data": [...], "nextCursor": ...}).

The filters combine. --limit is the page size (1-100; the API's default is
50). Without --all one page is printed, and the cursor of the next one goes
to stderr (pass it as --cursor); --all follows the cursors to the end.`,
		Example: `  dispatchctl list --status FAILED --channel sms --limit 20
  dispatchctl list --batch 01a22002-0000-7000-8000-000000000001 --all --json`,
		Args: exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			f, err := ff.parse()
			if err != nil {
				return err
			}
			params := &client.ListNotificationsParams{
				Status: f.status, Channel: f.channel, Priority: f.priority, BatchID: f.batch,
				CreatedFrom: f.createdFrom, CreatedTo: f.createdTo,
			}
			if cmd.Flags().Changed("limit") {
				if limit < 1 || limit > 100 {
					return usageErrorf("--limit %d: the page size is 1 to 100", limit)
				}
				params.Limit = &limit
			}
			if cursor != "" {
				params.Cursor = &cursor
			}
			ctx := cmd.Context()
			table := &notificationTable{w: a.opts.Stdout}
			if !all {
				page, _, err := call(ctx, func(ctx context.Context) (*client.NotificationPage, error) { return a.api.List(ctx, params) })
				if err != nil {
					return err
				}
				if a.jsonOut {
					if page.Data == nil {
						page.Data = []client.Notification{}
					}
					return printJSON(a.opts.Stdout, page)
				}
				table.rows(page.Data)
				if page.NextCursor != nil {
					say(a.opts.Stderr, "more: --cursor %s (or --all)\n", *page.NextCursor)
				}
				return nil
			}
			collected := []client.Notification{}
			_, _, err = call(ctx, func(ctx context.Context) (struct{}, error) {
				for n, err := range a.api.ListAll(ctx, params) {
					if err != nil {
						return struct{}{}, err
					}
					if a.jsonOut {
						collected = append(collected, n)
					} else {
						table.rows([]client.Notification{n})
					}
				}
				return struct{}{}, nil
			})
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.opts.Stdout, client.NotificationPage{Data: collected})
			}
			if !table.header {
				table.rows(nil)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	ff.register(f)
	f.IntVar(&limit, "limit", 0, "page size, 1 to 100 (default: the API's, 50)")
	f.StringVar(&cursor, "cursor", "", "start at this page (a nextCursor, with the same filters)")
	f.BoolVar(&all, "all", false, "follow the cursors: every page")
	return cmd
}
