package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
)

// The ordered mode (--ordered) measures ordering keys: what delivering a
// key's notifications one after the other costs against the same burst
// without keys, and whether they reach the provider in order. It runs three
// parts one after the other, each on a reset sink, each waiting for its
// workflows to close before the next starts (so no part pays for the one
// before):
//
//  1. Unordered: --ordered-keys × --ordered-per-key sms by single POSTs at
//     --concurrency clients, without a key: the reference rate.
//  2. Ordered: the same notifications, each with orderingKey k-<i>, posted
//     round-robin (every key's n-th before any key's n+1-th) at the same
//     clients, a key's next POST only after the answer for its previous
//     one, so the API accepts each key's in the order the bench sent them.
//  3. Chain: one key's --ordered-chain notifications back to back: a key's
//     cadence, which should be a provider round trip plus the hand-over to
//     the next, not a timer's tick.
//
// Delivered/s is the end-to-end section's figure (summarize): delivered /
// (last sink arrival − first acceptance). Order is read from the sink's
// records: of two consecutive delivered notifications a, b of a key, every
// request for a must have reached the sink no later than the first for b
// (a.lastAt ≤ b.firstAt). Every ordered and chain notification is read
// back once (GET) for orderingBroken.

// orderedOptions are the ordered mode's flags (--ordered itself is
// options.Ordered).
type orderedOptions struct {
	Keys   int
	PerKey int
	Chain  int
}

// orderedFlags registers the ordered mode's flags.
func orderedFlags(s *orderedOptions) {
	flag.IntVar(&s.Keys, "ordered-keys", 1000, "--ordered: ordering keys of the ordered burst")
	flag.IntVar(&s.PerKey, "ordered-per-key", 10, "--ordered: notifications per key of the ordered burst (the unordered reference sends keys × per-key)")
	flag.IntVar(&s.Chain, "ordered-chain", 100, "--ordered: notifications of the one-key chain, posted back to back (0: leave the chain out)")
}

// orderedHelp is --ordered's help.
const orderedHelp = "run only the ordered section against PROVIDERS_FILE= make run: --ordered-keys × --ordered-per-key sms by single POSTs at --concurrency clients, " +
	"first without a key (the reference delivered/s), then with orderingKey k-<i>, round-robin over the keys, a key's next POST after its previous answer; " +
	"then one key's --ordered-chain back to back. Prints both rates and their ratio, order violations read from the sink, orderingBroken (GET of every ordered one) " +
	"and the chain's time per notification; fails if a notification is lost or a key's arrive out of order"

// orderedChainKey is the chain's ordering key.
const orderedChainKey = "chain"

// OrderedResult is the ordered mode's figures: the table and the
// ORDERED_JSON line.
type OrderedResult struct {
	Machine     Machine `json:"machine"`
	Keys        int     `json:"keys"`
	PerKey      int     `json:"perKey"`
	Concurrency int     `json:"concurrency"`
	Timeout     string  `json:"timeout"`
	Unordered   Burst   `json:"unordered"`
	Ordered     Burst   `json:"ordered"`
	// Ratio is ordered ÷ unordered delivered/s (the target: at least 0.70).
	Ratio float64    `json:"ratio"`
	Order OrderCheck `json:"order"`
	// Broken counts the ordered and chain notifications whose GET says
	// orderingBroken; every one is read (Asked), Unread of them failed.
	Broken Broken       `json:"broken"`
	Chain  *ChainResult `json:"chain,omitempty"`

	Warnings []string `json:"warnings,omitempty"`
}

