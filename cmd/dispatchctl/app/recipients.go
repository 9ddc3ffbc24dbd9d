package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// The recipient side (docs/RECIPIENTS.md): profiles, suppressions and
// categories, each a small group of subcommands over the client's calls.

func (a *cli) recipientsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "recipients",
		Aliases: []string{"recipient"},
		Short:   "Put, get, list and delete recipient profiles",
		Long: `Recipient profiles (/v1/recipients): the tenant's own id for a person, their
addresses, timezone, locale and preferences. A put replaces the whole profile;
a delete erases the person (the profile, its addresses, and the suppressions
and opt-outs of each address it held).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.recipientsGetCommand(), a.recipientsPutCommand(), a.recipientsPatchCommand(), a.recipientsDeleteCommand(),
		a.recipientsListCommand())
	return cmd
}

func (a *cli) recipientsGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print a recipient profile",
		Args:  exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			r, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Recipient, error) {
				return a.api.GetRecipient(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.output(r, func(w io.Writer) { printRecipient(w, r) })
		}),
	}
}

func (a *cli) recipientsPutCommand() *cobra.Command {
	var (
		file, sms, email, timezone, locale string
		quiet                              string
		push, prefs                        []string
	)
	cmd := &cobra.Command{
		Use:   "put ID (--file FILE | FLAGS...)",
		Short: "Create or replace a recipient profile",
		Long: `Store a recipient profile (PUT /v1/recipients/{id}): the body is the whole
profile, so what is not given is removed from it. Give the profile as a JSON
file (--file, '-' for stdin), or build it with the flags.`,
		Example: `  dispatchctl recipients put user-42 --sms +14155550123 --email ada@example.com --push tok-1 --push tok-2 \
      --timezone Europe/Istanbul --locale tr-TR --pref marketing.email=false --quiet-hours 22:00-08:00
  dispatchctl recipients put user-42 --file profile.json`,
		Args: exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			body, err := a.recipientInput(cmd, file, sms, email, timezone, locale, quiet, push, prefs)
			if err != nil {
				return err
			}
			r, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Recipient, error) {
				return a.api.PutRecipient(ctx, args[0], body)
			})
			if err != nil {
				return err
			}
			return a.output(r, func(w io.Writer) { printRecipient(w, r) })
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&file, "file", "", "the profile as JSON ('-' reads stdin); no other flag with it")
	fl.StringVar(&sms, "sms", "", "the E.164 number")
	fl.StringVar(&email, "email", "", "the email address")
	fl.StringArrayVar(&push, "push", nil, "a push device token (repeat, in order)")
	fl.StringVar(&timezone, "timezone", "", "an IANA time zone, e.g. Europe/Istanbul")
	fl.StringVar(&locale, "locale", "", "a BCP 47 language tag, e.g. tr-TR")
	fl.StringArrayVar(&prefs, "pref", nil, "a preference CATEGORY.CHANNEL=true|false (repeat)")
	fl.StringVar(&quiet, "quiet-hours", "", "the person's quiet hours, HH:MM-HH:MM local to --timezone (e.g. 22:00-08:00)")
	return cmd
}

// recipientInput is the profile put sends: the file's, or the flags'.
func (a *cli) recipientInput(cmd *cobra.Command, file, sms, email, timezone, locale, quiet string, push, prefs []string) (client.RecipientInput, error) {
	var body client.RecipientInput
	if file != "" {
		for _, name := range []string{"sms", "email", "push", "timezone", "locale", "pref", "quiet-hours"} {
			if cmd.Flags().Changed(name) {
				return body, usageErrorf("--file gives the whole profile; --%s cannot go with it", name)
			}
		}
		raw, err := a.readInput(file)
		if err != nil {
			return body, err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			return body, usageErrorf("%s: not a recipient profile: %v", file, err)
		}
		return body, nil
	}
	addrs := client.RecipientAddresses{Push: push}
	if sms != "" {
		addrs.Sms = &sms
	}
	if email != "" {
		addrs.Email = &email
	}
	if addrs.Sms != nil || addrs.Email != nil || len(addrs.Push) > 0 {
		body.Addresses = &addrs
	}
	if timezone != "" {
		body.Timezone = &timezone
	}
	if locale != "" {
		body.Locale = &locale
	}
	if len(prefs) > 0 {
		p, err := parsePrefs(prefs)
		if err != nil {
			return body, err
		}
		body.Preferences = &p
	}
	if quiet != "" {
		q, err := pacing.ParseWindow(quiet)
		if err != nil {
			return body, usageErrorf("--quiet-hours: %v", err)
		}
		body.QuietHours = &client.QuietHours{Start: q.Start, End: q.End}
	}
	return body, nil
}

// parsePrefs reads CATEGORY.CHANNEL=true|false flags; the channel is the
// last dot's part, for a category may hold dots.
func parsePrefs(flags []string) (client.Preferences, error) {
	m := map[string]map[string]bool{}
	for _, f := range flags {
		key, val, ok := strings.Cut(f, "=")
		i := strings.LastIndex(key, ".")
		allowed, err := strconv.ParseBool(val)
		if !ok || i <= 0 || i == len(key)-1 || err != nil {
			return nil, usageErrorf("--pref %q: want CATEGORY.CHANNEL=true|false, e.g. marketing.email=false", f)
		}
		if m[key[:i]] == nil {
			m[key[:i]] = map[string]bool{}
		}
		m[key[:i]][key[i+1:]] = allowed
	}
	raw, _ := json.Marshal(m)
	var p client.Preferences
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, usageErrorf("--pref: %v", err)
	}
	return p, nil
}

func (a *cli) recipientsPatchCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "patch ID --file FILE",
		Short: "Change part of a recipient profile (a JSON merge patch)",
		Long: `Change part of a profile (PATCH /v1/recipients/{id}) with an RFC 7396 JSON merge
