package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

func TestConcurrentThrottleTakersNeverExceedTheLimit(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	throttle := pacing.Throttle{Limit: 3, Per: pacing.Duration(time.Hour)}
	ids := make([]uuid.UUID, 12)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	var (
		mu    sync.Mutex
		taken []uuid.UUID
		nexts []time.Time
		wg    sync.WaitGroup
	)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, next, err := store.TakeThrottleSlot(ctx, pool, store.DefaultTenantID, "digest", "profile:ada", id, throttle)
			require.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				taken = append(taken, id)
			} else {
				nexts = append(nexts, next)
			}
		}()
	}
	wg.Wait()
	require.Len(t, taken, 3, "12 racing takers, a limit of 3")
	require.Len(t, nexts, 9, "the rest wait, none dropped")
	for _, next := range nexts {
		require.WithinDuration(t, time.Now().Add(time.Hour), next, time.Minute, "the next slot frees an hour after the first was taken")
	}
	ok, _, err := store.TakeThrottleSlot(ctx, pool, store.DefaultTenantID, "digest", "profile:ada", taken[0], throttle)
	require.NoError(t, err)
	require.True(t, ok, "a notification that holds a slot (a retry) keeps it")
	require.Equal(t, 3, count(t, pool, `SELECT count(*) FROM throttle_slots WHERE recipient_key = 'profile:ada'`))
	ok, _, err = store.TakeThrottleSlot(ctx, pool, store.DefaultTenantID, "digest", "profile:bob", ids[11], throttle)
	require.NoError(t, err)
	require.True(t, ok, "another recipient has slots of its own")
}

func TestOrderingFollowsAcceptanceAndABatchsOrder(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	key := "order-" + uuid.NewString()
	first := newSMS()
	first.OrderingKey = &key
	_, err := store.CreateNotification(ctx, pool, first)
	require.NoError(t, err)
	var items []store.NewNotification
	for range 3 {
		n := newSMS()
		n.OrderingKey = &key
		items = append(items, n)
	}
	// Idempotency keys in the reverse of the request's order: the batch's
	// insert takes them sorted, and must still keep the request's order.
	for i, k := range []string{"c", "b", "a"} {
		items[i].IdempotencyKey = ptr(key + k)
	}
	_, _, _, err = store.CreateBatch(ctx, pool, store.NewBatch{ID: uuid.Must(uuid.NewV7()), Notifications: items})
	require.NoError(t, err)

	chain := []uuid.UUID{first.ID, items[0].ID, items[1].ID, items[2].ID}
	for i := 1; i < len(chain); i++ {
		n, err := store.GetNotification(ctx, pool, chain[i])
		require.NoError(t, err)
		ahead, status, ok, err := store.Predecessor(ctx, pool, n)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, chain[i-1], ahead, "notification %d waits for the one before it", i)
		require.Equal(t, notification.StatusAccepted, status)
		next, ok, err := store.Successor(ctx, pool, chain[i-1])
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, chain[i], next)
	}
	n, err := store.GetNotification(ctx, pool, first.ID)
	require.NoError(t, err)
	_, _, ok, err := store.Predecessor(ctx, pool, n)
	require.NoError(t, err)
	require.False(t, ok, "the first of its key waits for nothing")

	_, err = store.MarkCancelled(ctx, pool, items[0].ID)
	require.NoError(t, err)
	_, ok, err = store.Successor(ctx, pool, first.ID)
	require.NoError(t, err)
	require.False(t, ok, "an ended successor needs no wake")
}

// member creates a notification of category "news" with digest key k to
// ada's profile and begins its first attempt.
func member(t *testing.T, ctx context.Context, pool *pgxpool.Pool, k string) store.Notification {
	t.Helper()
	n := store.NewNotification{ID: uuid.Must(uuid.NewV7()), Channel: notification.Email, Priority: notification.Normal,
		RecipientID: ptr("ada"), Category: ptr("news"), DigestKey: &k, Subject: ptr("Comment"), Content: "item " + k}
	_, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)
	got, _, err := store.BeginAttempt(ctx, pool, n.ID, 1, true)
	require.NoError(t, err)
	return got
}

