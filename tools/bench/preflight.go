package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
)

// startHint says what to do when the stack is not running.
const startHint = "start the stack first: run `make run` in another terminal and wait for \"Dispatch Engine is running\""

type preflightResult struct {
	temporal        client.Client
	temporalVersion string
	warnings        []string
}

// preflight checks that the stack runs and is idle enough to measure: the
// API and the worker answer /readyz, the sink and Temporal answer, the API
// takes our key; it finds out whether the batch endpoint exists and waits
// for earlier deliveries to stop arriving.
func preflight(ctx context.Context, o options, api *apiClient, snk *sinkClient) (*preflightResult, error) {
	res := &preflightResult{}
	if err := ready(ctx, o.API+"/readyz"); err != nil {
		return nil, fmt.Errorf("the API at %s is not ready (%v); %s", o.API, err, startHint)
	}
	if err := ready(ctx, o.Worker+"/readyz"); err != nil {
		return nil, fmt.Errorf("the worker (metrics at %s) is not ready (%v); %s", o.Worker, err, startHint)
	}
	if _, err := snk.stats(ctx); err != nil {
		return nil, fmt.Errorf("the sink at %s does not answer /_sink/stats (%v); %s (without WEBHOOK_SITE_URL, so deliveries go to the local sink)", o.Sink, err, startHint)
	}
	if cfg, err := snk.config(ctx); err == nil {
		for k, v := range cfg {
			if f, ok := v.(float64); ok && f != 0 && k != "failStatus" {
				res.warnings = append(res.warnings, fmt.Sprintf("the sink is configured to misbehave (%s=%v): deliveries will include retries", k, v))
			}
		}
	}

	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tc, err := client.DialContext(dialCtx, client.Options{
		HostPort:  o.Temporal,
		Namespace: o.Namespace,
		Logger:    quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("the Temporal server at %s does not answer (%v); %s", o.Temporal, err, startHint)
	}
	res.temporal = tc
	if info, err := tc.WorkflowService().GetSystemInfo(dialCtx, &workflowservice.GetSystemInfoRequest{}); err == nil {
		res.temporalVersion = info.GetServerVersion()
	}

	if err := api.probeBatch(ctx); err != nil {
		tc.Close()
		return nil, err
	}
	if names, err := api.routedElsewhere(ctx, o.Sink); err == nil && len(names) > 0 {
		tc.Close()
		return nil, fmt.Errorf("the stack routes channels to providers other than the sink (%v; make run uses deploy/providers.example.yaml), so not every delivery reaches the sink the bench counts: start it with `PROVIDERS_FILE= make run`, or a providers file of webhook providers at the sink", names)
	}
	if !api.hasBatch {
		res.warnings = append(res.warnings, "the API has no POST /v1/notifications/batch: end to end uses single POSTs and ingest measures no batches")
	}

	if o.Settle > 0 {
		if w, err := settle(ctx, snk, o.Settle); err != nil {
			tc.Close()
			return nil, err
		} else if w != "" {
			res.warnings = append(res.warnings, w)
		}
	}
	return res, nil
}

// ready GETs a /readyz URL and wants 200.
func ready(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}

// settle waits, up to limit, until no webhook has reached the sink for 3s:
// deliveries still arriving from earlier work (a previous run's ingest, say)
// would compete with the measurement. It returns a warning when the stack
// did not go quiet in time.
func settle(ctx context.Context, snk *sinkClient, limit time.Duration) (string, error) {
	const quiet = 3 * time.Second
	deadline := time.Now().Add(limit)
	last, err := snk.stats(ctx)
	if err != nil {
		return "", err
	}
	lastChange, told, progress := time.Now(), time.Time{}, last.Requests
	for time.Since(lastChange) < quiet {
		if time.Now().After(deadline) {
			return fmt.Sprintf("earlier deliveries were still reaching the sink after waiting %s: the figures include that load", limit), nil
		}
		if !told.IsZero() && time.Since(told) >= 10*time.Second {
			step("still arriving: %d webhooks in the last %.0fs", last.Requests-progress, time.Since(told).Seconds())
			told, progress = time.Now(), last.Requests
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		st, err := snk.stats(ctx)
		if err != nil {
			return "", err
		}
		if st.Requests != last.Requests {
			if told.IsZero() {
				step("earlier deliveries are still reaching the sink: waiting up to %s for them to stop (--settle)", limit)
				told, progress = time.Now(), st.Requests
			}
			last, lastChange = st, time.Now()
		}
	}
	return "", nil
}

// quietLogger keeps the Temporal SDK's info logs off the output.
func quietLogger() tlog.Logger {
	return tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}
