// Command dispatchctl is the operator CLI of the dispatch engine: it sends,
// lists, watches, cancels and retries notifications, sends batches from
// files and runs bulk operations, all over the public API (openapi.yaml)
// through the github.com/dispatch-engine/dispatch-engine/client package; its keys and tenants commands
// make API keys and tenants in PostgreSQL. `dispatchctl --help` lists
// the commands and the exit codes; docs/DISPATCHCTL.md describes them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, app.Options{
		Args:   os.Args[1:],
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Env:    os.Environ(),
	})
	stop()
	os.Exit(code)
}