func TestADigestGathersItsMembersAndFlushesTheOnesNotCancelledIntoOneMessage(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	key := "thread-" + uuid.NewString()
	d := pacing.Digest{Window: pacing.Duration(10 * time.Minute), MaxItems: 3}
	var joined []store.Joined
	var members []store.Notification
	for range 4 {
		m := member(t, ctx, pool, key)
		j, ok, err := store.JoinDigest(ctx, pool, m, nil, 1, d)
		require.NoError(t, err)
		require.True(t, ok)
		joined, members = append(joined, j), append(members, m)
	}
	require.True(t, joined[0].Opened)
	require.False(t, joined[1].Opened)
	require.Equal(t, joined[0].DigestID, joined[2].DigestID)
	require.True(t, joined[2].Full, "the third of maxItems 3 fills it")
	require.True(t, joined[3].Opened, "the fourth opens the next digest")
	require.NotEqual(t, joined[0].DigestID, joined[3].DigestID)

	m, err := store.GetNotification(ctx, pool, members[0].ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusScheduled, m.Status)
	require.Equal(t, pacing.ByDigest, *m.DeferredBy)
	require.Equal(t, 0, m.Attempts, "joining takes the attempt back")
	require.WithinDuration(t, joined[0].ClosesAt, *m.ScheduledAt, time.Millisecond)

	_, err = store.MarkCancelled(ctx, pool, members[1].ID)
	require.NoError(t, err)
	id := joined[0].DigestID
	items, err := store.FlushDigest(ctx, pool, id)
	require.NoError(t, err)
	require.Equal(t, 2, items, "the cancelled member is not in the message")
	again, err := store.FlushDigest(ctx, pool, id)
	require.NoError(t, err)
	require.Equal(t, 2, again, "a second flush changes nothing")

	msg, err := store.GetNotification(ctx, pool, id)
	require.NoError(t, err)
	require.Equal(t, "- Comment: item "+key+"\n- Comment: item "+key, msg.Content)
	require.Equal(t, "Comment (and 1 more)", *msg.Subject)
	require.Equal(t, id, *msg.DigestID)
	require.JSONEq(t, `[{"id":"`+members[0].ID.String()+`","subject":"Comment","content":"item `+key+`"},
		{"id":"`+members[2].ID.String()+`","subject":"Comment","content":"item `+key+`"}]`, string(msg.DigestItems))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM outbox WHERE notification_id = $1`, id),
		"the message goes out through the outbox")

	settled, err := store.SettleDigest(ctx, pool, id)
	require.NoError(t, err)
	require.Empty(t, settled, "members end only once the message has")
	_, err = pool.Exec(ctx, `UPDATE notifications SET status = 'DELIVERED', delivered_at = now(), provider = 'smtp' WHERE id = $1`, id)
	require.NoError(t, err)
	settled, err = store.SettleDigest(ctx, pool, id)
	require.NoError(t, err)
	require.ElementsMatch(t, []uuid.UUID{members[0].ID, members[2].ID}, settled)
	m, err = store.GetNotification(ctx, pool, members[2].ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusDelivered, m.Status)
	m, err = store.GetNotification(ctx, pool, members[1].ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusCancelled, m.Status, "a cancelled member stays cancelled")
}

func TestADigestWhoseMembersWereAllCancelledSendsNothing(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	m := member(t, ctx, pool, "lonely-"+uuid.NewString())
	j, _, err := store.JoinDigest(ctx, pool, m, nil, 1, pacing.Digest{Window: pacing.Duration(time.Minute), MaxItems: 5})
	require.NoError(t, err)
	_, err = store.MarkCancelled(ctx, pool, m.ID)
	require.NoError(t, err)
	items, err := store.FlushDigest(ctx, pool, j.DigestID)
	require.NoError(t, err)
	require.Zero(t, items)
	_, err = store.GetNotification(ctx, pool, j.DigestID)
	require.ErrorIs(t, err, store.ErrNotFound, "no message was made")
}
