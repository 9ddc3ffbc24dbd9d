package retention

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

const period = time.Hour

// Ages around the period: old rows are past it, recent ones within it.
const (
	old    = 2 * period
	recent = 10 * time.Minute
)

var nonTerminal = []notification.Status{
	notification.StatusAccepted, notification.StatusQueued, notification.StatusScheduled,
	notification.StatusProcessing, notification.StatusRetrying, notification.StatusSent,
}

type fixture struct {
	t       *testing.T
	pool    *pgxpool.Pool
	deleted *prometheus.CounterVec
	logs    *observer.ObservedLogs
}

func setup(t *testing.T) *fixture {
	t.Helper()
	pool, _ := testenv.Pool(t)
	return &fixture{
		t: t, pool: pool,
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deleted"}, []string{"table"}),
	}
}

// purger returns a Purger (period one hour unless set) on the fixture's
// database and counter, logging to f.logs.
func (f *fixture) purger(cfg Config) *Purger {
	if cfg.Period == 0 {
		cfg.Period = period
	}
	core, logs := observer.New(zapcore.InfoLevel)
	f.logs = logs
	return New(cfg, f.pool, f.deleted, zap.New(core))
}

// batch inserts a batch created age ago.
func (f *fixture) batch(age time.Duration, total int) uuid.UUID {
	f.t.Helper()
	id := uuid.Must(uuid.NewV7())
	_, err := f.pool.Exec(context.Background(),
		`INSERT INTO batches (id, total, created_at) VALUES ($1, $2, now() - $3::interval)`, id, total, age)
	require.NoError(f.t, err)
	return id
}

// note inserts a notification in status created age ago (in batch, when
// set) with two delivery attempts, an outbox row (a dead-letter record not
// yet relayed) and a retry key.
func (f *fixture) note(status notification.Status, age time.Duration, batch *uuid.UUID) uuid.UUID {
	f.t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	_, err := f.pool.Exec(ctx, `INSERT INTO notifications (id, batch_id, channel, priority, recipient, content, status, created_at, updated_at)
		VALUES ($1, $2, 'sms', 'NORMAL', '+14155550123', 'hello', $3, now() - $4::interval, now() - $4::interval)`, id, batch, string(status), age)
	require.NoError(f.t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms, outcome)
		VALUES ($1, 1, now(), 5, 'failed'), ($1, 2, now(), 5, 'delivered')`, id)
	require.NoError(f.t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO outbox (notification_id, channel, priority, dead_letter) VALUES ($1, 'sms', 'NORMAL', '{}')`, id)
	require.NoError(f.t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO notification_retries (idempotency_key, notification_id, generation) VALUES ($1, $2, 1)`, id.String(), id)
	require.NoError(f.t, err)
	return id
}

// notes inserts n plain notifications (no other rows) in status, age ago.
func (f *fixture) notes(status notification.Status, age time.Duration, n int) {
	f.t.Helper()
	_, err := f.pool.Exec(context.Background(), `INSERT INTO notifications (id, channel, priority, recipient, content, status, created_at, updated_at)
		SELECT gen_random_uuid(), 'sms', 'NORMAL', '+14155550123', 'hello', $1, now() - $2::interval, now() - $2::interval
		FROM generate_series(1, $3)`, string(status), age, n)
	require.NoError(f.t, err)
}

// retirements returns the below_generation of the notification's
// dead_letter_retirements rows, in order.
func (f *fixture) retirements(id uuid.UUID) []int {
	f.t.Helper()
	rows, err := f.pool.Query(context.Background(),
		`SELECT below_generation FROM dead_letter_retirements WHERE notification_id = $1 ORDER BY 1`, id)
	require.NoError(f.t, err)
	below, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(f.t, err)
	return below
}

// rows counts the rows of table that belong to notification id.
func (f *fixture) rows(table string, id uuid.UUID) int {
	f.t.Helper()
	column := "notification_id"
	if table == "notifications" {
		column = "id"
	}
	var n int
	require.NoError(f.t, f.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM `+table+` WHERE `+column+` = $1`, id).Scan(&n))
	return n
}

