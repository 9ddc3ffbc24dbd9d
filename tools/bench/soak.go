package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/periodic"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
)

// SoakResult is what `make soak` measured: a row per interval under a
// steady load, the trends over the rows, and whether every accepted
// notification arrived. It is printed as rows while the soak runs, a
// summary, and one JSON line (prefixed "SOAK_JSON ").
type SoakResult struct {
	Machine         Machine `json:"machine"`
	DurationSeconds float64 `json:"durationSeconds"`
	IntervalSeconds float64 `json:"intervalSeconds"`
	// CapacityPerSec is the probe's delivered/s (0 when --soak-rate set
	// the rate); RatePerSec is the steady load planned.
	CapacityPerSec float64 `json:"capacityPerSec"`
	Load           float64 `json:"load,omitempty"`
	RatePerSec     float64 `json:"ratePerSec"`
	// MaxSlipMS is the most a send started after its planned time.
	MaxSlipMS float64   `json:"maxSlipMs"`
	Rows      []SoakRow `json:"rows"`
	// Slopes are least-squares slopes per hour over the rows after the
	// first (a warm-up): "rss.<process>" in MiB/h, "goroutines.<process>",
	// "p99" in ms/h, "outbox" and "queue" in messages/h.
	Slopes   map[string]float64 `json:"slopes"`
	P99Drift *SoakDrift         `json:"p99Drift,omitempty"`
	Totals   SoakTotals         `json:"totals"`
	Warnings []string           `json:"warnings,omitempty"`
}

// SoakRow is one interval of the soak.
type SoakRow struct {
	AtSeconds float64 `json:"atSeconds"` // the row's end, since the load started
	Seconds   float64 `json:"seconds"`   // its length
	// Sent counts the sends planned in the row, Accepted and Refused the
	// answers that came in it, Delivered our notifications whose first
	// arrival at the sink fell in it.
	Sent            int     `json:"sent"`
	Accepted        int     `json:"accepted"`
	Refused         int     `json:"refused"`
	Delivered       int     `json:"delivered"`
	SentPerSec      float64 `json:"sentPerSec"`
	AcceptedPerSec  float64 `json:"acceptedPerSec"`
	DeliveredPerSec float64 `json:"deliveredPerSec"`
	// P50MS and P99MS are accepted → delivered of the row's deliveries.
	P50MS float64 `json:"p50Ms"`
	P99MS float64 `json:"p99Ms"`
	// RSSMB is each found process's VmRSS at the row's end (postgres: the
	// postmaster's and its children's summed); Goroutines the go_goroutines
	// (Temporal: num_goroutines) gauges; PIDs the processes read.
	RSSMB      map[string]float64 `json:"rssMb"`
	Goroutines map[string]float64 `json:"goroutines"`
	PIDs       map[string]int     `json:"pids"`
	// Outbox is the outbox's rows, Queue the ready messages of the channel
	// queues (nil: not read).
	Outbox *int `json:"outbox"`
	Queue  *int `json:"queue"`

	lat []time.Duration
}

// SoakDrift compares the p99 of the first and the last window of rows
// after the warm-up.
type SoakDrift struct {
	WindowSeconds float64 `json:"windowSeconds"`
	FirstMS       float64 `json:"firstMs"`
	LastMS        float64 `json:"lastMs"`
	Ratio         float64 `json:"ratio"`
	Drifted       bool    `json:"drifted"`
}

// SoakTotals sums the whole soak.
type SoakTotals struct {
	Sent     int `json:"sent"`
	Accepted int `json:"accepted"`
	// Refused counts the sends not accepted, by status ("0": no answer).
	Refused   map[string]int `json:"refused,omitempty"`
	Delivered int            `json:"delivered"`
	// AfterRows counts the deliveries read after the last row: those that
	// arrived once the load had stopped, mostly.
	AfterRows int `json:"afterRows"`
	// Lost counts the accepted notifications not at the sink GraceSeconds
	// after the load stopped; LostByStatus says their API status.
	Lost         int            `json:"lost"`
	LostByStatus map[string]int `json:"lostByStatus,omitempty"`
	GraceSeconds float64        `json:"graceSeconds"`
	// Retried counts our ids the sink saw more than once (redeliveries),
	// Duplicates those it answered 2xx more than once.
	Retried    int     `json:"retried"`
	Duplicates int     `json:"duplicates"`
	LatencyMS  Latency `json:"latencyMs"`
}

// The processes of a row, in the table's order.
var (
	soakProcs      = []string{"api", "worker", "temporal", "postgres", "rabbitmq", "redis"}
	soakGoroutines = []string{"api", "worker", "temporal"}
)