// Burst is one part's delivery figures, as the end-to-end section measures
// them.
type Burst struct {
	Requested int `json:"requested"`
	Accepted  int `json:"accepted"`
	Rejected  int `json:"rejected"`
	// AcceptedPerSec is accepted / (last API answer − first request).
	AcceptedPerSec float64 `json:"acceptedPerSec"`
	Delivered      int     `json:"delivered"`
	// Undelivered counts the accepted ones not at the sink within --timeout
	// of the first request; Stuck says their API status.
	Undelivered int            `json:"undelivered"`
	Stuck       map[string]int `json:"stuck,omitempty"`
	// DeliveredPerSec is delivered / (last sink arrival − first createdAt).
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	DeliverySeconds float64 `json:"deliverySeconds"`
	// LatencyMS is, per notification, the sink's firstAt − createdAt.
	LatencyMS  Latency `json:"latencyMs"`
	Retried    int     `json:"retried"`
	Duplicates int     `json:"duplicates"`
}

// OrderCheck is what the sink's records say of the order within keys.
type OrderCheck struct {
	// Pairs counts the consecutive delivered pairs of a key compared (a
	// lost notification is skipped: its neighbours are compared).
	Pairs int `json:"pairs"`
	// Violations counts the pairs whose later one reached the sink before
	// the earlier one's last request; MarkedBroken those of them whose later
	// one says orderingBroken (released by its maxHold, as designed, but
	// out of order all the same).
	Violations   int `json:"violations"`
	MarkedBroken int `json:"markedBroken"`
	// Lost counts the accepted ones that never reached the sink.
	Lost int `json:"lost"`
	// First describes the first violation found, for the notes.
	First string `json:"first,omitempty"`
}

// Broken is the GETs for orderingBroken.
type Broken struct {
	Asked  int `json:"asked"`
	Unread int `json:"unread"`
	Count  int `json:"count"`
}

// ChainResult is the one-key chain's figures.
type ChainResult struct {
	Burst Burst `json:"burst"`
	// PerNotificationMS is the burst's first acceptance → last arrival over
	// the notifications delivered.
	PerNotificationMS float64 `json:"perNotificationMs"`
	// GapMS is the time between consecutive arrivals (firstAt to firstAt).
	GapMS Latency    `json:"gapMs"`
	Order OrderCheck `json:"order"`
}

// runOrdered is the --ordered mode: the three parts, the table, the JSON
// line, and an error when a notification was lost or out of order.
func runOrdered(ctx context.Context, o options, api *apiClient, snk *sinkClient, tc client.Client, res *Result) error {
	oo := o.Order
	if oo.Keys < 1 || oo.PerKey < 1 || oo.Chain < 0 {
		return errors.New("--ordered-keys and --ordered-per-key must be at least 1, --ordered-chain not negative")
	}
	n := oo.Keys * oo.PerKey
	r := &OrderedResult{Machine: res.Machine, Keys: oo.Keys, PerKey: oo.PerKey, Concurrency: o.Concurrency, Timeout: o.Timeout.String(), Warnings: res.Warnings}
	run := uuid.NewString()[:8]

	step("ordered, unordered reference: %d sms by single POSTs at %d clients, no key", n, o.Concurrency)
	plain := make([]createRequest, n)
	for i := range plain {
		plain[i] = smsFor(run, i)
	}
	b, _, notes, err := burst(ctx, o, api, snk, tc, "unordered", n, func() ([]created, []error, time.Time, time.Time) {
		return submitSingles(ctx, api, plain, o.Concurrency)
	})
	if err != nil {
		return fmt.Errorf("ordered, unordered reference: %w", err)
	}
	r.Unordered, r.Warnings = b, append(r.Warnings, notes...)

	step("ordered: %d keys × %d sms, round-robin at %d clients, a key's next POST after its previous answer", oo.Keys, oo.PerKey, o.Concurrency)
	keyed := orderedRequests(uuid.NewString()[:8], oo.Keys, oo.PerKey)
	var byKey [][]created
	b, records, notes, err := burst(ctx, o, api, snk, tc, "ordered", n, func() ([]created, []error, time.Time, time.Time) {
		var (
			errs        []error
			first, last time.Time
		)
		byKey, errs, first, last = submitOrdered(ctx, api, keyed, o.Concurrency)
		return slices.Concat(byKey...), errs, first, last
	})
	if err != nil {
		return fmt.Errorf("ordered: %w", err)
	}
	r.Ordered, r.Warnings = b, append(r.Warnings, notes...)
	if r.Unordered.DeliveredPerSec > 0 {
		r.Ratio = round3(r.Ordered.DeliveredPerSec / r.Unordered.DeliveredPerSec)
	}

	var (
		chainByKey   [][]created
		chainRecords map[string]sinkRecord
	)
	if oo.Chain > 0 {
		step("ordered chain: one key's %d sms back to back", oo.Chain)
		r.Chain, chainByKey, chainRecords, notes, err = runChain(ctx, o, api, snk, tc, oo.Chain)
		if err != nil {
			return fmt.Errorf("ordered chain: %w", err)
		}
		r.Warnings = append(r.Warnings, notes...)
	}

	var ids []string
	for _, key := range slices.Concat(byKey, chainByKey) {
		for _, c := range key {
			ids = append(ids, c.ID)
		}
	}
	step("ordered: reading orderingBroken of %d notifications", len(ids))
	broken, unread := brokenOf(ctx, api, ids)
	r.Broken = Broken{Asked: len(ids), Unread: unread, Count: len(broken)}
	if unread > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d GET(s) for orderingBroken failed: the broken count leaves them out", unread))
	}
	r.Order = checkOrder(byKey, records, broken, keyName)
	if r.Chain != nil {
		r.Chain.Order = checkOrder(chainByKey, chainRecords, broken, func(int) string { return orderedChainKey })
	}

	printOrdered(os.Stdout, r)
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Printf("ORDERED_JSON %s\n", line)
	return orderedVerdict(r)
}