patch read from --file ('-' for stdin): a member set to null is removed, an
object is merged member by member, anything else replaced.`,
		Example: `  echo '{"timezone":null,"preferences":{"marketing":{"sms":false}}}' | dispatchctl recipients patch user-42 --file -`,
		Args:    exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageErrorf("give the merge patch with --file FILE ('-' reads stdin)")
			}
			raw, err := a.readInput(file)
			if err != nil {
				return err
			}
			var patch map[string]any
			if err := json.Unmarshal(raw, &patch); err != nil || patch == nil {
				return usageErrorf("%s: a merge patch is a JSON object", file)
			}
			r, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Recipient, error) {
				return a.api.PatchRecipient(ctx, args[0], patch)
			})
			if err != nil {
				return err
			}
			return a.output(r, func(w io.Writer) { printRecipient(w, r) })
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "the merge patch as JSON ('-' reads stdin)")
	return cmd
}

func (a *cli) recipientsDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Erase a recipient profile, its addresses' suppressions and opt-outs",
		Args:  exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			_, _, err := call(cmd.Context(), func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.api.DeleteRecipient(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.output(map[string]string{"deleted": args[0]}, func(w io.Writer) { say(w, "deleted recipient %s\n", args[0]) })
		}),
	}
}

func (a *cli) recipientsListCommand() *cobra.Command {
	var pf pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List recipient profiles, by id",
		Args:  exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			p := &client.ListRecipientsParams{Limit: pf.limitPtr(cmd), Cursor: pf.cursorPtr()}
			page, _, err := call(cmd.Context(), func(ctx context.Context) (*client.RecipientPage, error) {
				return a.api.ListRecipients(ctx, p)
			})
			if err != nil {
				return err
			}
			return a.output(page, func(w io.Writer) {
				say(w, "%-32s  %-16s  %-32s  %-5s  %s\n", "ID", "SMS", "EMAIL", "PUSH", "UPDATED")
				for _, r := range page.Data {
					say(w, "%-32s  %-16s  %-32s  %-5d  %s\n", r.ID, dash(str(r.Addresses.Sms)), dash(str(r.Addresses.Email)),
						len(r.Addresses.Push), stamp(r.UpdatedAt))
				}
				a.printNext(page.NextCursor)
			})
		}),
	}
	pf.register(cmd.Flags())
	return cmd
}

func printRecipient(w io.Writer, r *client.Recipient) {
	k := newKV(w)
	k.add("id", r.ID)
	k.add("sms", str(r.Addresses.Sms))
	k.add("email", str(r.Addresses.Email))
	k.add("push", strings.Join(r.Addresses.Push, " "))
	k.add("timezone", str(r.Timezone))
	k.add("locale", str(r.Locale))
	k.add("preferences", prefsString(r.Preferences))
	if r.QuietHours != nil {
		k.add("quiet hours", r.QuietHours.Start+"-"+r.QuietHours.End)
	}
	k.add("created", stamp(r.CreatedAt))
	k.add("updated", stamp(r.UpdatedAt))
}

// prefsString is preferences as the --pref flags that would make them.
func prefsString(p client.Preferences) string {
	var parts []string
	for cat, chans := range p {
		for ch, v := range map[string]*bool{"sms": chans.Sms, "email": chans.Email, "push": chans.Push} {
			if v != nil {
				parts = append(parts, fmt.Sprintf("%s.%s=%t", cat, ch, *v))
			}
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// pageFlags are a list's --limit and --cursor.
type pageFlags struct {
	limit  int
	cursor string
}

func (p *pageFlags) register(fl interface {
	IntVar(*int, string, int, string)
	StringVar(*string, string, string, string)
}) {
	fl.IntVar(&p.limit, "limit", 50, "the most on the page (1-100)")
	fl.StringVar(&p.cursor, "cursor", "", "the next page's cursor, as the previous page printed it")
}

func (p *pageFlags) limitPtr(cmd *cobra.Command) *int {
	if !cmd.Flags().Changed("limit") {
		return nil
	}
	return &p.limit
}

func (p *pageFlags) cursorPtr() *string {
	if p.cursor == "" {
		return nil
	}
	return &p.cursor
}

// printNext tells, on stderr, how to ask for the next page.
func (a *cli) printNext(next *string) {
	if next != nil {
		say(a.opts.Stderr, "more: --cursor %s\n", *next)
	}
}

func (a *cli) suppressionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "suppressions",
		Aliases: []string{"suppression"},
		Short:   "List, add and remove suppressed addresses",
		Long: `The suppression list (/v1/suppressions): addresses never sent to again on a
