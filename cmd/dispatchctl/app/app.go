// Package app is dispatchctl, the operator CLI of the dispatch engine, as a
// library: Run (and Main) execute one command line in-process, so tests
// (and the end-to-end suite) drive exactly what the binary runs.
// Every call goes through the public API with the github.com/dispatch-engine/dispatch-engine/client
// package, except the keys and tenants commands (admin.go), which make what
// the API checks and so talk to PostgreSQL; nothing reads Temporal.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The exit codes, as `dispatchctl --help` and docs/DISPATCHCTL.md list them.
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitFailed: the API answered with a problem (4xx/5xx), or what was
	// waited for or watched did not end well (a notification not DELIVERED,
	// an operation not COMPLETED).
	ExitFailed = 1
	// ExitUsage: bad flags or arguments, or an input file that cannot be
	// read or parsed; nothing was sent.
	ExitUsage = 2
	// ExitUnreachable: the API could not be reached (connection refused, DNS,
	// TLS, a timeout).
	ExitUnreachable = 3
	// ExitInterrupted: stopped by Ctrl-C or SIGTERM (128 + SIGINT).
	ExitInterrupted = 130
)

// Options is one invocation: its arguments (without the program name), its
// streams and its environment.
type Options struct {
	Args   []string
	Stdin  io.Reader // `send --file -` and `batch -` read it; nil reads nothing
	Stdout io.Writer
	Stderr io.Writer
	// Env is the environment in os.Environ form (KEY=value); the last
	// duplicate wins. Only DISPATCH_URL, DISPATCH_API_KEY and DATABASE_DSN
	// (keys and tenants) are read.
	Env []string
	// Dir is where the search for .data/dev-api-key starts (then its
	// parents, up to the repository root); the working directory when empty.
	Dir string
	// HTTPClient, when set, carries every request (its Timeout is left alone);
	// otherwise a client with --timeout is made.
	HTTPClient *http.Client
}

// Run executes one dispatchctl command line with the process's standard
// input and returns its exit code. env is in os.Environ form.
func Run(args []string, stdout, stderr io.Writer, env []string) int {
	return Main(context.Background(), Options{Args: args, Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Env: env})
}

// Main executes one command line under ctx (cancelling it, as Ctrl-C does,
// stops a wait and exits ExitInterrupted) and returns its exit code.
func Main(ctx context.Context, o Options) int {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Stdin == nil {
		o.Stdin = strings.NewReader("")
	}
	a := &cli{opts: o, env: envMap(o.Env)}
	root := a.rootCommand()
	root.SetArgs(o.Args)
	root.SetIn(o.Stdin)
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	return a.report(ctx, cmd, err)
}

// cli is the state of one invocation: the global flags, and the API client
// made from them on first use.
type cli struct {
	opts Options
	env  map[string]string

	// Global flags.
	url          string
	apiKey       string
	jsonOut      bool
	timeout      time.Duration
	pollInterval time.Duration
	databaseDSN  string

	// Set once a command's own RunE starts: an error before that is cobra's
	// (unknown command or flag, wrong number of arguments), a usage error.
	ran bool

	cfg config
	api *apiClient
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

const rootLong = `dispatchctl operates the dispatch engine over its public API (openapi.yaml):
send notifications and batches, list, inspect, watch, cancel and retry them,
and run bulk operations (retry, cancel or erase what a filter matches);
manage recipient profiles, suppressed addresses and categories.
The keys and tenants commands make API keys and set tenants' quotas and
weights; they talk to PostgreSQL (--database-dsn, $DATABASE_DSN), not the API.

Configuration, the first found wins:
  API URL   --url, then $DISPATCH_URL, then http://127.0.0.1:8080
  API key   --api-key, then $DISPATCH_API_KEY, then the file .data/dev-api-key
            (written by 'make run') in the current directory or a parent of
            it, up to the repository root

Output is human-readable on stdout; --json prints the API's JSON instead.
Errors go to stderr; a problem answer prints its status, title, each invalid
field, its detail and the request id. With --json an error is one line of
JSON, the last on stderr: {"error":{"kind","exitCode","message","problem",
"notes"}}.

Exit codes:
  0    ok
  1    the API answered with a problem (4xx/5xx), or what --wait or watch
       followed did not end well (a notification not DELIVERED, a batch with
       one not DELIVERED, an operation not COMPLETED)
  2    usage error: bad flags or arguments, an unreadable or invalid input
       file; nothing was sent
  3    the API could not be reached (connection refused, DNS, timeout)
  130  interrupted (Ctrl-C)`

func (a *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "dispatchctl",
		Short:         "Operator CLI of the dispatch engine",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare `dispatchctl` prints the help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", defaultURL, "API base URL (env DISPATCH_URL)")
	pf.StringVar(&a.apiKey, "api-key", "", "API key (env DISPATCH_API_KEY; else .data/dev-api-key)")
	pf.BoolVar(&a.jsonOut, "json", false, "print JSON instead of text")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of each API request")
	pf.DurationVar(&a.pollInterval, "poll-interval", time.Second, "how often --wait and watch poll")
	pf.StringVar(&a.databaseDSN, "database-dsn", defaultDatabaseDSN, "PostgreSQL, for keys and tenants (env DATABASE_DSN)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })

	root.AddCommand(
		a.sendCommand(),
		a.getCommand(),
		a.attemptsCommand(),
		a.cancelCommand(),
		a.retryCommand(),
		a.listCommand(),
		a.batchCommand(),
		a.watchCommand(),
		a.operationsCommand(),
		a.recipientsCommand(),
		a.suppressionsCommand(),
		a.categoriesCommand(),
		a.templatesCommand(),
		a.keysCommand(),
		a.tenantsCommand(),
	)
	return root
}

// run wraps a command's body: it marks that the command itself ran (so an
// error after that is not cobra's), checks the global flags and makes the
// API client.
func (a *cli) run(body func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		if err := a.setup(cmd); err != nil {
			return err
		}
		return body(cmd, args)
	}
}

func (a *cli) setup(cmd *cobra.Command) error {
	if a.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	if a.pollInterval <= 0 {
		return usageErrorf("--poll-interval must be positive")
	}
	flags := cmd.Flags()
	cfg, err := resolveConfig(
		flagValue{a.url, flags.Changed("url")},
		flagValue{a.apiKey, flags.Changed("api-key")},
		a.env, a.opts.Dir)
	if err != nil {
		return err
	}
	a.cfg = cfg
	hc := a.opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: a.timeout}
	}
	api, err := newAPIClient(cfg, hc)
	if err != nil {
		return usageErr(err)
	}
	a.api = api
	return nil
}

