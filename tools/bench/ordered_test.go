package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
)

func TestRoundRobinPostsEveryKeysNthBeforeAnyKeysNext(t *testing.T) {
	require.Equal(t, []slot{
		{0, 0}, {1, 0}, {2, 0},
		{0, 1}, {1, 1}, {2, 1},
	}, roundRobin(3, 2))
	require.Equal(t, []slot{{0, 0}, {0, 1}, {0, 2}}, roundRobin(1, 3), "one key: its notifications in turn")
	require.Empty(t, roundRobin(0, 5))
	require.Empty(t, roundRobin(5, 0))
}

func TestOrderedRequestsAreTheUnorderedSmsUnderKeys(t *testing.T) {
	reqs := orderedRequests("run1", 4, 3)
	require.Len(t, reqs, 4)
	var contents []string
	for k, key := range reqs {
		require.Len(t, key, 3)
		for _, r := range key {
			require.Equal(t, dispatch.ChannelSms, r.Channel)
			require.Equal(t, "+14155550123", r.Recipient)
			require.NotNil(t, r.OrderingKey)
			require.Equal(t, fmt.Sprintf("k-%d", k), *r.OrderingKey)
			contents = append(contents, r.Content)
		}
	}
	// Numbered in posting order: key 1's second is the 4 + 1-th posted.
	require.Equal(t, "bench run1 #5", reqs[1][1].Content)

	var plain []string
	for i := range 12 {
		r := smsFor("run1", i)
		require.Nil(t, r.OrderingKey)
		plain = append(plain, r.Content)
	}
	slices.Sort(contents)
	slices.Sort(plain)
	require.Equal(t, plain, contents, "the ordered burst holds the unordered reference's notifications")

	seen := map[dispatch.Priority]int{}
	for i := range 3 {
		seen[*smsFor("run1", i).Priority]++
	}
	require.Len(t, seen, 3, "priorities rotate as in the end-to-end section")
}

func TestCheckOrderComparesEachWithTheOneAcceptedBeforeIt(t *testing.T) {
	rec := func(first, last int) sinkRecord {
		return sinkRecord{Delivered: 1, FirstAt: at(first), LastAt: at(last)}
	}
	keys := func(ids ...[]string) [][]created {
		out := make([][]created, len(ids))
		for k, key := range ids {
			for _, id := range key {
				out[k] = append(out[k], created{ID: id})
			}
		}
		return out
	}
	name := func(k int) string { return fmt.Sprintf("k-%d", k) }

	for _, tc := range []struct {
		name    string
		byKey   [][]created
		records map[string]sinkRecord
		broken  map[string]bool
		want    OrderCheck
	}{
		{
			name:    "in order, one key",
			byKey:   keys([]string{"a", "b", "c"}),
			records: map[string]sinkRecord{"a": rec(0, 10), "b": rec(20, 20), "c": rec(30, 40)},
			want:    OrderCheck{Pairs: 2},
		},
		{
			name:    "the next may start the instant the last request for the one before it arrived",
			byKey:   keys([]string{"a", "b"}),
			records: map[string]sinkRecord{"a": rec(0, 10), "b": rec(10, 10)},
			want:    OrderCheck{Pairs: 1},
		},
		{
			name:    "a retry of the earlier after the later's first request is a violation",
			byKey:   keys([]string{"a", "b"}),
			records: map[string]sinkRecord{"a": rec(0, 50), "b": rec(20, 20)},
			want:    OrderCheck{Pairs: 1, Violations: 1, First: "k-0: #1 (b) reached the sink 30ms before the last request for the one accepted before it (a)"},
		},
		{
			name:    "a violation whose later one says orderingBroken still counts, and is told apart",
			byKey:   keys([]string{"a", "b", "c"}),
			records: map[string]sinkRecord{"a": rec(100, 100), "b": rec(50, 50), "c": rec(40, 40)},
			broken:  map[string]bool{"b": true},
			want: OrderCheck{Pairs: 2, Violations: 2, MarkedBroken: 1,
				First: "k-0: #1 (b) reached the sink 50ms before the last request for the one accepted before it (a)"},
		},
		{
			name:    "a lost one is skipped: its neighbours are compared",
			byKey:   keys([]string{"a", "b", "c"}),
			records: map[string]sinkRecord{"a": rec(0, 0), "c": rec(10, 10)},
			want:    OrderCheck{Pairs: 1, Lost: 1},
		},
		{
			name:    "keys do not order one another",
			byKey:   keys([]string{"a", "b"}, []string{"x", "y"}),
			records: map[string]sinkRecord{"a": rec(0, 0), "b": rec(30, 30), "x": rec(10, 10), "y": rec(20, 20)},
			want:    OrderCheck{Pairs: 2},
		},
		{
			name:    "the second key's violation is named by its key",
			byKey:   keys([]string{"a"}, []string{"x", "y"}),
			records: map[string]sinkRecord{"a": rec(0, 0), "x": rec(30, 30), "y": rec(20, 20)},
			want:    OrderCheck{Pairs: 1, Violations: 1, First: "k-1: #1 (y) reached the sink 10ms before the last request for the one accepted before it (x)"},
		},
		{
			name:  "nothing delivered",
			byKey: keys([]string{"a", "b"}),
			want:  OrderCheck{Lost: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, checkOrder(tc.byKey, tc.records, tc.broken, name))
		})
	}
}