const (
	// sweepEvery is how often the soak reads its pending ids at the sink,
	// so each row counts the arrivals of its own interval.
	sweepEvery = 2 * time.Second
	// sweepMax, plus twice what the sink delivered since the last sweep,
	// bounds the ids read per sweep: at the soak's rate all pending ids
	// are read; a backlog is read oldest first, a part at a time, so the
	// sweeps never flood the sink.
	sweepMax = 2000
	// A p99 drifted when the last window's is driftRatio times the first's
	// and driftFloorMS more: a few ms on a 20 ms p99 are noise.
	driftWindow  = 5 * time.Minute
	driftRatio   = 1.5
	driftFloorMS = 20
)

// runSoak is `make soak`: a capacity probe (unless --soak-rate), then single
// POSTs at a steady rate for --soak, a row per --soak-interval, then a wait
// for the stragglers and the summary. It fails when an accepted
// notification did not reach the sink within --soak-grace.
func runSoak(ctx context.Context, o options, api *apiClient, snk *sinkClient, res *Result) error {
	if o.SoakInterval <= 0 || o.SoakLoad <= 0 || o.SoakProbeN < 1 {
		return errors.New("--soak-interval and --soak-load must be positive, --soak-probe-n at least 1")
	}
	cfg, err := productConfig()
	if err != nil {
		return err
	}
	s := &SoakResult{Machine: res.Machine, DurationSeconds: o.Soak.Seconds(), IntervalSeconds: o.SoakInterval.Seconds(), RatePerSec: o.SoakRate}
	title := fmt.Sprintf("%.1f/s from --soak-rate", o.SoakRate)
	if o.SoakRate <= 0 {
		capacity, warns, err := probeCapacity(ctx, o, api, snk)
		if err != nil {
			return fmt.Errorf("soak: probing the capacity: %w", err)
		}
		res.Warnings = append(res.Warnings, warns...)
		s.CapacityPerSec, s.Load = capacity, o.SoakLoad
		s.RatePerSec = round3(capacity * o.SoakLoad)
		title = fmt.Sprintf("%.0f%% of the probed capacity %.1f/s = %.1f/s", o.SoakLoad*100, capacity, s.RatePerSec)
	}

	g := &soakGauges{o: o, cfg: cfg, http: &http.Client{Timeout: 5 * time.Second}, warned: map[string]bool{}}
	defer g.close()
	g.temporal = g.temporalMetricsURL(ctx)
	if g.temporal == "" {
		g.warn("temporal-metrics", errors.New("no Temporal metrics endpoint found (make run's server on PostgreSQL serves none; the dev server's port is random unless --metrics-port; pass --temporal-metrics): its goroutines show as -"))
	}

	if err := snk.reset(ctx); err != nil {
		return fmt.Errorf("soak: resetting the sink: %w", err)
	}
	step("soak: %s for %s; a row every %s", title, o.Soak, o.SoakInterval)
	fmt.Printf("\nSOAK  (%s, single POSTs, open loop, for %s; a row every %s)\n", title, o.Soak, o.SoakInterval)
	printSoakHeader(os.Stdout)

	if o.SoakVacuum > 0 {
		vctx, stopVacuum := context.WithCancel(ctx)
		defer stopVacuum()
		go vacuumEvery(vctx, cfg.DatabaseDSN, o.SoakVacuum, g.warn)
	}

	start := time.Now()
	l := newSoakLoad(start, o.SoakInterval, o.Soak)
	p := &pacer{api: api, name: "soak-" + uuid.NewString()[:8], rate: s.RatePerSec, launched: l.launched, answered: l.answered}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, o.Soak)
	}()
	for k := range l.rows {
		from := start.Add(time.Duration(k) * o.SoakInterval)
		to := min(from.Add(o.SoakInterval).Sub(start), o.Soak)
		for {
			next := time.Now().Add(sweepEvery)
			if end := start.Add(to); next.After(end) {
				next = end
			}
			if !sleepUntil(ctx, next) {
				<-done
				return fmt.Errorf("soak interrupted after %d row(s)", len(s.Rows))
			}
			l.sweep(ctx, snk)
			if time.Since(start) >= to {
				break
			}
		}
		row := l.cut(k, from, start.Add(to))
		g.sample(ctx, &row)
		fmt.Println(soakLine(row))
		s.Rows = append(s.Rows, row)
	}
	<-done // every send answered
	stopped := time.Now()
	s.MaxSlipMS = msOf(time.Duration(p.slip.Load()))
	l.close()

	t := &s.Totals
	t.GraceSeconds = o.SoakGrace.Seconds()
	t.Sent, t.Accepted, t.Refused = int(p.sent.Load()), len(l.accepted), l.refused
	if pending := l.stillPending(); len(pending) > 0 {
		step("soak: load stopped; waiting up to %s for %d notification(s) not yet at the sink", o.SoakGrace, len(pending))
		records, missing, err := awaitArrivals(ctx, snk, pending, stopped.Add(o.SoakGrace))
		if err != nil {
			return fmt.Errorf("soak: waiting for the stragglers: %w", err)
		}
		for _, c := range pending {
			if rec, ok := records[c.ID]; ok {
				l.credit(rec.FirstAt, rec.FirstAt.Sub(c.CreatedAt))
			}
		}
		lost, err := redeliveries(ctx, snk, l.accepted, missing, t)
		if err != nil {
			return err
		}
		if len(lost) > 0 {
			t.Lost, t.LostByStatus = len(lost), stuckByStatus(ctx, api, lost)
		}
	} else if _, err := redeliveries(ctx, snk, l.accepted, nil, t); err != nil {
		return err
	}
	t.Delivered, t.AfterRows, t.LatencyMS = len(l.all), len(l.after), latencyOf(l.all)
	if st, err := snk.stats(ctx); err == nil && st.UniqueIDs > t.Accepted {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the sink saw %d ids since its reset, the soak sent %d: other deliveries reached it meanwhile", st.UniqueIDs, t.Accepted))
	}
	if l.readErr != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("reading the sink's records failed at times (those ids were read again later), first: %v", l.readErr))
	}
	if len(t.Refused) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d POST(s) refused (by status: %s), first: %v", t.Sent-t.Accepted, counts(t.Refused), l.firstErr))
	}
	if s.MaxSlipMS > 100 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("a send started %.0f ms behind its schedule: the bench could not hold %.1f/s", s.MaxSlipMS, s.RatePerSec))
	}
	s.Slopes, s.P99Drift = slopesOf(s.Rows), driftOf(s.Rows, o.SoakInterval)
	s.Warnings = append(append(res.Warnings, g.warnings...), restarts(s.Rows)...)

	printSoakSummary(os.Stdout, s)
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	fmt.Printf("SOAK_JSON %s\n", b)
	if t.Lost > 0 {
		return fmt.Errorf("%d of %d accepted notifications did not reach the sink within --soak-grace %s of the load stopping", t.Lost, t.Accepted, o.SoakGrace)
	}
	return nil
}

