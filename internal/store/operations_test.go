package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// opRow is a notification the operation tests insert directly, in any
// status and with any created_at.
type opRow struct {
	Status    notification.Status
	CreatedAt *time.Time // nil: the database's now()
	Channel   string     // default sms
	Recipient string     // default +14155550100
	Subject   *string
	BatchID   *uuid.UUID
	Attempts  int
	// Generation is the row's generation (explicit retries so far).
	Generation int
	// Erased marks the row erased already.
	Erased bool
	// CancelRequested sets cancel_requested_at.
	CancelRequested bool
	// NextAttemptAt sets next_attempt_at.
	NextAttemptAt *time.Time
	// DeadLetter adds a dead-letter outbox row, as Fail writes it.
	DeadLetter bool
	// Attempt adds a delivery attempt carrying an error, a response
	// excerpt and a receipt reason that name the recipient.
	Attempt bool
}

// opInsert inserts r with metadata, a request fingerprint, a last error and
// (FAILED) a failure reason, and returns its id. No outbox row is written
// unless r.DeadLetter: the rows are past the relay.
func opInsert(t *testing.T, pool *pgxpool.Pool, r opRow) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	if r.Channel == "" {
		r.Channel = string(notification.SMS)
	}
	if r.Recipient == "" {
		r.Recipient = "+14155550100"
	}
	var reason *string
	if r.Status == notification.StatusFailed {
		exhausted := "exhausted"
		reason = &exhausted
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO notifications (id, batch_id, channel, priority, recipient, subject, content, metadata,
			request_fingerprint, status, attempts, last_error, failure_reason, next_attempt_at, generation,
			created_at, updated_at, erased_at, cancel_requested_at)
		VALUES ($1, $2, $3, 'NORMAL', $4, $5, 'content for ' || $4, '{"who":"someone"}', 'sha256:abc', $6, $7,
			'provider said no to ' || $4, $8, $9, $10,
			COALESCE($11, now()), COALESCE($11, now()),
			CASE WHEN $12 THEN COALESCE($11, now()) END, CASE WHEN $13 THEN COALESCE($11, now()) END)`,
		id, r.BatchID, r.Channel, r.Recipient, r.Subject, r.Status, r.Attempts, reason, r.NextAttemptAt, r.Generation,
		r.CreatedAt, r.Erased, r.CancelRequested)
	require.NoError(t, err)
	if r.DeadLetter {
		_, err = pool.Exec(ctx, `INSERT INTO outbox (notification_id, channel, priority, dead_letter)
			VALUES ($1, $2, 'NORMAL', jsonb_build_object('reason', 'exhausted', 'generation', $3::int))`, id, r.Channel, r.Generation)
		require.NoError(t, err)
	}
	if r.Attempt {
		_, err = pool.Exec(ctx, `INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms, status_code,
				outcome, error, response_excerpt, receipt_reason)
			VALUES ($1, 1, now(), 12, 550, 'failed', 'mailbox of ' || $2 || ' is full', 'rejected ' || $2, 'bounced for ' || $2)`,
			id, r.Recipient)
		require.NoError(t, err)
	}
	return id
}

func opCount(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func opGet(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) store.Notification {
	t.Helper()
	n, err := store.GetNotification(context.Background(), pool, id)
	require.NoError(t, err)
	return n
}

func opLoad(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) store.Operation {
	t.Helper()
	op, err := store.GetOperation(context.Background(), pool, id)
	require.NoError(t, err)
	return op
}

// opState is every row the operations touch, as text: equal states mean
// nothing changed.
func opState(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT x FROM notifications x ORDER BY id`,
		`SELECT x FROM delivery_attempts x ORDER BY notification_id, attempt`,
		`SELECT x FROM outbox x ORDER BY id`,
		`SELECT x FROM dead_letter_retirements x ORDER BY notification_id, below_generation`,
		`SELECT x FROM notification_retries x ORDER BY idempotency_key`,
		`SELECT x FROM operations x ORDER BY id`,
	} {
		var s string
		require.NoError(t, pool.QueryRow(context.Background(),
			`SELECT COALESCE(json_agg(to_jsonb(x))::text, '[]') FROM (`+q+`) t(x)`).Scan(&s))
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

func opNewOperation(t *testing.T, pool *pgxpool.Pool, action string, f store.OperationFilter) store.Operation {
	t.Helper()
	op, replayed, err := store.CreateOperation(context.Background(), pool, store.NewOperation{
		ID: uuid.Must(uuid.NewV7()), Action: action, Filter: f, MaxPerSecond: 100,
	})
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, store.OperationRunning, op.Status)
	return op
}

// opRunAll runs pages of limit until the operation is done and returns
// every page's result, the last one (done) included.
func opRunAll(t *testing.T, pool *pgxpool.Pool, id uuid.UUID, limit int) []store.PageResult {
	t.Helper()
	var pages []store.PageResult
	for range 1000 {
		res, err := store.RunPage(context.Background(), pool, id, limit)
		require.NoError(t, err)
		pages = append(pages, res)
		if res.Done {
			return pages
		}
	}
	t.Fatal("the operation never finished")
	return nil
}

func opPtr[T any](v T) *T { return &v }

// opBase is a created_at an hour ago, on a whole second, in UTC, so the
// rows' times compare exactly after a round trip.
func opBase() time.Time { return time.Now().UTC().Truncate(time.Second).Add(-time.Hour) }

// -- RetryNotification ------------------------------------------------------