func TestArrivalGapsAreBetweenConsecutiveDeliveredArrivals(t *testing.T) {
	accepted := []created{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}}
	records := map[string]sinkRecord{"a": {FirstAt: at(0)}, "b": {FirstAt: at(40)}, "d": {FirstAt: at(100)}}
	require.Equal(t, []time.Duration{40 * time.Millisecond, 60 * time.Millisecond}, arrivalGaps(accepted, records), "c never arrived: b's gap runs to d")
	require.Empty(t, arrivalGaps(accepted[:1], records))
	require.Empty(t, arrivalGaps(accepted, nil))
}

func TestOrderedVerdictFailsOnALossOrADisorderNotOnALowRatio(t *testing.T) {
	ok := OrderedResult{Timeout: "10m0s", Ratio: 0.2, Chain: &ChainResult{}}
	require.NoError(t, orderedVerdict(&ok), "a low ratio is a figure")

	lost := ok
	lost.Unordered.Undelivered, lost.Chain = 1, &ChainResult{Burst: Burst{Undelivered: 2}}
	require.EqualError(t, orderedVerdict(&lost), "3 accepted notification(s) did not reach the sink within --timeout 10m0s")

	disorder := ok
	disorder.Order.Violations, disorder.Chain = 1, nil
	require.EqualError(t, orderedVerdict(&disorder), "1 notification(s) reached the sink before the one accepted before them with the same key")
}

// fakeAPI answers POST /v1/notifications as the API does, refusing the
// contents in refuse, and records each key's contents in the order they
// came and each accepted id's content. It holds each answer for up to hold,
// so that a client which does not wait for it has the time to send the
// key's next: overlapping requests of one key are counted (and end the
// hold).
type fakeAPI struct {
	refuse   map[string]bool
	hold     time.Duration
	mu       sync.Mutex
	inFlight map[string]int
	overlap  chan struct{} // closed at the first overlap
	overlaps int
	byKey    map[string][]string
	content  map[string]string // by id
}