// runChain posts n notifications of one key back to back and measures
// them: the chain's figures (its order checked later, with the broken
// ones), its notifications, the sink's records and notes.
func runChain(ctx context.Context, o options, api *apiClient, snk *sinkClient, tc client.Client, n int) (*ChainResult, [][]created, map[string]sinkRecord, []string, error) {
	chain := make([]createRequest, n)
	run := uuid.NewString()[:8]
	for i := range chain {
		chain[i] = withKey(smsFor(run, i), orderedChainKey)
	}
	var byKey [][]created
	b, records, notes, err := burst(ctx, o, api, snk, tc, "chain", n, func() ([]created, []error, time.Time, time.Time) {
		var (
			errs        []error
			first, last time.Time
		)
		byKey, errs, first, last = submitOrdered(ctx, api, [][]createRequest{chain}, 1)
		return slices.Concat(byKey...), errs, first, last
	})
	if err != nil {
		return nil, nil, nil, notes, err
	}
	c := &ChainResult{Burst: b, GapMS: latencyOf(arrivalGaps(slices.Concat(byKey...), records))}
	if b.Delivered > 0 {
		c.PerNotificationMS = round3(b.DeliverySeconds * 1000 / float64(b.Delivered))
	}
	return c, byKey, records, notes, nil
}

// smsFor is the i-th sms of a run: the end-to-end section's sms (its
// recipient and content), priorities rotating as they do there.
func smsFor(run string, i int) createRequest {
	req := notificationFor(run, 3*i) // every third of notificationFor's is an sms; its priority rotates with i
	req.Content = fmt.Sprintf("bench %s #%d", run, i)
	return req
}

// withKey is req with an ordering key.
func withKey(req createRequest, key string) createRequest {
	req.OrderingKey = &key
	return req
}

// orderedRequests returns the ordered burst: [k][n] is key k-<k>'s n-th,
// numbered (content and priority) in the order roundRobin posts them, so
// the burst holds the same notifications as the unordered reference's.
func orderedRequests(run string, keys, perKey int) [][]createRequest {
	reqs := make([][]createRequest, keys)
	for k := range reqs {
		reqs[k] = make([]createRequest, perKey)
	}
	for i, s := range roundRobin(keys, perKey) {
		reqs[s.Key][s.N] = withKey(smsFor(run, i), keyName(s.Key))
	}
	return reqs
}