func TestRetryNotificationMovesAFailedOneIntoItsNextGeneration(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	n := newSMS()
	_, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM outbox`) // relayed
	require.NoError(t, err)
	failed, err := store.Fail(ctx, pool, n.ID, notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 3, LastError: "503"})
	require.NoError(t, err)
	require.Equal(t, notification.StatusFailed, failed.Status)
	other := opInsert(t, pool, opRow{Status: notification.StatusFailed, DeadLetter: true})
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, n.ID),
		"the dead-letter record is still waiting for the relay")

	got, replayed, err := store.RetryNotification(ctx, pool, n.ID, nil)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, notification.StatusAccepted, got.Status)
	require.Equal(t, 1, got.Generation)
	require.Equal(t, 3, got.AttemptBase, "the new generation's budget starts after the attempts made")
	require.Equal(t, 3, got.Attempts, "the attempts made still count")
	require.Nil(t, got.FailureReason)
	require.Nil(t, got.ErasedAt)
	require.Equal(t, got, opGet(t, pool, n.ID), "the answer is the stored row")

	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NULL`, n.ID),
		"one outbox row starts the new workflow run")
	require.Zero(t, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, n.ID),
		"its dead-letter record not yet relayed is dropped")
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, other),
		"another notification's dead-letter record stays")
	var (
		channel string
		below   int
	)
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements`))
	require.NoError(t, pool.QueryRow(ctx, `SELECT channel, below_generation FROM dead_letter_retirements WHERE notification_id = $1`, n.ID).
		Scan(&channel, &below))
	require.Equal(t, string(notification.SMS), channel)
	require.Equal(t, 1, below, "the messages of generation 0 are retired")

	// ACCEPTED again, it is in flight: a second retry is refused.
	_, _, err = store.RetryNotification(ctx, pool, n.ID, nil)
	var nr *store.NotRetryableError
	require.ErrorAs(t, err, &nr)
	require.Equal(t, notification.StatusAccepted, nr.Status)
	require.Equal(t, 1, opGet(t, pool, n.ID).Generation)
}

func TestRetryNotificationOfACancelledOneRetiresNothing(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	id := opInsert(t, pool, opRow{Status: notification.StatusCancelled, Attempts: 2, CancelRequested: true})

	got, replayed, err := store.RetryNotification(ctx, pool, id, nil)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, notification.StatusAccepted, got.Status)
	require.Equal(t, 1, got.Generation)
	require.Equal(t, 2, got.AttemptBase)
	require.Nil(t, got.CancelRequestedAt, "the new generation is not cancelled")
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NULL`, id))
	require.Zero(t, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements`), "a cancelled notification has no dead letters")
}

func TestRetryNotificationRefusesWhatIsNotFailedOrCancelled(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	for _, status := range []notification.Status{
		notification.StatusDelivered, notification.StatusProcessing, notification.StatusAccepted, notification.StatusQueued,
		notification.StatusScheduled, notification.StatusRetrying, notification.StatusSent,
	} {
		t.Run(string(status), func(t *testing.T) {
			id := opInsert(t, pool, opRow{Status: status})
			before := opState(t, pool)
			_, replayed, err := store.RetryNotification(ctx, pool, id, opPtr("key-"+string(status)))
			require.False(t, replayed)
			var nr *store.NotRetryableError
			require.ErrorAs(t, err, &nr)
			require.Equal(t, store.NotRetryableError{Status: status}, *nr)
			require.ErrorIs(t, err, store.ErrConflict)
			require.Contains(t, err.Error(), string(status))
			require.Equal(t, before, opState(t, pool), "nothing is written, the key is not taken")
		})
	}

	t.Run("erased", func(t *testing.T) {
		id := opInsert(t, pool, opRow{Status: notification.StatusFailed, Erased: true, DeadLetter: true})
		before := opState(t, pool)
		_, _, err := store.RetryNotification(ctx, pool, id, nil)
		var nr *store.NotRetryableError
		require.ErrorAs(t, err, &nr)
		require.True(t, nr.Erased)
		require.Equal(t, notification.StatusFailed, nr.Status)
		require.ErrorIs(t, err, store.ErrConflict)
		require.Equal(t, before, opState(t, pool))
	})

	t.Run("unknown", func(t *testing.T) {
		_, _, err := store.RetryNotification(ctx, pool, uuid.Must(uuid.NewV7()), nil)
		require.ErrorIs(t, err, store.ErrNotFound)
		_, _, err = store.RetryNotification(ctx, pool, uuid.Must(uuid.NewV7()), opPtr("fresh-key"))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Zero(t, opCount(t, pool, `SELECT count(*) FROM notification_retries`))
	})
}

func TestRetryNotificationWithAKeyIsAnsweredAgainAndRefusedForAnother(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	id := opInsert(t, pool, opRow{Status: notification.StatusFailed, Attempts: 4, DeadLetter: true})
	other := opInsert(t, pool, opRow{Status: notification.StatusFailed, DeadLetter: true})
	key := "retry-1"

	first, replayed, err := store.RetryNotification(ctx, pool, id, &key)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, 1, first.Generation)
	after := opState(t, pool)

	again, replayed, err := store.RetryNotification(ctx, pool, id, &key)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, first, again)
	require.Equal(t, after, opState(t, pool), "a replay writes nothing")

	// It failed again meanwhile: the key still answers its own retry, the
	// notification as it is now, and does not retry it a second time.
	_, err = store.Fail(ctx, pool, id, notification.DeadLetter{Reason: "exhausted", Source: notification.SourceWorkflow, Attempts: 8})
	require.NoError(t, err)
	after = opState(t, pool)
	again, replayed, err = store.RetryNotification(ctx, pool, id, &key)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, notification.StatusFailed, again.Status)
	require.Equal(t, 1, again.Generation)
	require.Equal(t, after, opState(t, pool))

	// The key is another notification's retry.
	_, replayed, err = store.RetryNotification(ctx, pool, other, &key)
	require.False(t, replayed)
	require.ErrorIs(t, err, store.ErrConflict)
	var nr *store.NotRetryableError
	require.False(t, errors.As(err, &nr), "a reused key is not a not-retryable notification: %v", err)
	require.Equal(t, after, opState(t, pool))
	require.Equal(t, 0, opGet(t, pool, other).Generation)

	// A new key retries it into its next generation.
	next, replayed, err := store.RetryNotification(ctx, pool, id, opPtr("retry-2"))
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, 2, next.Generation)
	require.Equal(t, 8, next.AttemptBase)
	require.Equal(t, 2, opCount(t, pool, `SELECT count(*) FROM notification_retries WHERE notification_id = $1`, id))
	require.Equal(t, 2, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements WHERE notification_id = $1`, id))
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements WHERE notification_id = $1 AND below_generation = 2`, id))
}

func TestEightSimultaneousRetriesWithOneKeyRetryOnce(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	id := opInsert(t, pool, opRow{Status: notification.StatusFailed, Attempts: 5, DeadLetter: true})
	const callers = 8
	type result struct {
		n        store.Notification
		replayed bool
		err      error
	}
	results := make([]result, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			var r result
			r.n, r.replayed, r.err = store.RetryNotification(ctx, pool, id, opPtr("race-key"))
			results[i] = r
		})
	}
	close(start)
	wg.Wait()

	retried := 0
	for i, r := range results {
		require.NoError(t, r.err, "caller %d", i)
		require.Equal(t, 1, r.n.Generation, "caller %d", i)
		require.Equal(t, id, r.n.ID)
		if !r.replayed {
			retried++
		}
	}
	require.Equal(t, 1, retried, "exactly one caller retried, the others were answered its retry")
	n := opGet(t, pool, id)
	require.Equal(t, 1, n.Generation)
	require.Equal(t, 5, n.AttemptBase)
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1`, id))
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements`))
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM notification_retries`))
}

