// Command migrate applies or reverts the database schema in migrations/.
//
//	migrate up              apply every pending migration (creates the database if missing)
//	migrate down [N]        revert N migrations (all when N is omitted)
//	migrate version         print the applied version
//
// It reads DATABASE_DSN like the other processes. Running two at once is
// safe: the migrator holds a Postgres advisory lock.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	cmd := "up"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "up":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := store.EnsureDatabase(ctx, cfg.DatabaseDSN); err != nil {
			return err
		}
		if err := store.MigrateUp(cfg.DatabaseDSN); err != nil {
			return err
		}
	case "down":
		steps := 0
		if len(args) > 1 {
			if steps, err = strconv.Atoi(args[1]); err != nil || steps <= 0 {
				return fmt.Errorf("down takes a positive number of steps, got %q", args[1])
			}
		}
		if err := store.MigrateDown(cfg.DatabaseDSN, steps); err != nil {
			return err
		}
	case "version":
	default:
		return fmt.Errorf("unknown command %q (want up, down [N] or version)", cmd)
	}
	version, dirty, err := store.MigrationVersion(cfg.DatabaseDSN)
	if err != nil {
		return err
	}
	latest, err := store.LatestMigration()
	if err != nil {
		return err
	}
	fmt.Printf("schema version %d of %d (dirty: %t)\n", version, latest, dirty)
	return nil
}
