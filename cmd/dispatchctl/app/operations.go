package app

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/client"
)

func (a *cli) operationsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "operations",
		Aliases: []string{"operation", "ops"},
		Short:   "Retry, cancel or erase every notification a filter matches",
		Long: `Bulk operations (/v1/operations): retry, cancel or erase every notification a
filter matches, as a tracked, resumable job. docs/OPERATIONS.md describes
them.`,
		Args: cobra.NoArgs, // an unknown subcommand: a usage error
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.operationsCreateCommand(), a.operationsGetCommand(), a.operationsListCommand(), a.operationsCancelCommand())
	return cmd
}

func (a *cli) operationsCreateCommand() *cobra.Command {
	var (
		action, failureReason, recipient, idemKey string
		ff                                        filterFlags
		dryRun                                    bool
		maxPerSecond                              int
		wait                                      waitFlags
	)
	cmd := &cobra.Command{
		Use:   "create --action retry|cancel|erase FILTER...",
		Short: "Start an operation",
		Long: `Start an operation (POST /v1/operations) that retries, cancels or erases every
notification the filter flags match (all of them must hold; give at least
one: --created-to alone acts on everything created before it), and print it.

--dry-run changes nothing and prints how many notifications match.
--max-per-second paces it (1-5000; the API's default is 500).
--idempotency-key makes it safe to repeat: the same key answers the
operation as it is now. With --wait it follows the operation until it
ends, printing its progress on stderr, and exits 1 unless it COMPLETED.`,
		Example: `  dispatchctl operations create --action retry --status FAILED --channel sms --created-from 2026-01-02T14:00:00Z --wait
  dispatchctl operations create --action erase --recipient +14155550123 --dry-run
  dispatchctl operations create --action cancel --batch 01a22001-d5be-7c3d-975c-b69a729f5000 --max-per-second 200`,
		Args: exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			act := client.CreateOperationAction(strings.ToLower(strings.TrimSpace(action)))
			if !act.Valid() {
				return usageErrorf("--action %q: want retry, cancel or erase", action)
			}
			f, err := ff.parse()
			if err != nil {
				return err
			}
			body := client.CreateOperation{Action: act, Filter: client.OperationFilter{
				Status: f.status, Channel: f.channel, Priority: f.priority, BatchID: f.batch,
				CreatedFrom: f.createdFrom, CreatedTo: f.createdTo,
			}}
			if failureReason != "" {
				fr := client.OperationFilterFailureReason(strings.ToLower(strings.TrimSpace(failureReason)))
				if !fr.Valid() {
					return usageErrorf("--failure-reason %q: want exhausted, permanent, expired, abandoned, undelivered or no-receipt", failureReason)
				}
				body.Filter.FailureReason = &fr
			}
			if cmd.Flags().Changed("recipient") {
				body.Filter.Recipient = &recipient
			}
			if body.Filter == (client.OperationFilter{}) {
				return usageErrorf("give at least one filter (--status, --channel, --priority, --batch, --created-from, --created-to, --failure-reason, --recipient); --created-to acts on everything created before it")
			}
			if cmd.Flags().Changed("max-per-second") {
				if maxPerSecond < 1 || maxPerSecond > 5000 {
					return usageErrorf("--max-per-second %d: want 1 to 5000", maxPerSecond)
				}
				body.MaxPerSecond = &maxPerSecond
			}
			ctx := cmd.Context()
			if dryRun {
				if wait.wait {
					return usageErrorf("--dry-run starts nothing to --wait for")
				}
				dr, _, err := call(ctx, func(ctx context.Context) (*client.DryRun, error) {
					return a.api.DryRunOperation(ctx, body, idempotency(idemKey)...)
				})
				if err != nil {
					return err
				}
				return a.output(dr, func(w io.Writer) {
					say(w, "dry run: %s would act on %d notification%s matching %s\n",
						dr.Action, dr.Matched, plural(dr.Matched), filterString(&dr.Filter))
				})
			}
			op, note, err := call(ctx, func(ctx context.Context) (*client.Operation, error) {
				return a.api.CreateOperation(ctx, body, idempotency(idemKey)...)
			})
			if err != nil {
				return err
			}
			if note.replayed {
				say(a.opts.Stderr, "replayed: operation %s was started by an earlier request with this idempotency key\n", op.ID)
			}
			if !wait.wait {
				return a.output(op, func(w io.Writer) { printOperation(w, op) })
			}
			waitCtx, cancel := withWaitTimeout(ctx, wait.timeout)
			defer cancel()
			final, err := a.waitOperation(waitCtx, op)
			if err != nil && !waitGaveUp(ctx, waitCtx, err) {
				return err
			}
			if perr := a.output(final, func(w io.Writer) { printOperation(w, final) }); perr != nil {
				return perr
			}
			if err != nil {
				return outcomeErrorf("operation %s is still %s after --wait-timeout %s", op.ID, final.Status, wait.timeout)
			}
			if final.Status != client.OperationStatusCOMPLETED {
				why := ""
				if final.Error != nil {
					why = ": " + *final.Error
				}
				return outcomeErrorf("operation %s ended %s%s", op.ID, final.Status, why)
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&action, "action", "", "retry, cancel or erase (required)")
	ff.register(fl)
	fl.StringVar(&failureReason, "failure-reason", "", "only those FAILED for this reason: exhausted, permanent, expired, abandoned, undelivered, no-receipt")
	fl.StringVar(&recipient, "recipient", "", "only those to exactly this recipient")
	fl.BoolVar(&dryRun, "dry-run", false, "change nothing; print how many notifications match")
	fl.IntVar(&maxPerSecond, "max-per-second", 0, "the most notifications acted on per second, 1 to 5000 (default: the API's, 500)")
	fl.StringVar(&idemKey, "idempotency-key", "", "sent as Idempotency-Key: a repeat answers the operation as it is now")
	wait.register(fl, "follow the operation until it ends; exit 1 unless it COMPLETED")
	_ = cmd.MarkFlagRequired("action")
	return cmd
}

// waitOperation reads the operation each poll interval until it is no
// longer RUNNING, printing its progress on stderr when it changes; it
// returns the last state read (op itself if none was).
func (a *cli) waitOperation(ctx context.Context, op *client.Operation) (*client.Operation, error) {
	last := op
	progress := ""
	for {
		cur, _, err := call(ctx, func(ctx context.Context) (*client.Operation, error) { return a.api.GetOperation(ctx, op.ID) })
		if err != nil {
			return last, err
		}
		last = cur
		if p := fmt.Sprintf("%s: processed %d of %d (succeeded %d, skipped %d)", cur.Status, cur.Processed, cur.Matched, cur.Succeeded, cur.Skipped); p != progress {
			sayln(a.opts.Stderr, p)
			progress = p
		}
		if cur.Status != client.OperationStatusRUNNING {
			return cur, nil
		}
		if err := pause(ctx, a.pollInterval); err != nil {
			return last, err
		}
	}
}

func (a *cli) operationsGetCommand() *cobra.Command {
	return a.operationCommand("get", "Show an operation and its progress", "GET /v1/operations/{id}.",
		func(ctx context.Context, id uuid.UUID) (*client.Operation, error) { return a.api.GetOperation(ctx, id) })
}

func (a *cli) operationsCancelCommand() *cobra.Command {
	return a.operationCommand("cancel", "Stop a running operation",
		"POST /v1/operations/{id}/cancel: the operation stops after the page it is on and ends CANCELLED; what it did stays done.",
		func(ctx context.Context, id uuid.UUID) (*client.Operation, error) {
			return a.api.CancelOperation(ctx, id)
		})
}

func (a *cli) operationCommand(use, short, long string, do func(ctx context.Context, id uuid.UUID) (*client.Operation, error)) *cobra.Command {
	return &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Long:    long,
		Example: "  dispatchctl operations " + use + " 01a22001-d5be-7c3d-975c-b69a729f6000",
		Args:    exactArgs("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			id, err := parseID("operation", args[0])
			if err != nil {
				return err
			}
			op, _, err := call(cmd.Context(), func(ctx context.Context) (*client.Operation, error) { return do(ctx, id) })
			if err != nil {
				return err
			}
			return a.output(op, func(w io.Writer) { printOperation(w, op) })
		}),
	}
}