// -- CreateOperation and the operation rows ---------------------------------

func TestCreateOperationCountsTheMatchesAndHonoursItsKey(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	for range 3 {
		opInsert(t, pool, opRow{Status: notification.StatusFailed})
	}
	opInsert(t, pool, opRow{Status: notification.StatusDelivered})
	opInsert(t, pool, opRow{Status: notification.StatusFailed, Channel: string(notification.Email), Recipient: "a@example.com"})
	failedSMS := store.OperationFilter{Status: opPtr(notification.StatusFailed), Channel: opPtr(string(notification.SMS))}

	n, err := store.CountMatching(ctx, pool, failedSMS)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)

	key, fp := "op-key", "sha256:one"
	no := store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionRetry, Filter: failedSMS, MaxPerSecond: 50,
		IdempotencyKey: &key, RequestFingerprint: &fp}
	op, replayed, err := store.CreateOperation(ctx, pool, no)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, no.ID, op.ID)
	require.EqualValues(t, 3, op.Matched, "matched is the count at creation")
	require.Equal(t, store.OperationRunning, op.Status)
	got := op.Filter
	got.Tenant = nil
	require.Equal(t, failedSMS, got)
	require.Equal(t, store.DefaultTenantID, op.TenantID, "an operation made without a tenant is the default tenant's")
	require.Equal(t, &op.TenantID, op.Filter.Tenant, "its filter reads its own tenant's notifications only")
	require.Equal(t, 50, op.MaxPerSecond)
	require.Zero(t, op.Processed)
	require.Empty(t, op.Skipped)
	require.Nil(t, op.CursorID)
	require.Nil(t, op.FinishedAt)
	require.Equal(t, op, opLoad(t, pool, op.ID))

	// More matches later do not change it.
	opInsert(t, pool, opRow{Status: notification.StatusFailed})
	require.EqualValues(t, 3, opLoad(t, pool, op.ID).Matched)

	again, replayed, err := store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionRetry,
		Filter: failedSMS, MaxPerSecond: 50, IdempotencyKey: &key, RequestFingerprint: &fp})
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, op.ID, again.ID)

	for name, fp := range map[string]*string{"another fingerprint": opPtr("sha256:two"), "no fingerprint": nil} {
		_, replayed, err = store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionCancel,
			Filter: failedSMS, MaxPerSecond: 50, IdempotencyKey: &key, RequestFingerprint: fp})
		require.ErrorIs(t, err, store.ErrConflict, name)
		require.False(t, replayed)
	}
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM operations`))

	_, err = store.GetOperation(ctx, pool, uuid.Must(uuid.NewV7()))
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = store.RunPage(ctx, pool, uuid.Must(uuid.NewV7()), 10)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = store.RequestOperationCancel(ctx, pool, uuid.Must(uuid.NewV7()))
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestOperationsListNewestFirstAndStaleOnesAreFound(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	f := store.OperationFilter{Status: opPtr(notification.StatusFailed)}
	var ids []uuid.UUID
	for range 5 {
		ids = append(ids, opNewOperation(t, pool, store.ActionRetry, f).ID)
	}
	var seen []uuid.UUID
	var after *store.Keyset
	for range 10 {
		page, err := store.ListOperations(ctx, pool, uuid.Nil, after, 2)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, op := range page {
			seen = append(seen, op.ID)
		}
		last := page[len(page)-1]
		after = &store.Keyset{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	require.Equal(t, []uuid.UUID{ids[4], ids[3], ids[2], ids[1], ids[0]}, seen)

	// ids[0] went idle; ids[1] too, but it is finished.
	_, err := pool.Exec(ctx, `UPDATE operations SET updated_at = now() - interval '10 minutes' WHERE id = ANY($1)`, ids[:2])
	require.NoError(t, err)
	require.NoError(t, store.FailOperation(ctx, pool, ids[1], "could not start: \x00 temporal down"))
	stale, err := store.StaleOperations(ctx, pool, time.Minute)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{ids[0]}, stale)

	failed := opLoad(t, pool, ids[1])
	require.Equal(t, store.OperationFailed, failed.Status)
	require.NotNil(t, failed.Error)
	require.Equal(t, "could not start: \uFFFD temporal down", *failed.Error)
	require.NotNil(t, failed.FinishedAt)
	// A finished operation is failed no more.
	require.NoError(t, store.FailOperation(ctx, pool, ids[1], "again"))
	require.Equal(t, failed, opLoad(t, pool, ids[1]))
}

// -- RunPage: retry ---------------------------------------------------------

type opSeed struct {
	id        uuid.UUID
	status    notification.Status
	createdAt time.Time
	attempts  int
	erased    bool
}

func TestRunPageRetriesFailedAndCancelledNewestFirstAndAccountsForEveryMatch(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	cycle := []notification.Status{notification.StatusFailed, notification.StatusCancelled, notification.StatusDelivered,
		notification.StatusProcessing, notification.StatusRetrying}
	rows := make([]opSeed, 25)
	for i := range rows {
		r := opRow{Status: cycle[i%len(cycle)], CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second)), Attempts: i % 4,
			Erased: i == 0}
		r.DeadLetter = r.Status == notification.StatusFailed
		r.CancelRequested = r.Status == notification.StatusCancelled
		rows[i] = opSeed{id: opInsert(t, pool, r), status: r.Status, createdAt: *r.CreatedAt, attempts: r.Attempts, erased: r.Erased}
	}
	// Another channel: outside the filter.
	outside := opInsert(t, pool, opRow{Status: notification.StatusFailed, Channel: string(notification.Push), Recipient: "device-1",
		CreatedAt: opPtr(base.Add(30 * time.Second))})

	op := opNewOperation(t, pool, store.ActionRetry, store.OperationFilter{Channel: opPtr(string(notification.SMS)), CreatedFrom: &base})
	require.EqualValues(t, 25, op.Matched)
	// Created after the operation: it matches the filter, but is not the
	// operation's to touch.
	late := opInsert(t, pool, opRow{Status: notification.StatusFailed, DeadLetter: true})

	retryable := func(s opSeed) bool {
		return !s.erased && (s.status == notification.StatusFailed || s.status == notification.StatusCancelled)
	}
	// pending is what still matches, newest first: the model of the pages.
	var pending []int
	for i := len(rows) - 1; i >= 0; i-- {
		pending = append(pending, i)
	}
	const leaves = 7 // DELIVERED; leaves the filter after the first page
	require.Equal(t, notification.StatusDelivered, rows[leaves].status)

	wantSkipped := map[string]int64{}
	var wantProcessed, wantSucceeded int64
	for page := 1; len(pending) > 0; page++ {
		n := min(10, len(pending))
		visit := pending[:n]
		succeeded := 0
		for _, i := range visit {
			switch r := rows[i]; {
			case r.erased:
				wantSkipped["erased"]++
			case retryable(r):
				succeeded++
			case r.status == notification.StatusDelivered:
				wantSkipped["delivered"]++
			default:
				wantSkipped["in-flight"]++
			}
		}
		res, err := store.RunPage(ctx, pool, op.ID, 10)
		require.NoError(t, err)
		require.False(t, res.Done, "page %d", page)
		require.Equal(t, n, res.Items, "page %d", page)
		require.Equal(t, succeeded, res.Succeeded, "page %d", page)
		require.Empty(t, res.Signal)
		require.Empty(t, res.Cancelled)
		wantProcessed += int64(n)
		wantSucceeded += int64(succeeded)

		got := opLoad(t, pool, op.ID)
		last := rows[visit[n-1]]
		require.Equal(t, store.OperationRunning, got.Status)
		require.NotNil(t, got.CursorCreatedAt)
		require.True(t, last.createdAt.Equal(*got.CursorCreatedAt), "page %d: the cursor is the page's oldest row", page)
		require.Equal(t, last.id, *got.CursorID)
		require.Equal(t, wantProcessed, got.Processed)
		require.Equal(t, wantSucceeded, got.Succeeded)
		require.Equal(t, wantSkipped, got.Skipped)

		// The page's rows are done and the older ones not yet.
		visited := map[int]bool{}
		for _, i := range pending[:n] {
			visited[i] = true
		}
		pending = pending[n:]
		for _, i := range pending {
			later := opGet(t, pool, rows[i].id)
			require.Equal(t, rows[i].status, later.Status, "page %d: row %d is not reached yet", page, i)
			require.Zero(t, later.Generation)
		}
		for i := range visited {
			if retryable(rows[i]) {
				require.Equal(t, notification.StatusAccepted, opGet(t, pool, rows[i].id).Status, "page %d: row %d", page, i)
			}
		}

		if page == 1 {
			_, err := pool.Exec(ctx, `UPDATE notifications SET channel = 'email' WHERE id = $1`, rows[leaves].id)
			require.NoError(t, err)
			pending = opWithout(pending, leaves)
		}
	}
	res, err := store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCompleted}, res)

	wantSkipped[store.SkipNoLongerMatching] = 1
	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 25, final.Matched)
	require.Equal(t, final.Matched, final.Processed, "a completed operation processed what it matched")
	require.EqualValues(t, 9, final.Succeeded, "4 FAILED (one more is erased) and 5 CANCELLED")
	require.Equal(t, map[string]int64{"erased": 1, "delivered": 4, "in-flight": 10, store.SkipNoLongerMatching: 1}, final.Skipped)
	require.Equal(t, wantSkipped, final.Skipped)
	require.NotNil(t, final.FinishedAt)
	require.Equal(t, op.Filter, final.Filter)

	for i, r := range rows {
		n := opGet(t, pool, r.id)
		if !retryable(r) {
			require.Equal(t, r.status, n.Status, "row %d is left alone", i)
			require.Zero(t, n.Generation, "row %d", i)
			continue
		}
		require.Equal(t, notification.StatusAccepted, n.Status, "row %d", i)
		require.Equal(t, 1, n.Generation, "row %d", i)
		require.Equal(t, r.attempts, n.AttemptBase, "row %d", i)
		require.Nil(t, n.FailureReason, "row %d", i)
		require.Nil(t, n.CancelRequestedAt, "row %d", i)
		require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NULL`, r.id), "row %d", i)
		require.Zero(t, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, r.id), "row %d", i)
		wantRetired := 0
		if r.status == notification.StatusFailed {
			wantRetired = 1
		}
		require.Equal(t, wantRetired, opCount(t, pool,
			`SELECT count(*) FROM dead_letter_retirements WHERE notification_id = $1 AND below_generation = 1 AND channel = 'sms'`, r.id), "row %d", i)
	}
	require.Equal(t, 4, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements`))
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, rows[0].id),
		"the erased row keeps what it had")
	for _, id := range []uuid.UUID{late, outside} {
		n := opGet(t, pool, id)
		require.Equal(t, notification.StatusFailed, n.Status)
		require.Zero(t, n.Generation)
	}

	// A finished operation's page does nothing.
	before := opState(t, pool)
	res, err = store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCompleted}, res)
	require.Equal(t, before, opState(t, pool))
}

func opWithout(s []int, v int) []int {
	out := s[:0:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// -- RunPage: cancel --------------------------------------------------------

func TestRunPageCancelsWhatIsNotTerminal(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	batch := uuid.Must(uuid.NewV7())
	_, err := pool.Exec(ctx, `INSERT INTO batches (id, total) VALUES ($1, 27)`, batch)
	require.NoError(t, err)
	next := base.Add(2 * time.Hour)
	rows := make([]opSeed, 27)
	for i := range rows {
		st := notification.Statuses[i%len(notification.Statuses)]
		r := opRow{Status: st, BatchID: &batch, CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second))}
		if !st.Terminal() {
			r.NextAttemptAt = &next
		}
		rows[i] = opSeed{id: opInsert(t, pool, r), status: st, createdAt: *r.CreatedAt}
	}
	require.Len(t, notification.Statuses, 10)
	outside := opInsert(t, pool, opRow{Status: notification.StatusQueued, CreatedAt: &base})
	updatedAt := map[uuid.UUID]time.Time{}
	for _, r := range rows {
		updatedAt[r.id] = opGet(t, pool, r.id).UpdatedAt
	}

	op := opNewOperation(t, pool, store.ActionCancel, store.OperationFilter{BatchID: &batch})
	require.EqualValues(t, 27, op.Matched)
	pages := opRunAll(t, pool, op.ID, 10)
	require.Len(t, pages, 4, "27 rows: three pages, then the end")
	var signal []uuid.UUID
	var cancelled []store.PageItem
	for _, p := range pages[:3] {
		signal = append(signal, p.Signal...)
		cancelled = append(cancelled, p.Cancelled...)
	}
	require.Equal(t, []int{10, 10, 7}, []int{pages[0].Items, pages[1].Items, pages[2].Items})

	var wantSignal []uuid.UUID
	var wantCancelled []store.PageItem
	for i, r := range rows {
		n := opGet(t, pool, r.id)
		switch r.status {
		case notification.StatusAccepted, notification.StatusQueued, notification.StatusScheduled:
			require.Equal(t, notification.StatusCancelled, n.Status, "row %d (%s) is cancelled at once", i, r.status)
			require.NotNil(t, n.CancelRequestedAt, "row %d", i)
			require.Nil(t, n.NextAttemptAt, "row %d", i)
			wantCancelled = append(wantCancelled, store.PageItem{ID: r.id, Channel: notification.SMS, Priority: "NORMAL", Status: r.status})
			if r.status == notification.StatusScheduled {
				wantSignal = append(wantSignal, r.id) // its workflow waits for the scheduled time
			}
		case notification.StatusProcessing, notification.StatusRetrying, notification.StatusSent:
			require.Equal(t, r.status, n.Status, "row %d (%s): its workflow ends it", i, r.status)
			require.NotNil(t, n.CancelRequestedAt, "row %d: the flag alone stops it", i)
			require.NotNil(t, n.NextAttemptAt, "row %d", i)
			wantSignal = append(wantSignal, r.id)
		default:
			require.Equal(t, r.status, n.Status, "row %d", i)
			require.Nil(t, n.CancelRequestedAt, "row %d: a terminal row is left as it is", i)
			require.True(t, updatedAt[r.id].Equal(n.UpdatedAt), "row %d is not written", i)
		}
	}
	require.ElementsMatch(t, wantSignal, signal)
	require.ElementsMatch(t, wantCancelled, cancelled)
	require.Equal(t, notification.StatusQueued, opGet(t, pool, outside).Status)
	require.Nil(t, opGet(t, pool, outside).CancelRequestedAt)

	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 27, final.Processed)
	require.EqualValues(t, 18, final.Succeeded)
	require.Equal(t, map[string]int64{"delivered": 3, "failed": 2, "cancelled": 2, "skipped": 2}, final.Skipped)
}

// -- RunPage: erase ---------------------------------------------------------

func TestRunPageErasesAPersonsNotificationsAndForgetsTheRecipient(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	const person, someoneElse = "ann@example.com", "bob@example.com"
	cycle := []notification.Status{notification.StatusFailed, notification.StatusDelivered, notification.StatusProcessing,
		notification.StatusAccepted, notification.StatusRetrying, notification.StatusCancelled}
	type seeded struct {
		opSeed
		subject    bool
		generation int
	}
	var rows []seeded
	for i := range 12 {
		r := opRow{Status: cycle[i%len(cycle)], Channel: string(notification.Email), Recipient: person, Subject: opPtr("about you"),
			CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second)), Attempt: true, Generation: i / 6}
		if i == 5 { // a channel without subject
			r.Channel, r.Subject = string(notification.SMS), nil
		}
		r.DeadLetter = r.Status == notification.StatusFailed
		rows = append(rows, seeded{opSeed{id: opInsert(t, pool, r), status: r.Status, createdAt: *r.CreatedAt}, r.Subject != nil, r.Generation})
	}
	var others []uuid.UUID
	for i := range 5 {
		others = append(others, opInsert(t, pool, opRow{Status: cycle[i], Channel: string(notification.Email), Recipient: someoneElse,
			Subject: opPtr("about bob"), CreatedAt: opPtr(base.Add(time.Duration(20+i) * time.Second)), Attempt: true,
			DeadLetter: cycle[i] == notification.StatusFailed}))
	}
	othersBefore := map[uuid.UUID]store.Notification{}
	for _, id := range others {
		othersBefore[id] = opGet(t, pool, id)
	}

	op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
	require.EqualValues(t, 12, op.Matched)
	first, err := store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, 10, first.Items)
	require.Equal(t, 10, first.Succeeded)
	require.Equal(t, person, *opLoad(t, pool, op.ID).Filter.Recipient, "the running operation still needs the recipient")
	pages := append([]store.PageResult{first}, opRunAll(t, pool, op.ID, 10)...)
	require.Len(t, pages, 3)
	var signal []uuid.UUID
	var cancelled []uuid.UUID
	for _, p := range pages {
		signal = append(signal, p.Signal...)
		for _, it := range p.Cancelled {
			cancelled = append(cancelled, it.ID)
		}
	}

	var wantSignal, wantCancelled []uuid.UUID
	for i, r := range rows {
		n := opGet(t, pool, r.id)
		require.Equal(t, store.Erased, n.Recipient, "row %d", i)
		require.Equal(t, store.Erased, n.Content, "row %d", i)
		if r.subject {
			require.Equal(t, store.Erased, *n.Subject, "row %d", i)
		} else {
			require.Nil(t, n.Subject, "row %d: no subject stays none", i)
		}
		require.Nil(t, n.Metadata, "row %d", i)
		require.Nil(t, n.RequestFingerprint, "row %d", i)
		require.Nil(t, n.LastError, "row %d", i)
		require.NotNil(t, n.ErasedAt, "row %d", i)
		attempts, err := store.ListAttempts(ctx, pool, r.id)
		require.NoError(t, err)
		require.Len(t, attempts, 1)
		require.Nil(t, attempts[0].Error, "row %d", i)
		require.Nil(t, attempts[0].ResponseExcerpt, "row %d", i)
		require.Nil(t, attempts[0].ReceiptReason, "row %d", i)
		require.Equal(t, "failed", attempts[0].Outcome, "the attempt itself stays")
		require.Zero(t, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, r.id))

		switch r.status {
		case notification.StatusAccepted:
			require.Equal(t, notification.StatusCancelled, n.Status, "row %d: in flight, cancelled first", i)
			require.NotNil(t, n.CancelRequestedAt)
			wantCancelled = append(wantCancelled, r.id)
		case notification.StatusProcessing, notification.StatusRetrying:
			require.Equal(t, r.status, n.Status, "row %d", i)
			require.NotNil(t, n.CancelRequestedAt, "row %d: in flight, cancelled first", i)
			wantSignal = append(wantSignal, r.id)
		default:
			require.Equal(t, r.status, n.Status, "row %d", i)
			require.Nil(t, n.CancelRequestedAt, "row %d", i)
		}
		retired := opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements WHERE notification_id = $1`, r.id)
		if r.status == notification.StatusFailed {
			require.Equal(t, 1, retired, "row %d: its dead letters leave the DLQ", i)
			require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements WHERE notification_id = $1 AND below_generation = $2`,
				r.id, r.generation+1), "row %d: every generation so far", i)
		} else {
			require.Zero(t, retired, "row %d", i)
		}
	}
	require.ElementsMatch(t, wantSignal, signal)
	require.ElementsMatch(t, wantCancelled, cancelled)
	for _, id := range others {
		require.Equal(t, othersBefore[id], opGet(t, pool, id), "another person's notification is untouched")
		attempts, err := store.ListAttempts(ctx, pool, id)
		require.NoError(t, err)
		require.Contains(t, *attempts[0].Error, someoneElse)
	}

	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 12, final.Processed)
	require.EqualValues(t, 12, final.Succeeded)
	require.Empty(t, final.Skipped)
	require.Equal(t, store.Erased, *final.Filter.Recipient, "the finished operation forgets whom it erased")
	var raw string
	require.NoError(t, pool.QueryRow(ctx, `SELECT filter::text FROM operations WHERE id = $1`, op.ID).Scan(&raw))
	require.NotContains(t, raw, person)

	// Erasing everything since base: the erased ones are skipped, the rest erased.
	erasedAt := map[uuid.UUID]time.Time{}
	for _, r := range rows {
		erasedAt[r.id] = *opGet(t, pool, r.id).ErasedAt
	}
	all := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{CreatedFrom: &base})
	require.EqualValues(t, 17, all.Matched)
	opRunAll(t, pool, all.ID, 10)
	final = opLoad(t, pool, all.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 17, final.Processed)
	require.EqualValues(t, 5, final.Succeeded)
	require.Equal(t, map[string]int64{"already-erased": 12}, final.Skipped)
	require.Nil(t, final.Filter.Recipient)
	for _, r := range rows {
		require.True(t, erasedAt[r.id].Equal(*opGet(t, pool, r.id).ErasedAt), "erased once")
	}
	for _, id := range others {
		n := opGet(t, pool, id)
		require.Equal(t, store.Erased, n.Recipient)
		require.NotNil(t, n.ErasedAt)
	}
	require.Zero(t, opCount(t, pool, `SELECT count(*) FROM notifications WHERE recipient <> $1 OR content <> $1`, store.Erased))
	require.Zero(t, opCount(t, pool, `SELECT count(*) FROM delivery_attempts WHERE error IS NOT NULL OR response_excerpt IS NOT NULL OR receipt_reason IS NOT NULL`))
}

// TestEraseLeavesNoKeyOrMessageIDThatNamesThePerson erases a person whose
// idempotency keys (a notification's, a batch item's, a batch's, a
// retry's, operations') and provider message ids carry her address, then
// searches every table for it.
func TestEraseLeavesNoKeyOrMessageIDThatNamesThePerson(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	const person, other = "Ann.Keys@example.com", "bob.keys@example.com"
	email := func(to string, key *string) store.NewNotification {
		return store.NewNotification{ID: uuid.Must(uuid.NewV7()), Channel: notification.Email, Priority: notification.Normal,
			Recipient: to, Subject: opPtr("hi"), Content: "hello", IdempotencyKey: key}
	}
	welcome, err := store.CreateNotification(ctx, pool, email(person, opPtr("welcome-"+person)))
	require.NoError(t, err)
	bobs, err := store.CreateNotification(ctx, pool, email(other, opPtr("welcome-"+other)))
	require.NoError(t, err)
	// A batch whose key names her (an item's too), and one whose key names
	// no one, each with her and Bob.
	_, _, _, err = store.CreateBatch(ctx, pool, store.NewBatch{ID: uuid.Must(uuid.NewV7()), IdempotencyKey: opPtr("batch-" + strings.ToLower(person)),
		Notifications: []store.NewNotification{email(person, opPtr("item-"+person)), email(other, nil)}})
	require.NoError(t, err)
	_, _, _, err = store.CreateBatch(ctx, pool, store.NewBatch{ID: uuid.Must(uuid.NewV7()), IdempotencyKey: opPtr("newsletter-42"),
		Notifications: []store.NewNotification{email(person, nil), email(other, nil)}})
	require.NoError(t, err)
	// A failed one, its attempt's provider message id naming her, retried
	// with a key naming her.
	failed := opInsert(t, pool, opRow{Status: notification.StatusFailed, Channel: string(notification.Email), Recipient: person,
		Subject: opPtr("hi"), DeadLetter: true})
	_, err = pool.Exec(ctx, `INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms, status_code,
			outcome, provider, provider_message_id)
		VALUES ($1, 1, now(), 10, 250, 'sent', 'mail', '<1.' || $2 || '>')`, failed, person)
	require.NoError(t, err)
	_, _, err = store.RetryNotification(ctx, pool, failed, opPtr("retry-"+person))
	require.NoError(t, err)
	// Operations naming her: a cancel by her address (not run yet) with a
	// key naming her, and the erasure's own key.
	cancel, _, err := store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionCancel,
		Filter: store.OperationFilter{Recipient: opPtr(person)}, MaxPerSecond: 100, IdempotencyKey: opPtr("cancel-" + person),
		RequestFingerprint: opPtr("sha256:of-a-request-naming-her")})
	require.NoError(t, err)
	// A throttle slot her welcome took.
	ok, _, err := store.TakeThrottleSlot(ctx, pool, store.DefaultTenantID, "news", store.RecipientKey(welcome), welcome.ID,
		pacing.Throttle{Limit: 1, Per: pacing.Duration(time.Hour)})
	require.NoError(t, err)
	require.True(t, ok)
	erase, _, err := store.CreateOperation(ctx, pool, store.NewOperation{ID: uuid.Must(uuid.NewV7()), Action: store.ActionErase,
		Filter: store.OperationFilter{Recipient: opPtr(person)}, MaxPerSecond: 100, IdempotencyKey: opPtr("erase-" + person)})
	require.NoError(t, err)
	require.EqualValues(t, 4, erase.Matched)
	opRunAll(t, pool, erase.ID, 2)
	require.Equal(t, store.OperationCompleted, opLoad(t, pool, erase.ID).Status)

	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, tables, "notification_retries")
	find := func(who string) []string {
		var found []string
		for _, table := range tables {
			rows, err := pool.Query(ctx, `SELECT x::text FROM `+table+` x WHERE strpos(lower(x::text), lower($1)) > 0`, who)
			require.NoError(t, err)
			for rows.Next() {
				var row string
				require.NoError(t, rows.Scan(&row))
				found = append(found, table+": "+row)
			}
			require.NoError(t, rows.Err())
		}
		return found
	}
	require.Empty(t, find(person), "nothing names her")
	require.Zero(t, opCount(t, pool, `SELECT count(*) FROM throttle_slots WHERE notification_id = $1`, welcome.ID),
		"her throttle slot went with her notification")
	require.Nil(t, opLoad(t, pool, cancel.ID).RequestFingerprint, "nor a hash of a request naming her")
	require.NotEmpty(t, find(other), "Bob's rows are searched too, and kept")
	require.Equal(t, "welcome-"+other, *opGet(t, pool, bobs.ID).IdempotencyKey, "a key of someone else's stays")
	require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM batches WHERE idempotency_key = 'newsletter-42'`),
		"a batch's key naming no one stays")

	// Her keys are forgotten: the same key again is a new request, and her
	// erased notification is not retried again.
	again, err := store.CreateNotification(ctx, pool, email(person, opPtr("welcome-"+person)))
	require.NoError(t, err)
	require.NotEqual(t, welcome.ID, again.ID)
	_, _, err = store.RetryNotification(ctx, pool, failed, opPtr("retry-"+person))
	var notRetryable *store.NotRetryableError
	require.ErrorAs(t, err, &notRetryable)
	require.True(t, notRetryable.Erased)
}