// vacuumEvery runs VACUUM (ANALYZE) every interval on the product's database
// and, on the same server, Temporal's two (when they exist there), as a
// production server's autovacuum would: a PostgreSQL run with autovacuum
// off (a test machine's) would otherwise pile up dead rows of the outbox and
// of Temporal's task tables, and a soak would measure their bloat, not the
// product. Plain VACUUM takes no lock that stops writers.
func vacuumEvery(ctx context.Context, dsn string, interval time.Duration, warn func(string, error)) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		warn("vacuum", fmt.Errorf("vacuum: %w", err))
		return
	}
	dbs := []string{cfg.Database, "temporal", "temporal_visibility"}
	periodic.Run(ctx, interval, zap.NewNop(), "vacuum", func(ctx context.Context) error {
		for _, db := range dbs {
			c := cfg.Copy()
			c.Database = db
			conn, err := pgx.ConnectConfig(ctx, c)
			if err != nil {
				continue // Temporal's state is elsewhere (SQLite, another server)
			}
			if _, err := conn.Exec(ctx, "VACUUM (ANALYZE)"); err != nil && ctx.Err() == nil {
				warn("vacuum."+db, fmt.Errorf("VACUUM of %s: %w", db, err))
			}
			_ = conn.Close(context.WithoutCancel(ctx))
		}
		return nil
	})
}

// productConfig is the product's configuration as the API and the worker
// read it (the environment over .env, then the product's defaults), for
// the DSN, the broker's URL and queue names, and Redis's port.
func productConfig() (config.Config, error) {
	env := map[string]string{}
	for _, k := range []string{"DATABASE_DSN", "RABBITMQ_URL", "RABBITMQ_QUEUE_PREFIX", "REDIS_URL"} {
		if v := setting(k, ""); v != "" {
			env[k] = v
		}
	}
	cfg, err := config.Parse(env)
	if err != nil {
		return config.Config{}, fmt.Errorf("reading the product's settings: %w", err)
	}
	return cfg, nil
}