func (a *cli) operationsListCommand() *cobra.Command {
	var (
		limit  int
		cursor string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List operations, newest first",
		Long: `List operations, newest first (GET /v1/operations), as a table or with --json
as the API's page. --limit is the page size (1-100); --all follows the
cursors to the end.`,
		Example: "  dispatchctl operations list --all",
		Args:    exactArgs(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			params := &client.ListOperationsParams{}
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
			table := &operationTable{w: a.opts.Stdout}
			collected := []client.Operation{}
			for {
				page, _, err := call(ctx, func(ctx context.Context) (*client.OperationPage, error) { return a.api.ListOperations(ctx, params) })
				if err != nil {
					return err
				}
				if a.jsonOut {
					collected = append(collected, page.Data...)
				} else {
					table.rows(page.Data)
				}
				if page.NextCursor == nil {
					break
				}
				if !all {
					if a.jsonOut {
						return printJSON(a.opts.Stdout, client.OperationPage{Data: collected, NextCursor: page.NextCursor})
					}
					say(a.opts.Stderr, "more: --cursor %s (or --all)\n", *page.NextCursor)
					return nil
				}
				params.Cursor = page.NextCursor
			}
			if a.jsonOut {
				return printJSON(a.opts.Stdout, client.OperationPage{Data: collected})
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "page size, 1 to 100 (default: the API's, 50)")
	f.StringVar(&cursor, "cursor", "", "start at this page (a nextCursor)")
	f.BoolVar(&all, "all", false, "follow the cursors: every page")
	return cmd
}