channel, added by hand (add) or automatically when a provider says an
address is dead or refused. remove lifts one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.suppressionsListCommand(), a.suppressionsAddCommand(), a.suppressionsRemoveCommand())
	return cmd
}

// channelArg is a CHANNEL argument, which must be given.
func channelArg(s string) (client.Channel, error) {
	ch, err := parseChannel(s)
	if err != nil {
		return "", err
	}
	if ch == nil {
		return "", usageErrorf("give a channel: sms, email or push")
	}
	return *ch, nil
}

func parseReason(s string) (*client.SuppressionReason, error) {
	if s == "" {
		return nil, nil
	}
	r := client.SuppressionReason(strings.ToLower(strings.TrimSpace(s)))
	if !r.Valid() {
		return nil, usageErrorf("--reason %q: want manual, refused, bounced, complained, unsubscribed, invalid or unregistered", s)
	}
	return &r, nil
}

func (a *cli) suppressionsListCommand() *cobra.Command {
	var (
		pf                         pageFlags
		channel, recipient, reason string
	)
	cmd := &cobra.Command{
		Use:     "list [--channel C] [--recipient ADDRESS] [--reason R]",
		Short:   "List suppressed addresses, newest first",
		Example: `  dispatchctl suppressions list --channel email --reason bounced`,
		Args:    exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			p := &client.ListSuppressionsParams{Limit: pf.limitPtr(cmd), Cursor: pf.cursorPtr()}
			ch, err := parseChannel(channel)
			if err != nil {
				return err
			}
			p.Channel = ch
			if recipient != "" {
				p.Recipient = &recipient
			}
			r, err := parseReason(reason)
			if err != nil {
				return err
			}
			p.Reason = r
			page, _, err := call(cmd.Context(), func(ctx context.Context) (*client.SuppressionPage, error) {
				return a.api.ListSuppressions(ctx, p)
			})
			if err != nil {
				return err
			}
			return a.output(page, func(w io.Writer) {
				say(w, "%-5s  %-32s  %-12s  %-24s  %s\n", "CHAN", "RECIPIENT", "REASON", "CREATED", "NOTIFICATION")
				for _, s := range page.Data {
					n := ""
					if s.NotificationID != nil {
						n = s.NotificationID.String()
					}
					say(w, "%-5s  %-32s  %-12s  %-24s  %s\n", s.Channel, s.Recipient, s.Reason, stamp(s.CreatedAt), dash(n))
				}
				a.printNext(page.NextCursor)
			})
		}),
	}
	fl := cmd.Flags()
	pf.register(fl)
	fl.StringVar(&channel, "channel", "", "only this channel: sms, email, push")
	fl.StringVar(&recipient, "recipient", "", "only this address")
	fl.StringVar(&reason, "reason", "", "only this reason")
	return cmd
}