// probeCapacity measures the stack's delivered/s on a burst of
// --soak-probe-n single POSTs at --concurrency clients, the way the
// end-to-end run does.
func probeCapacity(ctx context.Context, o options, api *apiClient, snk *sinkClient) (float64, []string, error) {
	step("soak: probing the capacity with %d single POSTs at %d clients", o.SoakProbeN, o.Concurrency)
	if err := snk.reset(ctx); err != nil {
		return 0, nil, fmt.Errorf("resetting the sink: %w", err)
	}
	run := "soak-probe-" + uuid.NewString()[:8]
	reqs := make([]createRequest, o.SoakProbeN)
	for i := range reqs {
		reqs[i] = notificationFor(run, i)
	}
	accepted, errs, first, _ := submitSingles(ctx, api, reqs, o.Concurrency)
	if len(accepted) == 0 {
		return 0, nil, fmt.Errorf("the API accepted none of %d notifications: %w", len(reqs), errors.Join(errs...))
	}
	records, pending, err := awaitArrivals(ctx, snk, accepted, first.Add(o.Timeout))
	if err != nil {
		return 0, nil, err
	}
	var e EndToEndResult
	summarize(&e, accepted, records, nil, nil)
	if e.DeliveredPerSec <= 0 {
		return 0, nil, errors.New("nothing of the probe reached the sink")
	}
	var warns []string
	if len(errs) > 0 || len(pending) > 0 {
		warns = append(warns, fmt.Sprintf("capacity probe: %d request(s) failed, %d accepted did not reach the sink within --timeout", len(errs), len(pending)))
	}
	step("soak: capacity %.1f delivered/s (p50 %.0f ms, p99 %.0f ms under the burst)", e.DeliveredPerSec, e.LatencyMS.P50, e.LatencyMS.P99)
	return e.DeliveredPerSec, warns, nil
}

// redeliveries reads every accepted notification's record once more, now
// the load has stopped (a redelivery may come after the first arrival was
// read), and counts the retried and duplicated ones into t. It returns the
// ids of missing that are still not there.
func redeliveries(ctx context.Context, snk *sinkClient, accepted []created, missing []string, t *SoakTotals) ([]string, error) {
	step("soak: reading the sink's %d records once more for redeliveries", len(accepted))
	ids := make([]string, len(accepted))
	for i, c := range accepted {
		ids[i] = c.ID
	}
	records, err := readRecords(ctx, snk, ids)
	if err != nil && len(records) == 0 {
		return nil, fmt.Errorf("soak: reading the sink's records: %w", err)
	}
	for _, rec := range records {
		if rec.Requests > 1 {
			t.Retried++
		}
		if rec.Delivered > 1 {
			t.Duplicates++
		}
	}
	return slices.DeleteFunc(slices.Clone(missing), func(id string) bool { _, ok := records[id]; return ok }), nil
}

// soakLoad follows the soak's notifications: the pacer's sends and
// answers, the ones not yet seen at the sink, and each row's arrivals.
// Every count goes to the row its time falls in (a send's planned time, an
// answer's arrival, a delivery's firstAt at the sink), or the row being
// filled when that one was printed already.
type soakLoad struct {
	start    time.Time
	interval time.Duration
	end      time.Time
	rows     int

	mu       sync.Mutex
	accepted []created
	pending  []created // accepted, not yet seen at the sink, oldest first
	refused  map[string]int
	firstErr error
	readErr  error
	sinkSeen int // the sink's delivered count at the last sweep
	sent     map[int]int
	answers  map[int][2]int // accepted, refused
	arrivals map[int][]time.Duration
	printed  int             // rows printed
	closed   bool            // the last row is printed
	all      []time.Duration // every delivery's latency
	after    []time.Duration // those read after the last row
}

func newSoakLoad(start time.Time, interval, d time.Duration) *soakLoad {
	return &soakLoad{
		start: start, interval: interval, end: start.Add(d), rows: int(math.Ceil(float64(d) / float64(interval))),
		refused: map[string]int{}, sent: map[int]int{}, answers: map[int][2]int{}, arrivals: map[int][]time.Duration{},
	}
}

// rowOf is the row t counts in; l.mu is held.
func (l *soakLoad) rowOf(t time.Time) int {
	return min(max(int(t.Sub(l.start)/l.interval), l.printed), l.rows-1)
}

func (l *soakLoad) launched(planned time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[l.rowOf(planned)]++
}

func (l *soakLoad) answered(s pacedSend) {
	l.mu.Lock()
	defer l.mu.Unlock()
	row := l.rowOf(s.answered)
	a := l.answers[row]
	if c, ok := s.accepted(); ok {
		a[0]++
		l.accepted = append(l.accepted, c)
		l.pending = append(l.pending, c)
	} else {
		a[1]++
		l.refused[strconv.Itoa(s.status)]++
		if l.firstErr == nil {
			l.firstErr = s.err
		}
	}
	l.answers[row] = a
}

