// Package periodic runs the worker's background jobs (the reconciler, the
// dead-letter pruner, retention, resuming operations) at a fixed interval.
package periodic

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Run calls job every interval until ctx ends. A failure is logged as
// "<what> failed" and the job runs again at the next tick.
func Run(ctx context.Context, interval time.Duration, log *zap.Logger, what string, job func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := job(ctx); err != nil && ctx.Err() == nil {
			log.Warn(what+" failed; trying again next interval", zap.Error(err))
		}
	}
}