func (a *cli) suppressionsAddCommand() *cobra.Command {
	var reason, note string
	cmd := &cobra.Command{
		Use:     "add CHANNEL RECIPIENT [--reason R] [--note TEXT]",
		Short:   "Suppress an address on a channel",
		Example: `  dispatchctl suppressions add sms +14155550123 --note "asked by phone"`,
		Args:    exactArgs("CHANNEL", "RECIPIENT"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			ch, err := channelArg(args[0])
			if err != nil {
				return err
			}
			var body client.SuppressionInput
			if body.Reason, err = parseReason(reason); err != nil {
				return err
			}
			if cmd.Flags().Changed("note") {
				body.Note = &note
			}
			s, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Suppression, error) {
				return a.api.Suppress(ctx, ch, args[1], body)
			})
			if err != nil {
				return err
			}
			return a.output(s, func(w io.Writer) { printSuppression(w, s) })
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (default manual)")
	cmd.Flags().StringVar(&note, "note", "", "a note of your own")
	return cmd
}

func (a *cli) suppressionsRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove CHANNEL RECIPIENT",
		Short: "Lift an address's suppression",
		Args:  exactArgs("CHANNEL", "RECIPIENT"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			ch, err := channelArg(args[0])
			if err != nil {
				return err
			}
			_, _, err = call(cmd.Context(), func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.api.Unsuppress(ctx, ch, args[1])
			})
			if err != nil {
				return err
			}
			return a.output(map[string]string{"removed": args[1], "channel": string(ch)},
				func(w io.Writer) { say(w, "%s %s is no longer suppressed\n", ch, args[1]) })
		}),
	}
}

func printSuppression(w io.Writer, s *client.Suppression) {
	k := newKV(w)
	k.add("channel", string(s.Channel))
	k.add("recipient", s.Recipient)
	k.add("reason", string(s.Reason))
	k.add("note", str(s.Note))
	if s.NotificationID != nil {
		k.add("notification", s.NotificationID.String())
	}
	k.add("created", stamp(s.CreatedAt))
}

func (a *cli) categoriesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "categories",
		Aliases: []string{"category"},
		Short:   "List, put and delete notification categories",
		Long: `Categories (/v1/categories): a critical category (security, billing) ignores
opt-outs and quiet hours, never suppressions; a category not stored is
non-critical. A category may throttle its notifications per recipient and
gather them into digests.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.categoriesListCommand(), a.categoriesPutCommand(), a.categoriesDeleteCommand())
	return cmd
}

func (a *cli) categoriesListCommand() *cobra.Command {
	var pf pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List categories, by name",
		Args:  exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			p := &client.ListCategoriesParams{Limit: pf.limitPtr(cmd), Cursor: pf.cursorPtr()}
			page, _, err := call(cmd.Context(), func(ctx context.Context) (*client.CategoryPage, error) {
				return a.api.ListCategories(ctx, p)
			})
			if err != nil {
				return err
			}
			return a.output(page, func(w io.Writer) {
				say(w, "%-32s  %-8s  %-14s  %-14s  %s\n", "NAME", "CRITICAL", "THROTTLE", "DIGEST", "DESCRIPTION")
				for _, c := range page.Data {
					say(w, "%-32s  %-8t  %-14s  %-14s  %s\n", c.Name, c.Critical, dash(throttleString(c.Throttle)),
						dash(digestString(c.Digest)), dash(str(c.Description)))
				}
				a.printNext(page.NextCursor)
			})
		}),
	}
	pf.register(cmd.Flags())
	return cmd
}

func (a *cli) categoriesPutCommand() *cobra.Command {
	var (
		critical                          bool
		description, throttlePer, dWindow string
		throttleLimit, dMaxItems          int
	)
	cmd := &cobra.Command{
		Use:   "put NAME [--critical] [--description TEXT] [--throttle-limit N --throttle-per D] [--digest-window D --digest-max-items N]",
		Short: "Create or replace a category",
		Long: `Store a category (PUT /v1/categories/{name}), replacing it whole: a throttle
