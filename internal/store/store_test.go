package store_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

var productTables = []string{"batches", "notifications", "delivery_attempts", "outbox"}

func newSMS() store.NewNotification {
	return store.NewNotification{
		ID:        uuid.Must(uuid.NewV7()),
		Channel:   notification.SMS,
		Priority:  notification.High,
		Recipient: "+14155550123",
		Content:   "hello",
	}
}

// existingTables returns which of names exist in the public schema of dsn.
func existingTables(t *testing.T, dsn string, names []string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, `
		SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name = ANY($1) ORDER BY table_name`, names)
	require.NoError(t, err)
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return found
}

func count(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func TestMigrationsUpDownUp(t *testing.T) {
	dsn := testenv.Database(t) // migrated up
	require.ElementsMatch(t, productTables, existingTables(t, dsn, productTables))

	require.NoError(t, store.MigrateDown(dsn, 0))
	require.Empty(t, existingTables(t, dsn, productTables), "down must drop every table")
	version, dirty, err := store.MigrationVersion(dsn)
	require.NoError(t, err)
	require.Zero(t, version)
	require.False(t, dirty)

	require.NoError(t, store.MigrateUp(dsn))
	require.ElementsMatch(t, productTables, existingTables(t, dsn, productTables))
	version, dirty, err = store.MigrationVersion(dsn)
	require.NoError(t, err)
	require.Equal(t, latestMigration(t), version)
	require.False(t, dirty)
}

func TestConcurrentMigrationsApplyOnce(t *testing.T) {
	ctx := context.Background()
	base := testenv.Shared(t).PostgresDSN
	name := testenv.Name("dispatch_test_")
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/" + name
	dsn := u.String()
	require.NoError(t, store.EnsureDatabase(ctx, dsn))
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	})
	require.Empty(t, existingTables(t, dsn, productTables), "the new database starts empty")

	const migrators = 4
	start := make(chan struct{})
	errs := make(chan error, migrators)
	for range migrators {
		go func() {
			<-start
			errs <- store.MigrateUp(dsn)
		}()
	}
	close(start)
	deadline := time.After(time.Minute)
	for i := range migrators {
		select {
		case err := <-errs:
			require.NoError(t, err, "migrator %d", i)
		case <-deadline:
			t.Fatalf("only %d of %d migrators finished within a minute", i, migrators)
		}
	}

	version, dirty, err := store.MigrationVersion(dsn)
	require.NoError(t, err)
	require.Equal(t, latestMigration(t), version)
	require.False(t, dirty)
	require.ElementsMatch(t, productTables, existingTables(t, dsn, productTables))
}

func TestCreateNotificationWritesOutboxRowInSameTransaction(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)

	n := newSMS()
	created, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)
	require.Equal(t, n.ID, created.ID)
	require.Equal(t, notification.StatusAccepted, created.Status)

	var (
		outboxID uuid.UUID
		channel  string
		priority string
	)
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM outbox`))
	require.NoError(t, pool.QueryRow(ctx, `SELECT notification_id, channel, priority FROM outbox`).Scan(&outboxID, &channel, &priority))
	require.Equal(t, n.ID, outboxID)
	require.Equal(t, string(notification.SMS), channel)
	require.Equal(t, string(notification.High), priority)

	// When the outbox insert fails, the notification must not be left behind.
	_, err = pool.Exec(ctx, `ALTER TABLE outbox ADD CONSTRAINT test_reject_push CHECK (channel <> 'push')`)
	require.NoError(t, err)
	push := store.NewNotification{ID: uuid.Must(uuid.NewV7()), Channel: notification.Push, Priority: notification.Low, Recipient: "device-token", Content: "hi"}
	_, err = store.CreateNotification(ctx, pool, push)
	require.Error(t, err)
	require.Zero(t, count(t, pool, `SELECT count(*) FROM notifications WHERE id = $1`, push.ID))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM notifications`))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM outbox`))
}

func TestCreateNotificationRejectsDuplicateIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	key := "order-42"

	first := newSMS()
	first.IdempotencyKey = &key
	_, err := store.CreateNotification(ctx, pool, first)
	require.NoError(t, err)

	second := newSMS()
	second.IdempotencyKey = &key
	_, err = store.CreateNotification(ctx, pool, second)
	require.ErrorIs(t, err, store.ErrConflict)

	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM notifications`))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM outbox`))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1`, first.ID))
}