func (f *fixture) count(table string) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func (f *fixture) batchExists(id uuid.UUID) bool {
	f.t.Helper()
	_, err := store.GetBatchSummary(context.Background(), f.pool, uuid.Nil, id)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	require.NoError(f.t, err)
	return true
}

// counted is the deleted counter's value for table.
func (f *fixture) counted(table string) int {
	f.t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(f.t, reg.Register(f.deleted))
	families, err := reg.Gather()
	require.NoError(f.t, err)
	for _, fam := range families {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func round(t *testing.T, p *Purger) Result {
	t.Helper()
	res, err := p.Round(context.Background())
	require.NoError(t, err)
	return res
}

func TestOldTerminalNotificationsGoWithTheirRows(t *testing.T) {
	f := setup(t)
	gone := make([]uuid.UUID, len(terminal))
	var kept []uuid.UUID
	for i, s := range terminal {
		gone[i] = f.note(s, old, nil)
		kept = append(kept, f.note(s, recent, nil))
	}
	for _, s := range nonTerminal {
		kept = append(kept, f.note(s, old, nil))
	}
	delivered, failed, cancelled := gone[0], gone[1], gone[2]
	// The delivered one was retried once: its failure's dead letters were
	// retired then, and that row is the pruner's.
	_, err := f.pool.Exec(context.Background(), `UPDATE notifications SET generation = 1 WHERE id = $1`, delivered)
	require.NoError(t, err)
	_, err = f.pool.Exec(context.Background(),
		`INSERT INTO dead_letter_retirements (notification_id, channel, below_generation) VALUES ($1, 'sms', 1)`, delivered)
	require.NoError(t, err)
	_, err = f.pool.Exec(context.Background(), `UPDATE notifications SET generation = 2 WHERE id = $1`, failed)
	require.NoError(t, err)

	res := round(t, f.purger(Config{}))

	require.Equal(t, Result{Notifications: 4, DeliveryAttempts: 8, Outbox: 4}, res, "delivered, failed, cancelled and skipped")
	for _, id := range gone {
		ctx := context.Background()
		_, err := store.GetNotification(ctx, f.pool, id)
		require.ErrorIs(t, err, store.ErrNotFound, "the API answers 404")
		for _, table := range []string{"notifications", "delivery_attempts", "outbox", "notification_retries"} {
			require.Zero(t, f.rows(table, id), "%s of %s", table, id)
		}
	}
	// The failed one's dead letters, of every generation, leave its DLQ
	// (the pruner takes them out, then the row); the others had none.
	require.Equal(t, []int{3}, f.retirements(failed))
	require.Equal(t, []int{1}, f.retirements(delivered), "the pruner's row stays")
	require.Empty(t, f.retirements(cancelled))
	for _, id := range kept {
		for table, want := range map[string]int{"notifications": 1, "delivery_attempts": 2, "outbox": 1, "notification_retries": 1} {
			require.Equal(t, want, f.rows(table, id), "%s of %s", table, id)
		}
		require.Empty(t, f.retirements(id))
	}
	require.Equal(t, 4, f.counted(TableNotifications))
	require.Equal(t, 8, f.counted(TableDeliveryAttempts))
	require.Equal(t, 4, f.counted(TableOutbox))
	require.Zero(t, f.counted(TableBatches))

	// The next round finds nothing more.
	require.Equal(t, Result{}, round(t, f.purger(Config{})))
}

func TestOldNotificationsTakeTheirThrottleSlotsAndDigest(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	gone, kept := f.note(notification.StatusDelivered, old, nil), f.note(notification.StatusDelivered, recent, nil)
	for _, id := range []uuid.UUID{gone, kept} {
		_, err := f.pool.Exec(ctx, `INSERT INTO throttle_slots (tenant_id, category, recipient_key, notification_id)
			VALUES ($1, 'news', 'profile:ada', $2)`, store.DefaultTenantID, id)
		require.NoError(t, err)
	}
	// gone is a digest's message: the digest has its id.
	_, err := f.pool.Exec(ctx, `INSERT INTO digests (id, tenant_id, category, recipient_key, digest_key, closes_at, max_items, items, flushed_at)
		VALUES ($1, $2, 'news', 'profile:ada', 'daily', now(), 10, 2, now())`, gone, store.DefaultTenantID)
	require.NoError(t, err)

	round(t, f.purger(Config{}))

	require.Zero(t, f.rows("throttle_slots", gone))
	require.Equal(t, 1, f.rows("throttle_slots", kept))
	var digests int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM digests WHERE id = $1`, gone).Scan(&digests))
	require.Zero(t, digests, "the digest went with its message")
}

func TestEmptiedOldBatchesGoAndOthersStay(t *testing.T) {
	f := setup(t)
	// All terminal, across two statuses (two statements), and old: it goes.
	emptied := f.batch(old, 3)
	f.note(notification.StatusDelivered, old, &emptied)
	f.note(notification.StatusDelivered, old, &emptied)
	f.note(notification.StatusFailed, old, &emptied)
	// Old, but one notification is not terminal: it stays, with that one.
	waiting := f.batch(old, 2)
	f.note(notification.StatusDelivered, old, &waiting)
	pending := f.note(notification.StatusScheduled, old, &waiting)
	// terminal but recent: it stays whole.
	fresh := f.batch(recent, 2)
	f.note(notification.StatusDelivered, recent, &fresh)
	f.note(notification.StatusCancelled, recent, &fresh)

	res := round(t, f.purger(Config{}))

	require.Equal(t, int64(4), res.Notifications)
	require.Equal(t, int64(1), res.Batches)
	require.False(t, f.batchExists(emptied), "its summary answers 404")
	require.True(t, f.batchExists(waiting))
	require.Equal(t, 1, f.rows("notifications", pending))
	require.True(t, f.batchExists(fresh))
	s, err := store.GetBatchSummary(context.Background(), f.pool, uuid.Nil, fresh)
	require.NoError(t, err)
	require.Equal(t, 1, s.ByStatus[notification.StatusDelivered])
	require.Equal(t, 1, f.counted(TableBatches))

	// Its last notification finishes: the batch goes with it.
	_, err = f.pool.Exec(context.Background(), `UPDATE notifications SET status = 'DELIVERED' WHERE id = $1`, pending)
	require.NoError(t, err)
	res = round(t, f.purger(Config{}))
	require.Equal(t, Result{Notifications: 1, DeliveryAttempts: 2, Outbox: 1, Batches: 1}, res)
	require.False(t, f.batchExists(waiting))
}

func TestARoundDeletesMoreThanOneBatchInBatchesOfTheSize(t *testing.T) {
	f := setup(t)
	f.notes(notification.StatusDelivered, old, 10)
	f.notes(notification.StatusFailed, old, 6)
	f.notes(notification.StatusDelivered, recent, 2)
	p := f.purger(Config{BatchSize: 3})
	var sizes []int64
	p.inBatch = func(r Result) { sizes = append(sizes, r.Notifications) }

	res := round(t, p)

	require.Equal(t, int64(16), res.Notifications, "all in one round")
	// Each status until a batch deletes fewer than the size.
	require.Equal(t, []int64{3, 3, 3, 1, 3, 3, 0, 0, 0}, sizes)
	require.Equal(t, 2, f.count("notifications"))
}

func TestOneWorkerDeletesAtATime(t *testing.T) {
	f := setup(t)
	f.notes(notification.StatusDelivered, old, 7)
	f.notes(notification.StatusCancelled, old, 2)

	first := f.purger(Config{BatchSize: 2})
	held, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock) // a failing test still lets its transaction end
	first.inBatch = func(Result) {
		once.Do(func() {
			close(held) // inside its first batch, holding the lock
			<-release
		})
	}
	done := make(chan Result, 1)
	go func() {
		res, err := first.Round(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	<-held

	second := New(Config{Period: period, BatchSize: 2}, f.pool, f.deleted, zap.NewNop())
	res, err := second.Round(context.Background())
	require.NoError(t, err)
	require.Equal(t, Result{Skipped: true}, res, "the other round skips, deleting nothing")
	require.Zero(t, f.counted(TableNotifications))

	unblock()
	res = <-done
	require.Equal(t, Result{Notifications: 9}, res)
	require.Equal(t, 9, f.counted(TableNotifications))
	require.Zero(t, f.count("notifications"))
}

func TestConcurrentRoundsDeleteEachRowOnce(t *testing.T) {
	f := setup(t)
	f.notes(notification.StatusDelivered, old, 40)
	f.notes(notification.StatusFailed, old, 11)
	f.notes(notification.StatusCancelled, old, 5)

	const workers = 6
	results := make([]Result, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		p := New(Config{Period: period, BatchSize: 2}, f.pool, f.deleted, zap.NewNop())
		wg.Go(func() {
			<-start
			res, err := p.Round(context.Background())
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	close(start)
	wg.Wait()

	var total int64
	for _, r := range results {
		total += r.Notifications
	}
	if f.count("notifications") > 0 {
		// Every round that ran was handed over to another; what they left
		// goes next round.
		res := round(t, New(Config{Period: period, BatchSize: 2}, f.pool, f.deleted, zap.NewNop()))
		total += res.Notifications
	}
	require.Equal(t, int64(56), total, "each row deleted once")
	require.Equal(t, 56, f.counted(TableNotifications))
	require.Zero(t, f.count("notifications"))
}

func TestOneLogLinePerRoundThatDeleted(t *testing.T) {
	f := setup(t)
	f.notes(notification.StatusDelivered, old, 5)
	p := f.purger(Config{BatchSize: 2})

	round(t, p)
	lines := f.logs.FilterMessage("retention deleted old notifications").AllUntimed()
	require.Len(t, lines, 1, "one line for the round's three batches")
	fields := lines[0].ContextMap()
	require.Equal(t, int64(5), fields["notifications"])
	require.Contains(t, fields, "duration")

	round(t, p)
	require.Equal(t, 1, f.logs.Len(), "nothing deleted, nothing logged")
}

func TestRunDeletesEveryInterval(t *testing.T) {
	f := setup(t)
	p := f.purger(Config{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	f.notes(notification.StatusFailed, old, 3)
	require.Eventually(t, func() bool { return f.count("notifications") == 0 }, 10*time.Second, 10*time.Millisecond)
	f.notes(notification.StatusCancelled, old, 2)
	require.Eventually(t, func() bool { return f.count("notifications") == 0 }, 10*time.Second, 10*time.Millisecond)

	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 5, f.counted(TableNotifications))
}

func TestDisabledByDefault(t *testing.T) {
	f := setup(t)
	cfg, err := config.Parse(map[string]string{})
	require.NoError(t, err)
	require.Zero(t, cfg.RetentionPeriod)
	f.notes(notification.StatusDelivered, 10*365*24*time.Hour, 3)
	p := New(Config{Period: cfg.RetentionPeriod, BatchSize: cfg.RetentionBatchSize}, f.pool, f.deleted, zap.NewNop())
	require.False(t, p.Enabled())

	require.Equal(t, Result{}, round(t, p))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Run(ctx))
	require.NoError(t, ctx.Err(), "Run returned at once")

	require.Equal(t, 3, f.count("notifications"))
	families, err := gather(f.deleted)
	require.NoError(t, err)
	require.Zero(t, families, "no series while off")
}

func gather(c prometheus.Collector) (int, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return 0, err
	}
	families, err := reg.Gather()
	return len(families), err
}
