package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
)

// EndToEndResult is the end-to-end section's figures.
type EndToEndResult struct {
	Requested int    `json:"requested"`
	Accepted  int    `json:"accepted"`
	Rejected  int    `json:"rejected"`
	Via       string `json:"via"` // "batch" or "single"
	// AcceptedPerSec is accepted / (last API answer − first request), on the
	// bench's clock.
	AcceptedPerSec float64 `json:"acceptedPerSec"`
	Delivered      int     `json:"delivered"`
	Undelivered    int     `json:"undelivered"`
	// DeliveredPerSec is delivered / (last sink arrival − first createdAt):
	// the API's acceptance times against the sink's per-id firstAt.
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	DeliverySeconds float64 `json:"deliverySeconds"`
	// FirstDeliveryMS is the first sink arrival − the first createdAt.
	FirstDeliveryMS float64 `json:"firstDeliveryMs"`
	// LatencyMS is, per notification, the sink's firstAt − createdAt.
	LatencyMS Latency `json:"latencyMs"`
	// Timeline counts arrivals in each tenth of the delivery window (first
	// createdAt to last arrival): an even spread is a steady rate.
	Timeline       []int   `json:"timeline"`
	RatioToCeiling float64 `json:"ratioToCeiling"`
	// Retried counts our ids the sink saw more than once; Duplicates those
	// it answered 2xx more than once.
	Retried    int       `json:"retried"`
	Duplicates int       `json:"duplicates"`
	Sink       sinkStats `json:"sink"`
	// OpenAfterDelivery counts the delivered notifications whose workflow
	// was still open when the last delivery arrived; AllClosedAfterMS is how
	// much later the last of them closed (-1: not within the wait).
	OpenAfterDelivery int     `json:"openAfterDelivery"`
	AllClosedAfterMS  float64 `json:"allClosedAfterMs"`
	// History is the average shape of a sample of notification workflows.
	History HistoryShape `json:"history"`
	// Stuck counts, by API status, notifications that had not reached the
	// sink when the timeout struck.
	Stuck map[string]int `json:"stuck,omitempty"`

	warnings []string
}

// runEndToEnd sends o.N notifications through the API and waits for each
// to reach the sink and its workflow to close. procs is sampled just before
// the first request and once every workflow has closed.
func runEndToEnd(ctx context.Context, o options, api *apiClient, snk *sinkClient, tc client.Client, procs *processes) (EndToEndResult, procSample, procSample, error) {
	res := EndToEndResult{Requested: o.N}
	if err := snk.reset(ctx); err != nil {
		return res, nil, nil, fmt.Errorf("resetting the sink: %w", err)
	}
	run := uuid.NewString()[:8]
	reqs := make([]createRequest, o.N)
	for i := range reqs {
		reqs[i] = notificationFor(run, i)
	}

	before := procs.sample()
	var (
		accepted    []created
		errs        []error
		first, last time.Time
	)
	if api.hasBatch && !o.NoBatch {
		res.Via = "batch"
		accepted, errs, first, last = submitBatches(ctx, api, reqs, 1000)
	} else {
		res.Via = "single"
		accepted, errs, first, last = submitSingles(ctx, api, reqs, o.Concurrency)
	}
	res.Accepted, res.Rejected = len(accepted), o.N-len(accepted)
	if len(errs) > 0 {
		res.warnings = append(res.warnings, fmt.Sprintf("end to end: %d request(s) failed, first: %v", len(errs), errs[0]))
	}
	if len(accepted) == 0 {
		return res, nil, nil, fmt.Errorf("the API accepted none of %d notifications: %w", o.N, errors.Join(errs...))
	}
	res.AcceptedPerSec = round3(float64(len(accepted)) / last.Sub(first).Seconds())
	step("accepted %d in %.2fs; waiting for the sink (timeout %s)", len(accepted), last.Sub(first).Seconds(), o.Timeout)

	records, pending, err := awaitArrivals(ctx, snk, accepted, first.Add(o.Timeout))
	if err != nil {
		return res, nil, nil, err
	}
	// Each workflow closes one workflow task after its delivery: the cost
	// window runs until every workflow of the run has closed.
	wfIDs := workflowsByArrival(accepted, records)
	closeBy := time.Now().Add(closeWait)
	if end := first.Add(o.Timeout); end.Before(closeBy) {
		closeBy = end
	}
	closedAt := awaitClosed(ctx, tc, wfIDs, closeBy)
	after := procs.sample()

	summarize(&res, accepted, records, wfIDs, closedAt)
	if st, err := snk.stats(ctx); err == nil {
		res.Sink = st
		if st.UniqueIDs > res.Accepted {
			res.warnings = append(res.warnings, fmt.Sprintf(
				"the sink saw %d ids since its reset, the run sent %d: other deliveries reached it meanwhile", st.UniqueIDs, res.Accepted))
		}
	}
	if len(pending) > 0 {
		res.Stuck = stuckByStatus(ctx, api, pending)
		res.warnings = append(res.warnings, fmt.Sprintf("%d notification(s) had not reached the sink after %s (by API status: %s), e.g. %s",
			len(pending), o.Timeout, counts(res.Stuck), pending[0]))
	}
	res.History = historyShape(ctx, tc, accepted, records, o.HistorySample, historyWait)
	return res, before, after, nil
}