func TestTerminalStatusNeverChanges(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	n := newSMS()
	_, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)

	_, refusal, err := store.BeginAttempt(ctx, pool, n.ID, 1, false)
	require.NoError(t, err)
	require.Equal(t, store.Allowed, refusal)
	code := 200
	require.NoError(t, store.FinishAttempt(ctx, pool,
		store.Attempt{NotificationID: n.ID, Attempt: 1, StartedAt: time.Now(), DurationMS: 5, StatusCode: &code, Outcome: "delivered"},
		store.Transition{Status: notification.StatusDelivered}))
	delivered, err := store.GetNotification(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusDelivered, delivered.Status)
	require.NotNil(t, delivered.DeliveredAt)

	got, refusal, err := store.BeginAttempt(ctx, pool, n.ID, 2, false)
	require.NoError(t, err)
	require.Equal(t, store.Terminal, refusal, "a terminal notification cannot begin an attempt")
	require.Equal(t, notification.StatusDelivered, got.Status)

	late := "provider timeout"
	retryAt := time.Now().Add(time.Minute)
	require.NoError(t, store.FinishAttempt(ctx, pool,
		store.Attempt{NotificationID: n.ID, Attempt: 2, StartedAt: time.Now(), DurationMS: 5, Outcome: "retryable", Error: &late},
		store.Transition{Status: notification.StatusRetrying, LastError: &late, NextAttemptAt: &retryAt}))
	failed, err := store.Fail(ctx, pool, n.ID, notification.DeadLetter{Reason: "expired", Source: notification.SourceWorkflow, LastError: "too late"})
	require.NoError(t, err)
	require.Equal(t, notification.StatusDelivered, failed.Status, "Fail reports the status that stands")
	require.Equal(t, 0, count(t, pool, `SELECT count(*) FROM outbox WHERE dead_letter IS NOT NULL`), "and dead-letters nothing")

	final, err := store.GetNotification(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusDelivered, final.Status)
	require.Equal(t, 1, final.Attempts)
	require.Nil(t, final.LastError)
	require.Nil(t, final.FailureReason)
	require.Nil(t, final.NextAttemptAt)
	require.Equal(t, delivered.DeliveredAt, final.DeliveredAt)
	require.Equal(t, delivered.UpdatedAt, final.UpdatedAt)

	// The late attempt is still recorded, as it happened.
	attempts, err := store.ListAttempts(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Len(t, attempts, 2)
}

func TestBeginAttemptMarksProcessing(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	n := newSMS()
	created, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)
	require.Zero(t, created.Attempts)

	got, refusal, err := store.BeginAttempt(ctx, pool, n.ID, 1, true)
	require.NoError(t, err)
	require.Equal(t, store.Allowed, refusal)
	require.Equal(t, notification.StatusProcessing, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.Nil(t, got.NextAttemptAt)

	status, err := store.GetStatus(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusProcessing, status)

	// Beginning the same attempt again (it could not be made, or the answer
	// to the first begin was lost) counts it once.
	again, refusal, err := store.BeginAttempt(ctx, pool, n.ID, 1, false)
	require.NoError(t, err)
	require.Equal(t, store.Allowed, refusal)
	require.Equal(t, 1, again.Attempts)

	// The fast path's attempt begins only a notification nothing began for:
	// a second one is a retried workflow task whose first try was lost.
	_, refusal, err = store.BeginAttempt(ctx, pool, n.ID, 1, true)
	require.NoError(t, err)
	require.Equal(t, store.Begun, refusal)

	// The next attempt counts on.
	next, refusal, err := store.BeginAttempt(ctx, pool, n.ID, 2, false)
	require.NoError(t, err)
	require.Equal(t, store.Allowed, refusal)
	require.Equal(t, 2, next.Attempts)
}

func TestFinishAttemptStoresTextATextColumnRefuses(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	n := newSMS()
	_, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)

	// A binary reply: NUL bytes and invalid UTF-8, which PostgreSQL's text
	// rejects ("invalid byte sequence for encoding UTF8: 0x00").
	reply := "ok\x00\x01\xff\xfe{\"id\":1}"
	errText := "network: \x00"
	code := 200
	require.NoError(t, store.FinishAttempt(ctx, pool,
		store.Attempt{NotificationID: n.ID, Attempt: 1, StartedAt: time.Now(), DurationMS: 5, StatusCode: &code,
			Outcome: "delivered", ResponseExcerpt: &reply, Error: &errText},
		store.Transition{Status: notification.StatusDelivered}))

	rows, err := store.ListAttempts(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, "ok\uFFFD\x01\uFFFD{\"id\":1}", *rows[0].ResponseExcerpt)
	require.Equal(t, "network: \uFFFD", *rows[0].Error)
}

func latestMigration(t *testing.T) uint {
	t.Helper()
	v, err := store.LatestMigration()
	require.NoError(t, err)
	require.Positive(t, v)
	return v
}

func TestFailRecordsTheGenerationTheRowHasAsItFails(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	first, retried := newSMS(), newSMS()
	for _, n := range []store.NewNotification{first, retried} {
		_, err := store.CreateNotification(ctx, pool, n)
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, `UPDATE notifications SET generation = 2 WHERE id = $1`, retried.ID)
	require.NoError(t, err)

	for id, want := range map[uuid.UUID]int{first.ID: 0, retried.ID: 2} {
		failed, err := store.Fail(ctx, pool, id, notification.DeadLetter{
			Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, Generation: 9, // not the caller's to say
		})
		require.NoError(t, err)
		require.Equal(t, notification.StatusFailed, failed.Status)
		require.Equal(t, want, failed.Generation)

		var (
			record  notification.DeadLetter
			written bool
		)
		require.NoError(t, pool.QueryRow(ctx, `SELECT dead_letter, dead_letter ? 'generation' FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, id).
			Scan(&record, &written))
		require.True(t, written, "generation 0 is written too")
		require.Equal(t, want, record.Generation)
		require.Equal(t, "exhausted", record.Reason)
		require.Equal(t, 3, record.Attempts)
	}
}