// keyName is the ordering key of the ordered burst's k-th key.
func keyName(k int) string { return fmt.Sprintf("k-%d", k) }

// slot is the n-th notification of key Key.
type slot struct{ Key, N int }

// roundRobin returns the order the ordered burst is posted in: the first
// notification of every key, then the second of every key, and so on.
func roundRobin(keys, perKey int) []slot {
	out := make([]slot, 0, keys*perKey)
	for n := range perKey {
		for k := range keys {
			out = append(out, slot{Key: k, N: n})
		}
	}
	return out
}

// submitOrdered POSTs reqs[k][n] one by one at the given number of clients,
// in roundRobin order; a key's n-th is handed to a client only once the
// answer for its n-1-th came back, so the API accepts each key's in the
// order of reqs[k] and keys proceed in parallel. byKey[k] is key k's
// accepted ones in acceptance order (a refused one is left out; the next
// follows the one before it). reqs' keys must be of equal length.
func submitOrdered(ctx context.Context, api *apiClient, reqs [][]createRequest, clients int) (byKey [][]created, errs []error, first, last time.Time) {
	perKey := 0
	if len(reqs) > 0 {
		perKey = len(reqs[0])
	}
	answered := make([][]chan struct{}, len(reqs))
	for k := range answered {
		answered[k] = make([]chan struct{}, perKey)
		for n := range answered[k] {
			answered[k][n] = make(chan struct{})
		}
	}
	byKey = make([][]created, len(reqs))
	var (
		mu   sync.Mutex
		next = make(chan slot)
		wg   sync.WaitGroup
	)
	first = time.Now()
	for range clients {
		wg.Go(func() {
			for s := range next {
				c, _, err := api.create(ctx, reqs[s.Key][s.N])
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					byKey[s.Key] = append(byKey[s.Key], c)
				}
				mu.Unlock()
				close(answered[s.Key][s.N])
			}
		})
	}
	for _, s := range roundRobin(len(reqs), perKey) {
		if s.N > 0 {
			<-answered[s.Key][s.N-1] // every POST is answered, or fails, within the client's timeout
		}
		if ctx.Err() != nil {
			break
		}
		next <- s
	}
	close(next)
	wg.Wait()
	return byKey, errs, first, time.Now()
}

