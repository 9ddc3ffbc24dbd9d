package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// defaultDatabaseDSN is the DATABASE_DSN the services use by default.
const defaultDatabaseDSN = "postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable"

// The keys and tenants commands are the operator's: they talk to
// PostgreSQL (DATABASE_DSN), not to the API, since the API's keys are what
// they make.
const adminLong = `
It talks to PostgreSQL directly, through --database-dsn, then $DATABASE_DSN,
then ` + defaultDatabaseDSN + `:
API keys are what the API checks, so an operator makes them beside it.`

func (a *cli) keysCommand() *cobra.Command {
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke API keys (PostgreSQL)",
		Long:  "Manage the API keys of tenants. A key is shown once, when it is made, and stored only as its SHA-256, with its first 11 characters (its prefix) to recognise it." + adminLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		tenant, name string
		expiresIn    time.Duration
	)
	create := &cobra.Command{
		Use:     "create --tenant NAME",
		Short:   "Make a key for a tenant (created if new); the key alone on the last line",
		Example: "  dispatchctl keys create --tenant acme --name billing --expires-in 2160h",
		Args:    exactArgs(),
		RunE: a.admin(func(ctx context.Context, pool *pgxpool.Pool, _ *cobra.Command, _ []string) error {
			if tenant == "" {
				return usageErrorf("--tenant is required")
			}
			if err := store.ValidTenantName(tenant); err != nil {
				return usageErr(err)
			}
			if !validLabel(name) {
				return usageErrorf("--name must be at most %d bytes of UTF-8 text without control characters", maxKeyLabel)
			}
			if expiresIn < 0 {
				return usageErrorf("--expires-in must be positive")
			}
			var expires *time.Time
			if expiresIn > 0 {
				t := time.Now().Add(expiresIn)
				expires = &t
			}
			key, k, err := store.CreateAPIKey(ctx, pool, tenant, name, expires)
			if err != nil {
				return err
			}
			return a.output(struct {
				keyView
				Key string `json:"key"`
			}{viewKey(k, time.Now()), key}, func(w io.Writer) {
				say(w, "created key %s for tenant %s", k.Prefix, k.TenantName)
				if k.ExpiresAt != nil {
					say(w, ", expiring %s", stamp(*k.ExpiresAt))
				}
				sayln(w, "; it is shown once, here:")
				sayln(w, key)
			})
		}),
	}
	create.Flags().StringVar(&tenant, "tenant", "", "the tenant's name (created with no quota and weight 1 if new)")
	create.Flags().StringVar(&name, "name", "", "a label for the key")
	create.Flags().DurationVar(&expiresIn, "expires-in", 0, "the key expires after this long (e.g. 720h); never by default")

	var listTenant string
	list := &cobra.Command{
		Use:   "list [--tenant NAME]",
		Short: "List the keys (prefixes, never keys)",
		Args:  exactArgs(),
		RunE: a.admin(func(ctx context.Context, pool *pgxpool.Pool, _ *cobra.Command, _ []string) error {
			if listTenant != "" {
				if err := store.ValidTenantName(listTenant); err != nil {
					return usageErr(err)
				}
			}
			ks, err := store.ListAPIKeys(ctx, pool, listTenant)
			if err != nil {
				return err
			}
			now := time.Now()
			views := make([]keyView, len(ks))
			for i, k := range ks {
				views[i] = viewKey(k, now)
			}
			return a.output(views, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				_, _ = fmt.Fprintln(tw, "PREFIX\tTENANT\tNAME\tCREATED\tEXPIRES\tLAST USED\tSTATUS")
				for _, k := range views {
					_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Prefix, k.Tenant, dash(str(k.Name)),
						stamp(k.CreatedAt), dash(stampPtr(k.ExpiresAt)), dash(stampPtr(k.LastUsedAt)), k.Status)
				}
				_ = tw.Flush()
			})
		}),
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "only this tenant's keys")

	revoke := &cobra.Command{
		Use:   "revoke PREFIX",
		Short: "Revoke a key: every API process refuses it from its next request",
		Args:  exactArgs("PREFIX"),
		RunE: a.admin(func(ctx context.Context, pool *pgxpool.Pool, _ *cobra.Command, args []string) error {
			if !keyPrefix.MatchString(args[0]) {
				return usageErrorf("PREFIX is a key's first 11 characters, de_ and 8 letters, digits, '-' or '_' (see dispatchctl keys list)")
			}
			k, err := store.RevokeAPIKey(ctx, pool, args[0])
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{code: ExitFailed, msg: "no key has the prefix " + args[0] + " (see dispatchctl keys list)"}
			}
			if err != nil {
				return err
			}
			return a.output(viewKey(k, time.Now()), func(w io.Writer) {
				say(w, "revoked key %s of tenant %s\n", k.Prefix, k.TenantName)
			})
		}),
	}
	keys.AddCommand(create, list, revoke)
	return keys
}