// -- RunPage: crash safety and cancellation ---------------------------------

func TestRunPageByWorkersAtOnceDoesEachItemOnce(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	var rows []uuid.UUID
	for i := range 25 {
		rows = append(rows, opInsert(t, pool, opRow{Status: notification.StatusFailed, CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second)),
			DeadLetter: true}))
	}
	op := opNewOperation(t, pool, store.ActionRetry, store.OperationFilter{Status: opPtr(notification.StatusFailed)})

	// Two runs of the workflow (a resumed one beside the first, say), each
	// with two activities: the operation's lock serialises their pages.
	const workers = 4
	items := make([]int, workers)
	errs := make([]error, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for range 100 {
				res, err := store.RunPage(ctx, pool, op.ID, 3)
				if err != nil {
					errs[w] = err
					return
				}
				if res.Done {
					return
				}
				items[w] += res.Items
			}
			errs[w] = errors.New("never done")
		})
	}
	close(start)
	wg.Wait()
	total := 0
	for w := range workers {
		require.NoError(t, errs[w], "worker %d", w)
		total += items[w]
	}
	require.Equal(t, 25, total, "the workers' pages visited every item once between them")
	for i, id := range rows {
		n := opGet(t, pool, id)
		require.Equal(t, 1, n.Generation, "row %d", i)
		require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1`, id), "row %d", i)
	}
	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 25, final.Processed)
	require.EqualValues(t, 25, final.Succeeded)
	require.Empty(t, final.Skipped)
}

func TestRunPageRolledBackChangesNothingAndResumingDoesEachItemOnce(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	var rows []opSeed
	for i := range 25 {
		st := notification.StatusFailed
		if i%2 == 1 {
			st = notification.StatusCancelled
		}
		r := opRow{Status: st, CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second)), Attempts: 1, DeadLetter: st == notification.StatusFailed}
		rows = append(rows, opSeed{id: opInsert(t, pool, r), status: st, createdAt: *r.CreatedAt})
	}
	op := opNewOperation(t, pool, store.ActionRetry, store.OperationFilter{CreatedFrom: &base})

	// crashed runs a page in a transaction that never commits: a worker
	// that died before the page's commit.
	crashed := func() {
		t.Helper()
		before := opState(t, pool)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		res, err := store.RunPage(ctx, tx, op.ID, 10)
		require.NoError(t, err)
		require.Equal(t, 10, res.Items, "the page did its work inside the transaction")
		var inside int
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM notifications WHERE generation = 1`).Scan(&inside))
		require.Positive(t, inside)
		require.NoError(t, tx.Rollback(ctx))
		require.Equal(t, before, opState(t, pool), "a page rolled back leaves no change")
	}

	crashed()
	require.Zero(t, opLoad(t, pool, op.ID).Processed)
	res, err := store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, 10, res.Succeeded)
	crashed()
	crashed()
	opRunAll(t, pool, op.ID, 10)

	for i, r := range rows {
		n := opGet(t, pool, r.id)
		require.Equal(t, notification.StatusAccepted, n.Status, "row %d", i)
		require.Equal(t, 1, n.Generation, "row %d is retried exactly once", i)
		require.Equal(t, 1, opCount(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1`, r.id), "row %d", i)
	}
	require.Equal(t, 13, opCount(t, pool, `SELECT count(*) FROM dead_letter_retirements`))
	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCompleted, final.Status)
	require.EqualValues(t, 25, final.Matched)
	require.EqualValues(t, 25, final.Processed)
	require.EqualValues(t, 25, final.Succeeded)
	require.Empty(t, final.Skipped)
}

func TestRunPageAfterACancelRequestEndsTheOperationCancelled(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	base := opBase()
	for i := range 25 {
		opInsert(t, pool, opRow{Status: notification.StatusFailed, CreatedAt: opPtr(base.Add(time.Duration(i) * time.Second))})
	}
	op := opNewOperation(t, pool, store.ActionRetry, store.OperationFilter{Status: opPtr(notification.StatusFailed)})
	_, err := store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)

	got, requested, err := store.RequestOperationCancel(ctx, pool, op.ID)
	require.NoError(t, err)
	require.True(t, requested)
	require.Equal(t, store.OperationRunning, got.Status, "it stops at its next page")
	require.NotNil(t, got.CancelRequestedAt)
	again, requested, err := store.RequestOperationCancel(ctx, pool, op.ID)
	require.NoError(t, err)
	require.True(t, requested)
	require.True(t, got.CancelRequestedAt.Equal(*again.CancelRequestedAt), "the first request's time stays")

	res, err := store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCancelled}, res)
	final := opLoad(t, pool, op.ID)
	require.Equal(t, store.OperationCancelled, final.Status)
	require.NotNil(t, final.FinishedAt)
	require.EqualValues(t, 25, final.Matched)
	require.EqualValues(t, 10, final.Processed, "what it did stays done, and only that")
	require.EqualValues(t, 10, final.Succeeded)
	require.Empty(t, final.Skipped, "a cancelled operation does not count the rest as no longer matching")
	require.Equal(t, 10, opCount(t, pool, `SELECT count(*) FROM notifications WHERE status = 'ACCEPTED'`))
	require.Equal(t, 15, opCount(t, pool, `SELECT count(*) FROM notifications WHERE status = 'FAILED'`))

	// Finished: a cancel request, a page and a failure change nothing.
	before := opState(t, pool)
	got, requested, err = store.RequestOperationCancel(ctx, pool, op.ID)
	require.NoError(t, err)
	require.False(t, requested)
	require.Equal(t, store.OperationCancelled, got.Status)
	res, err = store.RunPage(ctx, pool, op.ID, 10)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCancelled}, res)
	require.NoError(t, store.FailOperation(ctx, pool, op.ID, "late"))
	require.Equal(t, before, opState(t, pool))

	// Cancelled before its first page: it does nothing.
	idle := opNewOperation(t, pool, store.ActionRetry, store.OperationFilter{Status: opPtr(notification.StatusFailed)})
	_, _, err = store.RequestOperationCancel(ctx, pool, idle.ID)
	require.NoError(t, err)
	res, err = store.RunPage(ctx, pool, idle.ID, 10)
	require.NoError(t, err)
	require.Equal(t, store.PageResult{Done: true, Status: store.OperationCancelled}, res)
	require.Zero(t, opLoad(t, pool, idle.ID).Processed)
	require.Equal(t, 15, opCount(t, pool, `SELECT count(*) FROM notifications WHERE status = 'FAILED'`))
}

// -- FinishAttempt after an erasure -----------------------------------------

func TestFinishAttemptAfterAnErasureStoresNoErrorOrExcerpt(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	const person = "+14155550177"
	errText, excerpt := "550 no such user "+person, `{"to":"`+person+`"}`
	retryAt := time.Now().Add(time.Minute)
	finish := func(id uuid.UUID, attempt int) error {
		code := 550
		return store.FinishAttempt(ctx, pool,
			store.Attempt{NotificationID: id, Attempt: attempt, StartedAt: time.Now(), DurationMS: 5, StatusCode: &code,
				Outcome: "retryable", Error: opPtr(errText), ResponseExcerpt: opPtr(excerpt)},
			store.Transition{Status: notification.StatusRetrying, LastError: opPtr(errText), NextAttemptAt: &retryAt})
	}
	requireClean := func(t *testing.T, id uuid.UUID, attempt int) {
		t.Helper()
		attempts, err := store.ListAttempts(ctx, pool, id)
		require.NoError(t, err)
		require.Len(t, attempts, attempt)
		a := attempts[attempt-1]
		require.Nil(t, a.Error, "the erased person's words never reach the attempt log")
		require.Nil(t, a.ResponseExcerpt)
		require.Equal(t, "retryable", a.Outcome, "the attempt itself is recorded")
		n := opGet(t, pool, id)
		require.Nil(t, n.LastError)
		require.Equal(t, notification.StatusRetrying, n.Status, "the transition still applies")
	}

	t.Run("erased before", func(t *testing.T) {
		id := opInsert(t, pool, opRow{Status: notification.StatusProcessing, Recipient: person, Attempt: true, Attempts: 1})
		op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
		opRunAll(t, pool, op.ID, 10)
		require.NoError(t, finish(id, 2))
		requireClean(t, id, 2)
	})

	t.Run("erasure committing while the attempt is recorded", func(t *testing.T) {
		id := opInsert(t, pool, opRow{Status: notification.StatusProcessing, Recipient: person, Attempt: true, Attempts: 1})
		op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
		// The erasure's page is done but not committed: it holds the row.
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		res, err := store.RunPage(ctx, tx, op.ID, 10)
		require.NoError(t, err)
		require.Equal(t, 1, res.Succeeded)

		done := make(chan error, 1)
		go func() { done <- finish(id, 2) }()
		// The attempt waits for the erasure's lock.
		require.Eventually(t, func() bool {
			var waiting int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO delivery_attempts%'`).Scan(&waiting)
			return err == nil && waiting == 1
		}, 10*time.Second, 2*time.Millisecond, "FinishAttempt never waited for the row lock")
		select {
		case err := <-done:
			t.Fatalf("FinishAttempt finished while the erasure held the row: %v", err)
		default:
		}
		require.NoError(t, tx.Commit(ctx))
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("FinishAttempt did not finish after the erasure committed")
		}
		requireClean(t, id, 2)
	})
}