// burst runs one part on a reset sink: submit, then wait for every accepted
// notification at the sink (until --timeout after the first request) and
// for their workflows to close, and measure as the end-to-end section does.
// It returns the figures, the sink's records and notes for the table.
func burst(ctx context.Context, o options, api *apiClient, snk *sinkClient, tc client.Client, name string, requested int, submit func() ([]created, []error, time.Time, time.Time)) (Burst, map[string]sinkRecord, []string, error) {
	b := Burst{Requested: requested}
	var notes []string
	if err := snk.reset(ctx); err != nil {
		return b, nil, nil, fmt.Errorf("resetting the sink: %w", err)
	}
	accepted, errs, first, last := submit()
	b.Accepted, b.Rejected = len(accepted), requested-len(accepted)
	if len(errs) > 0 {
		notes = append(notes, fmt.Sprintf("%s: %d request(s) failed, first: %v", name, len(errs), errs[0]))
	}
	if len(accepted) == 0 {
		return b, nil, notes, fmt.Errorf("the API accepted none of %d notifications: %w", requested, errors.Join(errs...))
	}
	b.AcceptedPerSec = round3(float64(len(accepted)) / last.Sub(first).Seconds())
	step("%s: accepted %d in %.2fs; waiting for the sink (timeout %s)", name, len(accepted), last.Sub(first).Seconds(), o.Timeout)

	records, pending, err := awaitArrivals(ctx, snk, accepted, first.Add(o.Timeout))
	if err != nil {
		return b, nil, notes, err
	}
	wfIDs := workflowsByArrival(accepted, records)
	closeBy := time.Now().Add(closeWait)
	if end := first.Add(o.Timeout); end.Before(closeBy) {
		closeBy = end
	}
	closedAt := awaitClosed(ctx, tc, wfIDs, closeBy)
	if open := len(wfIDs) - len(closedAt); open > 0 {
		notes = append(notes, fmt.Sprintf("%s: %d delivered notification(s) still had an open workflow after the wait; the next part ran beside them", name, open))
	}

	var e EndToEndResult
	summarize(&e, accepted, records, wfIDs, closedAt)
	b.Delivered, b.Undelivered = e.Delivered, e.Undelivered
	b.DeliveredPerSec, b.DeliverySeconds = e.DeliveredPerSec, e.DeliverySeconds
	b.LatencyMS, b.Retried, b.Duplicates = e.LatencyMS, e.Retried, e.Duplicates
	if st, err := snk.stats(ctx); err == nil && st.UniqueIDs > b.Accepted {
		notes = append(notes, fmt.Sprintf("%s: the sink saw %d ids since its reset, the part sent %d: other deliveries reached it meanwhile", name, st.UniqueIDs, b.Accepted))
	}
	if len(pending) > 0 {
		b.Stuck = stuckByStatus(ctx, api, pending)
		notes = append(notes, fmt.Sprintf("%s: %d notification(s) had not reached the sink after %s (by API status: %s), e.g. %s",
			name, len(pending), o.Timeout, counts(b.Stuck), pending[0]))
	}
	return b, records, notes, nil
}