// summarize computes the delivery figures: the API's createdAt of each
// notification against the sink's firstAt of its id, and the workflows'
// close times against the last arrival.
func summarize(res *EndToEndResult, accepted []created, records map[string]sinkRecord, wfIDs []string, closedAt map[string]time.Time) {
	res.AllClosedAfterMS = -1
	var (
		firstAccept, firstArrival, lastArrival time.Time
		lat                                    []time.Duration
	)
	for _, c := range accepted {
		if firstAccept.IsZero() || c.CreatedAt.Before(firstAccept) {
			firstAccept = c.CreatedAt
		}
		rec, ok := records[c.ID]
		if !ok {
			res.Undelivered++
			continue
		}
		res.Delivered++
		if firstArrival.IsZero() || rec.FirstAt.Before(firstArrival) {
			firstArrival = rec.FirstAt
		}
		if rec.FirstAt.After(lastArrival) {
			lastArrival = rec.FirstAt
		}
		lat = append(lat, rec.FirstAt.Sub(c.CreatedAt))
		if rec.Requests > 1 {
			res.Retried++
		}
		if rec.Delivered > 1 {
			res.Duplicates++
		}
	}
	if res.Delivered == 0 {
		return
	}
	elapsed := lastArrival.Sub(firstAccept).Seconds()
	res.DeliverySeconds = round3(elapsed)
	res.DeliveredPerSec = round3(float64(res.Delivered) / elapsed)
	res.FirstDeliveryMS = round3(float64(firstArrival.Sub(firstAccept).Microseconds()) / 1000)
	res.LatencyMS = latencyOf(lat)
	res.Timeline = timeline(records, firstAccept, lastArrival, 10)

	var lastClose time.Time
	for _, id := range wfIDs {
		at, ok := closedAt[id]
		if !ok || at.After(lastArrival) {
			res.OpenAfterDelivery++
		}
		if at.After(lastClose) {
			lastClose = at
		}
	}
	if open := len(wfIDs) - len(closedAt); open > 0 {
		res.warnings = append(res.warnings, fmt.Sprintf("%d delivered notification(s) still had an open workflow %s after the last delivery; the cost leaves out their closing", open, closeWait))
	} else {
		res.AllClosedAfterMS = round3(float64(lastClose.Sub(lastArrival).Microseconds()) / 1000)
	}
}

// workflowsByArrival returns the workflow ids of the delivered
// notifications, in the order their deliveries reached the sink.
func workflowsByArrival(accepted []created, records map[string]sinkRecord) []string {
	delivered := slices.DeleteFunc(slices.Clone(accepted), func(c created) bool { _, ok := records[c.ID]; return !ok })
	slices.SortFunc(delivered, func(a, b created) int { return records[a.ID].FirstAt.Compare(records[b.ID].FirstAt) })
	ids := make([]string, len(delivered))
	for i, c := range delivered {
		ids[i] = workflowID(c)
	}
	return ids
}

const (
	// closeWait bounds the wait for the run's workflows to close after the
	// last delivery.
	closeWait = 2 * time.Minute
	// historyWait bounds the wait for sampled workflows to close.
	historyWait = 30 * time.Second
)