// maxKeyLabel bounds a key's label (keys create --name).
const maxKeyLabel = 200

// keyPrefix is what keys revoke takes: the first 11 characters of a key.
var keyPrefix = regexp.MustCompile(`^de_[A-Za-z0-9_-]{8}$`)

// validLabel reports whether a key's label can be stored and shown on one
// line: UTF-8 without control characters (PostgreSQL's text holds no NUL).
func validLabel(s string) bool {
	if len(s) > maxKeyLabel || !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

func (a *cli) tenantsCommand() *cobra.Command {
	tenants := &cobra.Command{
		Use:   "tenants",
		Short: "Set and list tenants' quotas, fairness weights and default quiet hours (PostgreSQL)",
		Long:  "A tenant owns notifications, batches, operations and idempotency keys; its quotas bound what its keys may have accepted, its weight is its share of a saturated channel, its quiet hours are the default of its recipient profiles that set none." + adminLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		perSec, perDay int
		weight         float32
		quietHours     string
	)
	set := &cobra.Command{
		Use:   "set NAME [--accept-per-sec N] [--accept-per-day N] [--weight W] [--quiet-hours HH:MM-HH:MM|none]",
		Short: "Create a tenant or change what the flags given say (0 removes a quota, none the quiet hours)",
		Example: `  dispatchctl tenants set acme --accept-per-sec 50 --accept-per-day 100000 --weight 2
  dispatchctl tenants set acme --quiet-hours 22:00-08:00
  dispatchctl tenants set acme --quiet-hours none`,
		Args: exactArgs("NAME"),
		RunE: a.admin(func(ctx context.Context, pool *pgxpool.Pool, cmd *cobra.Command, args []string) error {
			if err := store.ValidTenantName(args[0]); err != nil {
				return usageErr(err)
			}
			var s store.TenantSettings
			flags := cmd.Flags()
			if flags.Changed("accept-per-sec") {
				if perSec < 0 {
					return usageErrorf("--accept-per-sec is 0 (none) or more")
				}
				s.AcceptPerSec = &perSec
			}
			if flags.Changed("accept-per-day") {
				if perDay < 0 {
					return usageErrorf("--accept-per-day is 0 (none) or more")
				}
				s.AcceptPerDay = &perDay
			}
			if flags.Changed("weight") {
				if weight <= 0 || weight > 1000 {
					return usageErrorf("--weight must be above 0 and at most 1000")
				}
				s.Weight = &weight
			}
			if flags.Changed("quiet-hours") {
				if strings.EqualFold(strings.TrimSpace(quietHours), "none") {
					s.QuietHours = store.NoQuietHours
				} else {
					q, err := pacing.ParseWindow(quietHours)
					if err != nil {
						return usageErrorf("--quiet-hours: %v (or none to remove them)", err)
					}
					s.QuietHours = &q
				}
			}
			t, err := store.SetTenant(ctx, pool, args[0], s)
			if err != nil {
				return err
			}
			return a.output(viewTenant(t), func(w io.Writer) { printTenants(w, []store.Tenant{t}) })
		}),
	}
	set.Flags().IntVar(&perSec, "accept-per-sec", 0, "notifications accepted per second at most (0: no quota)")
	set.Flags().IntVar(&perDay, "accept-per-day", 0, "notifications accepted per UTC day at most (0: no quota)")
	set.Flags().Float32Var(&weight, "weight", 1, "share of a saturated channel against other tenants (above 0, at most 1000)")
	set.Flags().StringVar(&quietHours, "quiet-hours", "", "default quiet hours of its profiles that set none, HH:MM-HH:MM in each profile's timezone (none removes them)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenants",
		Args:  exactArgs(),
		RunE: a.admin(func(ctx context.Context, pool *pgxpool.Pool, _ *cobra.Command, _ []string) error {
			ts, err := store.ListTenants(ctx, pool)
			if err != nil {
				return err
			}
			views := make([]tenantView, len(ts))
			for i, t := range ts {
				views[i] = viewTenant(t)
			}
			return a.output(views, func(w io.Writer) { printTenants(w, ts) })
		}),
	}
	tenants.AddCommand(set, list)
	return tenants
}

// keyView is a key as --json prints it: never the key nor its hash.
type keyView struct {
	ID         string     `json:"id"`
	Prefix     string     `json:"prefix"`
	Tenant     string     `json:"tenant"`
	Name       *string    `json:"name"`
	Status     string     `json:"status"` // active, revoked or expired
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
}

func viewKey(k store.APIKey, now time.Time) keyView {
	status := "active"
	switch {
	case k.RevokedAt != nil:
		status = "revoked"
	case !k.Active(now):
		status = "expired"
	}
	return keyView{ID: k.ID.String(), Prefix: k.Prefix, Tenant: k.TenantName, Name: k.Name, Status: status,
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt}
}

// tenantView is a tenant as --json prints it; a null quota is none.
type tenantView struct {
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	AcceptPerSec *int    `json:"acceptPerSec"`
	AcceptPerDay *int    `json:"acceptPerDay"`
	Weight       float32 `json:"weight"`
	// QuietHours is the default window of its profiles, as the API
	// shows a profile's ({"start":"22:00","end":"08:00"}); null for none.
	QuietHours *pacing.QuietHours `json:"quietHours"`
	CreatedAt  time.Time          `json:"createdAt"`
	UpdatedAt  time.Time          `json:"updatedAt"`
}

func viewTenant(t store.Tenant) tenantView {
	return tenantView{ID: t.ID.String(), Name: t.Name, AcceptPerSec: t.AcceptPerSec, AcceptPerDay: t.AcceptPerDay,
		Weight: t.Weight, QuietHours: t.QuietHours, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

func printTenants(w io.Writer, ts []store.Tenant) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "TENANT\tACCEPT/S\tACCEPT/DAY\tWEIGHT\tQUIET HOURS")
	quota := func(q *int) string {
		if q == nil {
			return "-"
		}
		return fmt.Sprint(*q)
	}
	for _, t := range ts {
		quiet := "-"
		if t.QuietHours != nil {
			quiet = t.QuietHours.String()
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%s\n", t.Name, quota(t.AcceptPerSec), quota(t.AcceptPerDay), t.Weight, quiet)
	}
	_ = tw.Flush()
}

// admin wraps a keys or tenants command: it opens a small pool on the
// database and checks the schema has tenants.
func (a *cli) admin(body func(ctx context.Context, pool *pgxpool.Pool, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		dsn := a.databaseDSN
		if !cmd.Flags().Changed("database-dsn") {
			if v := a.env["DATABASE_DSN"]; v != "" {
				dsn = v
			}
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
		defer cancel()
		pool, err := store.Connect(ctx, dsn, 2)
		if err != nil {
			return &exitError{code: ExitUnreachable, msg: err.Error()}
		}
		defer pool.Close()
		err = body(ctx, pool, cmd, args)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return &exitError{code: ExitFailed, msg: "the database has no tenants or api_keys table: migrate it first (make migrate-up, or go run ./cmd/migrate up)"}
		}
		return err
	}
}