// brokenOf GETs every id (16 at a time) and returns those marked
// orderingBroken, and how many GETs failed.
func brokenOf(ctx context.Context, api *apiClient, ids []string) (broken map[string]bool, unread int) {
	var (
		mu   sync.Mutex
		next = make(chan string)
		wg   sync.WaitGroup
	)
	broken = map[string]bool{}
	for range 16 {
		wg.Go(func() {
			for id := range next {
				s, err := api.get(ctx, id)
				mu.Lock()
				switch {
				case err != nil:
					unread++
				case s.OrderingBroken:
					broken[id] = true
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
	return broken, unread
}

// checkOrder compares, key by key, each delivered notification with the
// delivered one accepted before it: every request for the earlier must have
// reached the sink no later than the first request for the later
// (earlier.lastAt ≤ later.firstAt). byKey[k] is key k's notifications in
// acceptance order, name(k) its key; records are the sink's; broken the ids
// marked orderingBroken.
func checkOrder(byKey [][]created, records map[string]sinkRecord, broken map[string]bool, name func(k int) string) OrderCheck {
	var oc OrderCheck
	for k, key := range byKey {
		var (
			prev    sinkRecord
			prevID  string
			hasPrev bool
		)
		for n, c := range key {
			rec, ok := records[c.ID]
			if !ok {
				oc.Lost++
				continue
			}
			if hasPrev {
				oc.Pairs++
				if rec.FirstAt.Before(prev.LastAt) {
					oc.Violations++
					if broken[c.ID] {
						oc.MarkedBroken++
					}
					if oc.First == "" {
						oc.First = fmt.Sprintf("%s: #%d (%s) reached the sink %s before the last request for the one accepted before it (%s)",
							name(k), n, c.ID, prev.LastAt.Sub(rec.FirstAt), prevID)
					}
				}
			}
			prev, prevID, hasPrev = rec, c.ID, true
		}
	}
	return oc
}

// arrivalGaps returns the time between the sink's first arrivals of
// consecutive delivered notifications of one key (in acceptance order).
func arrivalGaps(accepted []created, records map[string]sinkRecord) []time.Duration {
	var (
		gaps []time.Duration
		prev time.Time
	)
	for _, c := range accepted {
		rec, ok := records[c.ID]
		if !ok {
			continue
		}
		if !prev.IsZero() {
			gaps = append(gaps, rec.FirstAt.Sub(prev))
		}
		prev = rec.FirstAt
	}
	return gaps
}

// orderedVerdict fails the run when a notification was lost or a key's
// arrived out of order; a low ratio is a figure, not a failure.
func orderedVerdict(r *OrderedResult) error {
	var errs []error
	lost := r.Unordered.Undelivered + r.Ordered.Undelivered
	violations := r.Order.Violations
	if c := r.Chain; c != nil {
		lost += c.Burst.Undelivered
		violations += c.Order.Violations
	}
	if lost > 0 {
		errs = append(errs, fmt.Errorf("%d accepted notification(s) did not reach the sink within --timeout %s", lost, r.Timeout))
	}
	if violations > 0 {
		errs = append(errs, fmt.Errorf("%d notification(s) reached the sink before the one accepted before them with the same key", violations))
	}
	return errors.Join(errs...)
}

// printOrdered prints the ordered mode's table and notes.
func printOrdered(out io.Writer, r *OrderedResult) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %s\t"+format+"\n", append([]any{label}, args...)...)
	}
	rate := func(b Burst) string {
		return fmt.Sprintf("%.1f  (%d accepted, %d refused; %d delivered, %d not, in %.1fs from first accept to last arrival; p50/p99 %.0f / %.0f ms)",
			b.DeliveredPerSec, b.Accepted, b.Rejected, b.Delivered, b.Undelivered, b.DeliverySeconds, b.LatencyMS.P50, b.LatencyMS.P99)
	}
	fmt.Fprintf(w, "\nORDERED  (%d keys × %d sms by single POSTs at %d clients; ordered: key k-<i>, round-robin, a key's next POST after its previous answer)\n",
		r.Keys, r.PerKey, r.Concurrency)
	row("unordered delivered/s", "%s", rate(r.Unordered))
	row("ordered delivered/s", "%s", rate(r.Ordered))
	row("ordered ÷ unordered", "%.2f  (target ≥ 0.70)", r.Ratio)
	violations := fmt.Sprintf("%d of %d pairs", r.Order.Violations, r.Order.Pairs)
	if c := r.Chain; c != nil {
		violations += fmt.Sprintf("; chain %d of %d", c.Order.Violations, c.Order.Pairs)
	}
	row("order violations", "%s  (a.lastAt > b.firstAt at the sink; %d of them marked orderingBroken)", violations, r.Order.MarkedBroken+chainMarked(r.Chain))
	row("orderingBroken", "%d  (GET of all %d sent with a key, %d unread)", r.Broken.Count, r.Broken.Asked, r.Broken.Unread)
	lost := fmt.Sprintf("unordered %d, ordered %d", r.Unordered.Undelivered, r.Ordered.Undelivered)
	if c := r.Chain; c != nil {
		lost += fmt.Sprintf(", chain %d", c.Burst.Undelivered)
	}
	row("lost", "%s  (not at the sink within --timeout %s)", lost, r.Timeout)
	if c := r.Chain; c != nil {
		g := c.GapMS
		row(fmt.Sprintf("chain (one key × %d)", c.Burst.Requested), "%.2fs first accept → last arrival, %.1f ms per notification  (arrival gaps p50/p99 %.0f / %.0f ms, max %.0f)",
			c.Burst.DeliverySeconds, c.PerNotificationMS, g.P50, g.P99, g.Max)
	}
	notes := r.Warnings
	if r.Order.First != "" {
		notes = append(notes, "first violation: "+r.Order.First)
	}
	if c := r.Chain; c != nil && c.Order.First != "" {
		notes = append(notes, "first chain violation: "+c.Order.First)
	}
	printNotes(w, notes)
}

func chainMarked(c *ChainResult) int {
	if c == nil {
		return 0
	}
	return c.Order.MarkedBroken
}