// sweep reads the oldest pending ids at the sink and credits the arrivals.
func (l *soakLoad) sweep(ctx context.Context, snk *sinkClient) {
	st, err := snk.stats(ctx)
	l.mu.Lock()
	limit := sweepMax
	if err == nil {
		limit += 2 * max(st.Delivered-l.sinkSeen, 0)
		l.sinkSeen = st.Delivered
	}
	batch := slices.Clone(l.pending[:min(len(l.pending), limit)])
	l.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ids := make([]string, len(batch))
	for i, c := range batch {
		ids[i] = c.ID
	}
	found, err := readRecords(ctx, snk, ids)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil && l.readErr == nil && ctx.Err() == nil {
		l.readErr = err
	}
	l.pending = slices.DeleteFunc(l.pending, func(c created) bool { _, ok := found[c.ID]; return ok })
	for _, c := range batch {
		if rec, ok := found[c.ID]; ok {
			l.creditLocked(rec.FirstAt, rec.FirstAt.Sub(c.CreatedAt))
		}
	}
}

func (l *soakLoad) credit(at time.Time, lat time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.creditLocked(at, lat)
}

func (l *soakLoad) creditLocked(at time.Time, lat time.Duration) {
	l.all = append(l.all, lat)
	if l.closed || !at.Before(l.end) {
		l.after = append(l.after, lat)
		return
	}
	row := l.rowOf(at)
	l.arrivals[row] = append(l.arrivals[row], lat)
}

// cut closes row k, [from, to), and returns its figures.
func (l *soakLoad) cut(k int, from, to time.Time) SoakRow {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent, a, lat := l.sent[k], l.answers[k], l.arrivals[k]
	delete(l.sent, k)
	delete(l.answers, k)
	delete(l.arrivals, k)
	l.printed = k + 1
	secs := to.Sub(from).Seconds()
	t := latencyOf(lat)
	return SoakRow{
		AtSeconds: round3(to.Sub(l.start).Seconds()), Seconds: round3(secs),
		Sent: sent, Accepted: a[0], Refused: a[1], Delivered: len(lat),
		SentPerSec: round3(float64(sent) / secs), AcceptedPerSec: round3(float64(a[0]) / secs), DeliveredPerSec: round3(float64(len(lat)) / secs),
		P50MS: t.P50, P99MS: t.P99, lat: lat,
	}
}

// close marks the last row printed: later arrivals count after the rows.
func (l *soakLoad) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

func (l *soakLoad) stillPending() []created {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pending)
}

// soakGauges reads, for each row, where a leak or a backlog would show:
// the processes' RSS, the goroutines of the API, the worker and Temporal,
// the outbox and the broker's queues. A gauge that cannot be read shows as
// '-' and is told once.
type soakGauges struct {
	o        options
	cfg      config.Config
	http     *http.Client
	temporal string // Temporal's /metrics URL, "" when unknown
	db       *pgx.Conn
	mq       *amqp.Connection
	warned   map[string]bool
	warnings []string
}

func (g *soakGauges) warn(key string, err error) {
	if g.warned[key] {
		return
	}
	g.warned[key] = true
	g.warnings = append(g.warnings, err.Error())
	step("soak: %v", err)
}

func (g *soakGauges) close() {
	if g.db != nil {
		_ = g.db.Close(context.Background())
	}
	if g.mq != nil {
		_ = g.mq.Close()
	}
}

func (g *soakGauges) sample(ctx context.Context, row *SoakRow) {
	row.RSSMB, row.Goroutines, row.PIDs = map[string]float64{}, map[string]float64{}, map[string]int{}
	for _, p := range findProcesses(g.o).list {
		if p.PID == 0 {
			continue
		}
		row.PIDs[p.Name] = p.PID
		if p.Tree {
			// PostgreSQL's backends share its buffers: PSS counts them once.
			row.RSSMB[p.Name] = round3(treePSSMB(p.PID))
		} else if mb, err := rssMB(p.PID); err == nil {
			row.RSSMB[p.Name] = round3(mb)
		}
	}
	for _, name := range soakGoroutines {
		u := map[string]string{"api": g.o.API + "/metrics", "worker": g.o.Worker + "/metrics", "temporal": g.temporal}[name]
		if u == "" {
			continue
		}
		if v, err := g.gauge(ctx, u, "go_goroutines", "num_goroutines"); err == nil {
			row.Goroutines[name] = v
		} else {
			g.warn("goroutines."+name, fmt.Errorf("%s goroutines: %w", name, err))
		}
	}
	if n, err := g.outbox(ctx); err == nil {
		row.Outbox = &n
	} else {
		g.warn("outbox", err)
	}
	if n, err := g.queued(); err == nil {
		row.Queue = &n
	} else {
		g.warn("queue", err)
	}
}