or digest not given is removed. --throttle-limit N --throttle-per D lets at
most N of its notifications reach each recipient in any D; --digest-window D
--digest-max-items N gathers those sent with one digestKey to one recipient
for D (or N of them) into one message.`,
		Example: `  dispatchctl categories put security --critical --description "logins and password resets"
  dispatchctl categories put news --throttle-limit 3 --throttle-per 1h --digest-window 10m --digest-max-items 50`,
		Args: exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			body := client.CategoryInput{Critical: &critical}
			if cmd.Flags().Changed("description") {
				body.Description = &description
			}
			changed := cmd.Flags().Changed
			switch {
			case changed("throttle-limit") && changed("throttle-per"):
				body.Throttle = &client.Throttle{Limit: throttleLimit, Per: throttlePer}
			case changed("throttle-limit") || changed("throttle-per"):
				return usageErrorf("a throttle is --throttle-limit N with --throttle-per D (e.g. 3 and 1h)")
			}
			switch {
			case changed("digest-window") && changed("digest-max-items"):
				body.Digest = &client.Digest{Window: dWindow, MaxItems: dMaxItems}
			case changed("digest-window") || changed("digest-max-items"):
				return usageErrorf("a digest is --digest-window D with --digest-max-items N (e.g. 10m and 50)")
			}
			c, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Category, error) {
				return a.api.PutCategory(ctx, args[0], body)
			})
			if err != nil {
				return err
			}
			return a.output(c, func(w io.Writer) {
				k := newKV(w)
				k.add("name", c.Name)
				k.add("critical", strconv.FormatBool(c.Critical))
				k.add("description", str(c.Description))
				k.add("throttle", throttleString(c.Throttle))
				k.add("digest", digestString(c.Digest))
				k.add("updated", stamp(c.UpdatedAt))
			})
		}),
	}
	fl := cmd.Flags()
	fl.BoolVar(&critical, "critical", false, "opt-outs and quiet hours do not apply to it (suppressions still do)")
	fl.StringVar(&description, "description", "", "what it is for")
	fl.IntVar(&throttleLimit, "throttle-limit", 0, "at most this many of its notifications per recipient in --throttle-per")
	fl.StringVar(&throttlePer, "throttle-per", "", "the throttle's window, a duration (e.g. 1h)")
	fl.StringVar(&dWindow, "digest-window", "", "gather a digest for this long from its first item (e.g. 10m)")
	fl.IntVar(&dMaxItems, "digest-max-items", 0, "or until it holds this many items")
	return cmd
}

// throttleString is "3 per 1h".
func throttleString(t *client.Throttle) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%d per %s", t.Limit, t.Per)
}

// digestString is "10m, max 50".
func digestString(d *client.Digest) string {
	if d == nil {
		return ""
	}
	return fmt.Sprintf("%s, max %d", d.Window, d.MaxItems)
}

func (a *cli) categoriesDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a category (it becomes non-critical)",
		Args:  exactArgs("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			_, _, err := call(cmd.Context(), func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.api.DeleteCategory(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.output(map[string]string{"deleted": args[0]}, func(w io.Writer) { say(w, "deleted category %s\n", args[0]) })
		}),
	}
}