func TestFailAfterAnErasureStoresNoErrorAndDeadLettersNoWords(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	const person = "+14155550177"
	// In flight when erased: the erasure flags it; its attempt's permanent
	// answer arrives before the workflow hears the cancel, and it fails.
	id := opInsert(t, pool, opRow{Status: notification.StatusProcessing, Recipient: person, Attempts: 1})
	op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
	opRunAll(t, pool, op.ID, 10)
	require.NotNil(t, opGet(t, pool, id).ErasedAt)

	n, err := store.Fail(ctx, pool, id, notification.DeadLetter{Reason: "permanent", Source: notification.SourceWorkflow,
		Attempts: 1, LastError: "400 invalid number " + person})
	require.NoError(t, err)
	require.Nil(t, n.LastError, "an erased notification keeps no error text")
	var records []string
	rows, err := pool.Query(ctx, `SELECT dead_letter::text FROM outbox WHERE notification_id = $1 AND dead_letter IS NOT NULL`, id)
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		records = append(records, r)
	}
	require.NoError(t, rows.Err())
	for _, r := range records {
		require.NotContains(t, r, person, "the dead-letter message of an erased notification repeats the person's words")
	}
}

func TestReceiptAfterAnErasureStoresNoReason(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	const person = "ann@example.com"
	// SENT when erased: the provider's receipt comes after the erasure.
	id := opInsert(t, pool, opRow{Status: notification.StatusSent, Channel: string(notification.Email), Recipient: person, Subject: opPtr("s"), Attempts: 1})
	_, err := pool.Exec(ctx, `INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms, outcome, provider, provider_message_id)
		VALUES ($1, 1, now(), 5, 'sent', 'mailer', 'm-1')`, id)
	require.NoError(t, err)
	op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
	opRunAll(t, pool, op.ID, 10)
	require.NotNil(t, opGet(t, pool, id).ErasedAt)

	_, err = store.SettleReceipt(ctx, pool, id, 1, "failed", "mailbox "+person+" unknown", notification.StatusProcessing)
	require.NoError(t, err)
	attempts, err := store.ListAttempts(ctx, pool, id)
	require.NoError(t, err)
	require.Equal(t, "failed", *attempts[0].Receipt, "the receipt itself is recorded")
	require.Nil(t, attempts[0].ReceiptReason, "the erased person's words never reach the attempt log")
	require.Nil(t, opGet(t, pool, id).LastError)
}