func newFakeAPI(hold time.Duration, refuse ...string) *fakeAPI {
	f := &fakeAPI{hold: hold, refuse: map[string]bool{}, inFlight: map[string]int{}, overlap: make(chan struct{}), byKey: map[string][]string{}, content: map[string]string{}}
	for _, c := range refuse {
		f.refuse[c] = true
	}
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if r.Method != http.MethodPost || r.URL.Path != "/v1/notifications" || json.NewDecoder(r.Body).Decode(&req) != nil || req.OrderingKey == nil {
		http.Error(w, "unexpected request", http.StatusBadRequest)
		return
	}
	key := *req.OrderingKey
	f.mu.Lock()
	f.inFlight[key]++
	if f.inFlight[key] > 1 {
		if f.overlaps == 0 {
			close(f.overlap)
		}
		f.overlaps++
	}
	f.byKey[key] = append(f.byKey[key], req.Content)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight[key]--
		f.mu.Unlock()
	}()
	select {
	case <-f.overlap:
	case <-time.After(f.hold):
	}

	w.Header().Set("Content-Type", "application/json")
	if f.refuse[req.Content] {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"title":"Service Unavailable","status":503}`))
		return
	}
	id := uuid.New()
	f.mu.Lock()
	f.content[id.String()] = req.Content
	f.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(dispatch.Notification{
		ID: id, Channel: req.Channel, CreatedAt: time.Now(),
		WorkflowID: "notification-" + id.String(), Content: req.Content, Recipient: req.Recipient, OrderingKey: req.OrderingKey,
	})
}

func TestSubmitOrderedPostsAKeysNextOnlyAfterItsPreviousAnswer(t *testing.T) {
	t.Parallel()
	// Fewer keys than clients: a client is always free to send a key's next
	// too early.
	reqs := orderedRequests("run1", 3, 6)
	refused := reqs[1][2].Content
	fake := newFakeAPI(20*time.Millisecond, refused)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	api, err := newAPIClient(srv.URL, "key", 8)
	require.NoError(t, err)

	byKey, errs, first, last := submitOrdered(context.Background(), api, reqs, 8)
	require.Len(t, errs, 1, "the refused one")
	require.Contains(t, errs[0].Error(), "503")
	require.False(t, last.Before(first))
	require.Zero(t, fake.overlaps, "a key's next POST waits for the answer to its previous")

	require.Len(t, byKey, 3)
	for k, key := range reqs {
		var sent []string
		for _, r := range key {
			sent = append(sent, r.Content)
		}
		require.Equal(t, sent, fake.byKey[fmt.Sprintf("k-%d", k)], "key %d posted in its order", k)

		var accepted []string
		for _, c := range byKey[k] {
			accepted = append(accepted, fake.content[c.ID])
		}
		want := slices.DeleteFunc(slices.Clone(sent), func(s string) bool { return s == refused })
		require.Equal(t, want, accepted, "key %d's accepted ones in acceptance order, the refused one left out", k)
	}
}

func TestPrintOrderedShowsBothRatesTheirRatioAndTheChecks(t *testing.T) {
	burst := func(perSec, secs float64) Burst {
		return Burst{Requested: 10000, Accepted: 10000, Delivered: 10000, DeliveredPerSec: perSec, DeliverySeconds: secs, LatencyMS: Latency{P50: 900, P99: 2100}}
	}
	r := &OrderedResult{
		Keys: 1000, PerKey: 10, Concurrency: 32, Timeout: "10m0s",
		Unordered: burst(150, 66.7), Ordered: burst(120, 83.3), Ratio: 0.8,
		Order:  OrderCheck{Pairs: 9000},
		Broken: Broken{Asked: 10100},
		Chain: &ChainResult{
			Burst:             Burst{Requested: 100, Accepted: 100, Delivered: 100, DeliverySeconds: 4.2},
			PerNotificationMS: 42, GapMS: Latency{P50: 40, P99: 61, Max: 80},
			Order: OrderCheck{Pairs: 99},
		},
	}
	var b strings.Builder
	printOrdered(&b, r)
	require.Equal(t, `
ORDERED  (1000 keys × 10 sms by single POSTs at 32 clients; ordered: key k-<i>, round-robin, a key's next POST after its previous answer)
  unordered delivered/s  150.0  (10000 accepted, 0 refused; 10000 delivered, 0 not, in 66.7s from first accept to last arrival; p50/p99 900 / 2100 ms)
  ordered delivered/s    120.0  (10000 accepted, 0 refused; 10000 delivered, 0 not, in 83.3s from first accept to last arrival; p50/p99 900 / 2100 ms)
  ordered ÷ unordered    0.80  (target ≥ 0.70)
  order violations       0 of 9000 pairs; chain 0 of 99  (a.lastAt > b.firstAt at the sink; 0 of them marked orderingBroken)
  orderingBroken         0  (GET of all 10100 sent with a key, 0 unread)
  lost                   unordered 0, ordered 0, chain 0  (not at the sink within --timeout 10m0s)
  chain (one key × 100)  4.20s first accept → last arrival, 42.0 ms per notification  (arrival gaps p50/p99 40 / 61 ms, max 80)

`, b.String())

	r.Chain, r.Order.Violations, r.Order.First = nil, 1, "k-7: #3 (x) reached the sink 5ms before the last request for the one accepted before it (w)"
	b.Reset()
	printOrdered(&b, r)
	require.Contains(t, b.String(), "  order violations       1 of 9000 pairs  (a.lastAt")
	require.NotContains(t, b.String(), "chain", "no chain run, no chain figures")
	require.Contains(t, b.String(), "\nNOTES\n  - first violation: k-7: #3 (x) reached the sink 5ms before the last request for the one accepted before it (w)\n")
}