// exactArgs is cobra.ExactArgs with the names of the arguments in its
// message.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			want := strings.Join(names, " ")
			if len(names) == 0 {
				return usageErrorf("%s takes no arguments", cmd.CommandPath())
			}
			return usageErrorf("%s needs %s (got %d argument%s)", cmd.CommandPath(), want, len(args), plural(len(args)))
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// usageError is a mistake in the command line or its input: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErr(err error) error { return &usageError{err} }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError ends the command with code after its message (when not empty)
// is printed: a notification that did not end DELIVERED, and the like.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func outcomeErrorf(format string, args ...any) error {
	return &exitError{code: ExitFailed, msg: fmt.Sprintf(format, args...)}
}

// report prints err on stderr the way its kind deserves (under --json, as
// one line of JSON) and returns the exit code.
func (a *cli) report(ctx context.Context, cmd *cobra.Command, err error) int {
	f := a.failure(ctx, cmd, err)
	var ne *notedError
	if errors.As(err, &ne) {
		f.Notes = append(f.Notes, ne.notes...)
	}
	if a.jsonOut {
		// One line, the last on stderr (after any progress or notes).
		raw, _ := json.Marshal(struct {
			Error failure `json:"error"`
		}{f})
		sayln(a.opts.Stderr, string(raw))
		return f.ExitCode
	}
	say(a.opts.Stderr, "%s", f.text)
	for _, n := range f.Notes {
		sayln(a.opts.Stderr, n)
	}
	return f.ExitCode
}

// failure is why a command failed: the text printed for it, and under
// --json this object on stderr (docs/DISPATCHCTL.md describes it).
type failure struct {
	// Kind is usage, problem, outcome, unreachable, interrupted or error.
	Kind     string `json:"kind"`
	ExitCode int    `json:"exitCode"`
	Message  string `json:"message"`
	// Problem is the API's problem answer, for kind problem.
	Problem *problemView `json:"problem,omitempty"`
	// Notes are the lines printed after the error: a hint, what a batch
	// had sent before it failed and how to resume.
	Notes []string `json:"notes,omitempty"`
	text  string
}

// problemView is a problem answer as --json prints it.
type problemView struct {
	Type      string           `json:"type,omitempty"`
	Title     string           `json:"title"`
	Status    int              `json:"status"`
	Detail    string           `json:"detail,omitempty"`
	Errors    []fieldErrorView `json:"errors,omitempty"`
	RequestID string           `json:"requestId,omitempty"`
}

type fieldErrorView struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (a *cli) failure(ctx context.Context, cmd *cobra.Command, err error) failure {
	var (
		ue *usageError
		ee *exitError
	)
	switch {
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ctx.Err())):
		return failure{Kind: "interrupted", ExitCode: ExitInterrupted, Message: "interrupted", text: "interrupted\n"}
	case errors.As(err, &ue) || !a.ran:
		path := "dispatchctl"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		hint := fmt.Sprintf("Run '%s --help' for usage.", path)
		return failure{Kind: "usage", ExitCode: ExitUsage, Message: err.Error(), Notes: []string{hint},
			text: "error: " + err.Error() + "\n"}
	case errors.As(err, &ee):
		f := failure{Kind: "outcome", ExitCode: ee.code, Message: ee.msg}
		if ee.msg != "" {
			f.text = "error: " + ee.msg + "\n"
		}
		return f
	}
	if p, ok := asProblem(err); ok {
		var b strings.Builder
		printProblem(&b, p)
		f := failure{Kind: "problem", ExitCode: ExitFailed, Message: fmt.Sprintf("%d %s", p.Status, p.Title), text: b.String(),
			Problem: &problemView{Type: p.Type, Title: p.Title, Status: p.Status, Detail: p.Detail, RequestID: p.RequestID}}
		for _, fe := range p.Errors {
			f.Problem.Errors = append(f.Problem.Errors, fieldErrorView(fe))
		}
		if p.status() == http.StatusUnauthorized && a.cfg.keySource == "" {
			f.Notes = append(f.Notes, "hint: no API key was given: --api-key, $DISPATCH_API_KEY or .data/dev-api-key (make run writes it)")
		}
		return f
	}
	if unreachable(err) {
		msg := fmt.Sprintf("could not reach the API at %s: %v", a.cfg.url, err)
		return failure{Kind: "unreachable", ExitCode: ExitUnreachable, Message: msg, text: "error: " + msg + "\n"}
	}
	return failure{Kind: "error", ExitCode: ExitFailed, Message: err.Error(), text: "error: " + err.Error() + "\n"}
}