// gauge returns the first of names the Prometheus page at u holds, the
// largest value over its label sets (Temporal's dev server reports
// num_goroutines once per service, all of one process).
func (g *soakGauges) gauge(ctx context.Context, u string, names ...string) (float64, error) {
	families, err := scrape(ctx, g.http, u)
	if err != nil {
		return 0, err
	}
	for _, n := range names {
		f, ok := families[n]
		if !ok {
			continue
		}
		v := math.Inf(-1)
		for _, m := range f.GetMetric() {
			v = max(v, m.GetGauge().GetValue()+m.GetUntyped().GetValue())
		}
		return v, nil
	}
	return 0, fmt.Errorf("%s has no %s", u, strings.Join(names, " or "))
}

// scrape reads the Prometheus text page at u.
func scrape(ctx context.Context, c *http.Client, u string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	return families, nil
}

// temporalMetricsURL finds the Temporal server's Prometheus endpoint:
// --temporal-metrics, else the dev server's --metrics-port, else the
// "Metrics:" line the dev server printed at its start (without
// --metrics-port the port is a random free one) into its standard output,
// make run's .data/temporal.log. "" when none answers.
func (g *soakGauges) temporalMetricsURL(ctx context.Context) string {
	var candidates []string
	if g.o.TempMetrics != "" {
		candidates = append(candidates, g.o.TempMetrics)
	}
	logs := []string{".data/temporal.log"}
	for _, p := range findProcesses(g.o).list {
		if p.Name != "temporal" || p.PID == 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if err != nil {
			continue
		}
		if out, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", p.PID)); err == nil && filepath.IsAbs(out) {
			logs = append([]string{out}, logs...) // its own log first, wherever it was started
		}
		for _, port := range metricsPorts(splitCmdline(b)) {
			if host, _, err := net.SplitHostPort(g.o.Temporal); err == nil {
				candidates = append(candidates, "http://"+net.JoinHostPort(host, port)+"/metrics")
			}
		}
	}
	for _, name := range logs {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if u := metricsLine(string(b)); u != "" {
			candidates = append(candidates, u)
		}
	}
	for _, u := range candidates {
		if _, err := g.gauge(ctx, u, "num_goroutines", "go_goroutines"); err == nil {
			return u
		} else if u == g.o.TempMetrics {
			g.warn("temporal-metrics-flag", fmt.Errorf("--temporal-metrics %s: %w", u, err))
		}
	}
	return ""
}

// metricsPorts returns the ports a Temporal dev server's argv gives
// --metrics-port, as "--metrics-port=N" or "--metrics-port N", in order.
func metricsPorts(argv []string) []string {
	var out []string
	for i, a := range argv {
		port, ok := strings.CutPrefix(a, "--metrics-port=")
		if !ok && a == "--metrics-port" && i+1 < len(argv) {
			port, ok = argv[i+1], true
		}
		if ok {
			out = append(out, port)
		}
	}
	return out
}

// metricsLine returns the URL of the last "Metrics: <url>" line a Temporal
// dev server printed at its start (once per start: a log appended to by
// restarts holds one per start, and the last is the running server's), ""
// when there is none.
func metricsLine(log string) string {
	last := ""
	for line := range strings.SplitSeq(log, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Metrics:"); ok {
			last = strings.TrimSpace(v)
		}
	}
	return last
}

// outbox counts the outbox's rows: notifications accepted and not yet
// published to the broker.
func (g *soakGauges) outbox(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if g.db == nil || g.db.IsClosed() {
		db, err := pgx.Connect(ctx, g.cfg.DatabaseDSN)
		if err != nil {
			return 0, fmt.Errorf("outbox: connecting to PostgreSQL (DATABASE_DSN): %w", err)
		}
		g.db = db
	}
	var n int
	if err := g.db.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		_ = g.db.Close(context.Background())
		g.db = nil
		return 0, fmt.Errorf("outbox: counting its rows: %w", err)
	}
	return n, nil
}