// submitBatches POSTs reqs in batches of up to size, one after the other.
func submitBatches(ctx context.Context, api *apiClient, reqs []createRequest, size int) (acc []created, errs []error, first, last time.Time) {
	first = time.Now()
	for chunk := range slices.Chunk(reqs, size) {
		got, _, err := api.createBatch(ctx, chunk)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		acc = append(acc, got...)
	}
	return acc, errs, first, time.Now()
}

// submitSingles POSTs reqs one by one at the given number of clients.
func submitSingles(ctx context.Context, api *apiClient, reqs []createRequest, clients int) (acc []created, errs []error, first, last time.Time) {
	var (
		mu   sync.Mutex
		next = make(chan createRequest)
		wg   sync.WaitGroup
	)
	first = time.Now()
	for range clients {
		wg.Go(func() {
			for r := range next {
				c, _, err := api.create(ctx, r)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acc = append(acc, c)
				}
				mu.Unlock()
			}
		})
	}
	for _, r := range reqs {
		next <- r
	}
	close(next)
	wg.Wait()
	return acc, errs, first, time.Now()
}

// awaitArrivals waits until every accepted id has a 2xx answer recorded by
// the sink, or until deadline. It polls the cheap /_sink/stats until the
// sink has delivered at least as many as we sent, then reads the pending
// ids one by one; ids still missing are read again each second, and once
// more at the deadline.
func awaitArrivals(ctx context.Context, snk *sinkClient, accepted []created, deadline time.Time) (map[string]sinkRecord, []string, error) {
	records := make(map[string]sinkRecord, len(accepted))
	pending := make([]string, len(accepted))
	for i, c := range accepted {
		pending[i] = c.ID
	}
	lastTold := time.Now()
	for {
		st, err := snk.stats(ctx)
		if err != nil {
			return nil, nil, err
		}
		enough, over := st.Delivered >= len(accepted), time.Now().After(deadline)
		if enough || over {
			found, err := readRecords(ctx, snk, pending)
			if err != nil {
				return nil, nil, err
			}
			maps.Copy(records, found)
			pending = slices.DeleteFunc(pending, func(id string) bool { _, ok := found[id]; return ok })
		}
		if len(pending) == 0 || over {
			return records, pending, nil
		}
		if time.Since(lastTold) >= 5*time.Second {
			if enough {
				step("sink: %d of ours confirmed, %d still missing", len(records), len(pending))
			} else {
				step("sink: %d of %d delivered", st.Delivered, len(accepted))
			}
			lastTold = time.Now()
		}
		wait := 250 * time.Millisecond
		if enough {
			wait = time.Second // some of ours are late; others' deliveries filled the count
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// readRecords reads the sink's record of each id (16 at a time) and returns
// those answered 2xx at least once.
func readRecords(ctx context.Context, snk *sinkClient, ids []string) (map[string]sinkRecord, error) {
	var (
		mu    sync.Mutex
		found = make(map[string]sinkRecord, len(ids))
		first error
		next  = make(chan string)
		wg    sync.WaitGroup
	)
	for range 16 {
		wg.Go(func() {
			for id := range next {
				rec, ok, err := snk.record(ctx, id)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if ok && rec.Delivered > 0 {
					found[id] = rec
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	return found, first
}

// stuckByStatus asks the API the status of up to 200 undelivered ids.
func stuckByStatus(ctx context.Context, api *apiClient, ids []string) map[string]int {
	by := map[string]int{}
	for _, id := range ids[:min(len(ids), 200)] {
		s, err := api.get(ctx, id)
		switch {
		case err != nil:
			by["unknown"]++
		default:
			by[s.Status]++
		}
	}
	if len(ids) > 200 {
		by["notAsked"] = len(ids) - 200
	}
	return by
}

// timeline counts the records' arrivals (firstAt) in each of n equal slices
// of [from, to].
func timeline(records map[string]sinkRecord, from, to time.Time, n int) []int {
	out := make([]int, n)
	span := to.Sub(from)
	for _, rec := range records {
		i := n - 1
		if span > 0 {
			i = min(int(float64(rec.FirstAt.Sub(from))/float64(span)*float64(n)), n-1)
		}
		out[max(i, 0)]++
	}
	return out
}