// queued sums the ready messages of the channels' queues. AMQP's
// declare-ok counts only those: the unacked ones (at most the worker's
// prefetch, WORKER_CONCURRENCY, per queue) would need the management API,
// which make run's RabbitMQ does not enable. A passive declare of a
// missing queue closes its channel, so each read opens a channel of its own.
func (g *soakGauges) queued() (int, error) {
	if g.mq == nil || g.mq.IsClosed() {
		conn, err := amqp.DialConfig(g.cfg.RabbitMQURL, amqp.Config{
			Dial: amqp.DefaultDial(5 * time.Second), Heartbeat: 10 * time.Second,
			Properties: amqp.Table{"connection_name": "dispatch-engine bench soak"},
		})
		if err != nil {
			return 0, fmt.Errorf("queue: connecting to RabbitMQ (RABBITMQ_URL): %w", err)
		}
		g.mq = conn
	}
	ch, err := g.mq.Channel()
	if err != nil {
		_ = g.mq.Close()
		g.mq = nil
		return 0, fmt.Errorf("queue: opening a RabbitMQ channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	topo := queue.Topology{Prefix: g.cfg.RabbitMQQueuePrefix}
	n := 0
	for _, c := range notification.Channels {
		q, err := ch.QueueDeclarePassive(topo.Queue(string(c)), true, false, false, false, nil)
		if err != nil {
			return 0, fmt.Errorf("queue: inspecting %s: %w", topo.Queue(string(c)), err)
		}
		n += q.Messages
	}
	return n, nil
}

// rssMB is VmRSS of pid (its resident set now), in MiB.
func rssMB(pid int) (float64, error) { return statusMB(pid, "VmRSS:") }

// slopesOf fits a least-squares line per series over the rows after the
// first, against hours since the load started; a series needs two points.
func slopesOf(rows []SoakRow) map[string]float64 {
	series := map[string][][2]float64{}
	add := func(k string, x, y float64) { series[k] = append(series[k], [2]float64{x, y}) }
	for _, r := range rows[min(1, len(rows)):] {
		x := r.AtSeconds / 3600
		for n, v := range r.RSSMB {
			add("rss."+n, x, v)
		}
		for n, v := range r.Goroutines {
			add("goroutines."+n, x, v)
		}
		if r.Delivered > 0 {
			add("p99", x, r.P99MS)
		}
		if r.Outbox != nil {
			add("outbox", x, float64(*r.Outbox))
		}
		if r.Queue != nil {
			add("queue", x, float64(*r.Queue))
		}
	}
	out := map[string]float64{}
	for k, pts := range series {
		if s, ok := slope(pts); ok {
			out[k] = round3(s)
		}
	}
	return out
}

// slope is the least-squares slope of y over x.
func slope(pts [][2]float64) (float64, bool) {
	if len(pts) < 2 {
		return 0, false
	}
	var mx, my float64
	for _, p := range pts {
		mx, my = mx+p[0], my+p[1]
	}
	n := float64(len(pts))
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for _, p := range pts {
		dx := p[0] - mx
		sxy, sxx = sxy+dx*(p[1]-my), sxx+dx*dx
	}
	if sxx == 0 {
		return 0, false
	}
	return sxy / sxx, true
}

// driftOf compares the p99 of the deliveries in the first and the last
// driftWindow of rows after the warm-up (half the rows each when fewer);
// nil when there are not two rows to compare.
func driftOf(rows []SoakRow, interval time.Duration) *SoakDrift {
	after := rows[min(1, len(rows)):]
	w := min(max(int(driftWindow/interval), 1), len(after)/2)
	if w < 1 {
		return nil
	}
	var first, last []time.Duration
	for _, r := range after[:w] {
		first = append(first, r.lat...)
	}
	for _, r := range after[len(after)-w:] {
		last = append(last, r.lat...)
	}
	if len(first) == 0 || len(last) == 0 {
		return nil
	}
	f, l := latencyOf(first).P99, latencyOf(last).P99
	d := &SoakDrift{WindowSeconds: (time.Duration(w) * interval).Seconds(), FirstMS: f, LastMS: l}
	if f > 0 {
		d.Ratio = round3(l / f)
	}
	d.Drifted = l > f*driftRatio && l-f > driftFloorMS
	return d
}

// restarts tells of the processes whose pid changed or that went missing
// between rows: a crash the supervisor of make run started again, say.
func restarts(rows []SoakRow) []string {
	var out []string
	for _, name := range soakProcs {
		prev := 0
		for _, r := range rows {
			pid := r.PIDs[name]
			switch {
			case prev != 0 && pid == 0:
				out = append(out, fmt.Sprintf("the %s (pid %d) was not found at %s", name, prev, clock(r.AtSeconds)))
			case prev != 0 && pid != prev:
				out = append(out, fmt.Sprintf("the %s's pid changed from %d to %d by %s: it restarted", name, prev, pid, clock(r.AtSeconds)))
			}
			if pid != 0 {
				prev = pid
			}
		}
	}
	return out
}

// clock prints seconds since the load started as mm:ss.
func clock(secs float64) string {
	s := int(math.Round(secs))
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// soakCol is a column of the rows: the group it is under, its head, its width.
type soakCol struct {
	group, head string
	width       int
}

// soakCols are the rows' columns.
var soakCols = func() []soakCol {
	cols := []soakCol{{"", "time", 6}, {"", "sent/s", 7}, {"", "acc/s", 7}, {"", "dlv/s", 7}, {"latency ms", "p50", 6}, {"latency ms", "p99", 6}}
	for _, p := range soakProcs {
		cols = append(cols, soakCol{"RSS MiB", p, max(len(p), 5)})
	}
	for _, p := range soakGoroutines {
		cols = append(cols, soakCol{"goroutines", p, max(len(p), 5)})
	}
	return append(cols, soakCol{"", "outbox", 7}, soakCol{"", "queue", 7})
}()

// printSoakHeader prints the two header lines of the rows.
func printSoakHeader(out io.Writer) {
	var groups, heads strings.Builder
	for i := 0; i < len(soakCols); {
		j, span := i, 0
		for j < len(soakCols) && (j == i || soakCols[i].group != "" && soakCols[j].group == soakCols[i].group) {
			span += soakCols[j].width + 2
			j++
		}
		fmt.Fprintf(&groups, "  %-*s", span-2, soakCols[i].group)
		i = j
	}
	for _, c := range soakCols {
		fmt.Fprintf(&heads, "  %*s", c.width, c.head)
	}
	_, _ = fmt.Fprintln(out, strings.TrimRight(groups.String(), " "))
	_, _ = fmt.Fprintln(out, heads.String())
}

// soakLine is one row as the table prints it ('-': not read).
func soakLine(r SoakRow) string {
	dash := func(ok bool, format string, v any) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	cells := []string{clock(r.AtSeconds), fmt.Sprintf("%.1f", r.SentPerSec), fmt.Sprintf("%.1f", r.AcceptedPerSec), fmt.Sprintf("%.1f", r.DeliveredPerSec),
		dash(r.Delivered > 0, "%.0f", r.P50MS), dash(r.Delivered > 0, "%.0f", r.P99MS)}
	for _, p := range soakProcs {
		v, ok := r.RSSMB[p]
		cells = append(cells, dash(ok, "%.0f", v))
	}
	for _, p := range soakGoroutines {
		v, ok := r.Goroutines[p]
		cells = append(cells, dash(ok, "%.0f", v))
	}
	cells = append(cells, dash(r.Outbox != nil, "%d", deref(r.Outbox)), dash(r.Queue != nil, "%d", deref(r.Queue)))
	var b strings.Builder
	for i, c := range cells {
		fmt.Fprintf(&b, "  %*s", soakCols[i].width, c)
	}
	return b.String()
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// printSoakSummary prints the trends, the totals and the notes.
func printSoakSummary(out io.Writer, s *SoakResult) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %s\t"+format+"\n", append([]any{label}, args...)...)
	}
	per := func(prefix string, names []string) string {
		parts := make([]string, len(names))
		for i, n := range names {
			v, ok := s.Slopes[prefix+n]
			parts[i] = n + " " + dashSigned(v, ok)
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "\nSOAK SUMMARY  (trends: least-squares slopes per hour over the %d row(s) after the first, a warm-up)\n", max(len(s.Rows)-1, 0))
	row("RSS MiB per hour", "%s", per("rss.", soakProcs))
	row("goroutines per hour", "%s", per("goroutines.", soakGoroutines))
	o, okO := s.Slopes["outbox"]
	q, okQ := s.Slopes["queue"]
	row("outbox / queue per hour", "%s / %s", dashSigned(o, okO), dashSigned(q, okQ))
	p99, okP := s.Slopes["p99"]
	drift := "not enough rows to compare a first and a last window"
	if d := s.P99Drift; d != nil {
		verdict := "no drift"
		if d.Drifted {
			verdict = "DRIFTED"
		}
		drift = fmt.Sprintf("first %s %.0f ms, last %s %.0f ms (×%.2f): %s", time.Duration(d.WindowSeconds*float64(time.Second)), d.FirstMS, time.Duration(d.WindowSeconds*float64(time.Second)), d.LastMS, d.Ratio, verdict)
	}
	row("p99", "%s ms/h; %s", dashSigned(p99, okP), drift)
	t := s.Totals
	row("sent / accepted / refused", "%d / %d / %d%s  (sends at most %.0f ms behind schedule)", t.Sent, t.Accepted, t.Sent-t.Accepted, refusedNote(t.Refused), s.MaxSlipMS)
	l := t.LatencyMS
	row("delivered", "%d (%d read after the last row); accepted → delivered p50/p90/p99 %.0f / %.0f / %.0f ms (max %.0f)", t.Delivered, t.AfterRows, l.P50, l.P90, l.P99, l.Max)
	row("redeliveries", "%d retried (the sink saw them more than once), %d duplicates (answered 2xx more than once)", t.Retried, t.Duplicates)
	grace := time.Duration(t.GraceSeconds * float64(time.Second))
	if t.Lost == 0 {
		row("nothing lost", "yes: every accepted notification reached the sink within %s of the load stopping", grace)
	} else {
		row("nothing lost", "NO: %d of %d accepted did not reach the sink within %s (by API status: %s)", t.Lost, t.Accepted, grace, counts(t.LostByStatus))
	}
	printNotes(w, s.Warnings)
}

func dashSigned(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%+.1f", v)
}

func refusedNote(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return " (by status: " + counts(m) + ")"
}
