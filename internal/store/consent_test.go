package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func consentPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testenv.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// begin creates n and begins its first attempt, answering the refusal.
func begin(t *testing.T, pool *pgxpool.Pool, n store.NewNotification) (store.Notification, store.Refusal) {
	t.Helper()
	_, err := store.CreateNotification(context.Background(), pool, n)
	require.NoError(t, err)
	got, refusal, err := store.BeginAttempt(context.Background(), pool, n.ID, 1, false)
	require.NoError(t, err)
	return got, refusal
}

func TestBeginRefusesASuppressedAddressAndAnOptedOutCategory(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	tenant := store.DefaultTenantID
	require.NoError(t, store.Suppress(ctx, pool, tenant, "sms", "+14155550199", "manual", nil))
	_, _, err := store.PutRecipient(ctx, pool, tenant, store.Recipient{ID: "ada",
		Addresses:   store.Addresses{SMS: ptr("+14155550123")},
		Preferences: store.Preferences{"marketing": {"sms": false}}})
	require.NoError(t, err)
	_, _, err = store.PutCategory(ctx, pool, tenant, "security", true, nil)
	require.NoError(t, err)

	suppressed := newSMS()
	suppressed.Recipient = "+14155550199"
	n, refusal := begin(t, pool, suppressed)
	require.Equal(t, store.Refused, refusal)
	require.Equal(t, notification.SkipSuppressed, *n.SkipReason)

	critical := newSMS()
	critical.Recipient, critical.Category = "+14155550199", ptr("security")
	_, refusal = begin(t, pool, critical)
	require.Equal(t, store.Refused, refusal, "a critical category never passes a suppression")

	marketing := newSMS()
	marketing.Category = ptr("marketing")
	n, refusal = begin(t, pool, marketing)
	require.Equal(t, store.Refused, refusal)
	require.Equal(t, notification.SkipOptedOut, *n.SkipReason)

	security := newSMS()
	security.Category = ptr("security")
	_, refusal = begin(t, pool, security)
	require.Equal(t, store.Allowed, refusal)
	plain := newSMS()
	_, refusal = begin(t, pool, plain)
	require.Equal(t, store.Allowed, refusal, "no category: no opt-out applies")

	status, err := store.Skip(ctx, pool, marketing.ID, nil, 1, notification.SkipOptedOut)
	require.NoError(t, err)
	require.Equal(t, notification.StatusSkipped, status)
	got, err := store.GetNotification(ctx, pool, marketing.ID)
	require.NoError(t, err)
	require.Equal(t, 0, got.Attempts, "the begun attempt is taken back")
	require.Equal(t, notification.SkipOptedOut, *got.SkipReason)
}

func TestAnotherTenantsSuppressionDoesNotApply(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	other, _, err := store.EnsureTenant(ctx, pool, "other")
	require.NoError(t, err)
	require.NoError(t, store.Suppress(ctx, pool, other.ID, "sms", "+14155550123", "manual", nil))

	_, refusal := begin(t, pool, newSMS())
	require.Equal(t, store.Allowed, refusal)
}

func TestResolveRecipientTakesTheFirstChannelThePersonMayBeReachedOn(t *testing.T) {
	ctx := context.Background()
	pool := consentPool(t)
	tenant := store.DefaultTenantID
	_, _, err := store.PutRecipient(ctx, pool, tenant, store.Recipient{ID: "ada",
		Addresses:   store.Addresses{SMS: ptr("+14155550123"), Email: ptr("ada@example.com"), Push: []string{"tok-1", "tok-2"}},
		Preferences: store.Preferences{"news": {"email": false}}})
	require.NoError(t, err)
	require.NoError(t, store.Suppress(ctx, pool, tenant, "push", "tok-1", "unregistered", nil))
	n := store.Notification{TenantID: tenant, RecipientID: ptr("ada"), Channel: notification.Push,
		Channels: []string{"push", "email", "sms"}, Category: ptr("news")}

	res, err := store.ResolveRecipient(ctx, pool, n, false)
	require.NoError(t, err)
	require.Equal(t, store.Resolution{Channel: "push", Addresses: []string{"tok-2"}}, res, "a suppressed token is left out")

	res, err = store.ResolveRecipient(ctx, pool, n, true)
	require.NoError(t, err)
	require.Equal(t, store.Resolution{Channel: "sms", Addresses: []string{"+14155550123"}}, res, "email is opted out of news")

	n.Channel = notification.SMS
	res, err = store.ResolveRecipient(ctx, pool, n, true)
	require.NoError(t, err)
	require.Equal(t, store.Resolution{Refusal: notification.SkipNoAddress}, res, "no channel after the last")

	require.NoError(t, store.Suppress(ctx, pool, tenant, "push", "tok-2", "unregistered", nil))
	n.Channel, n.Channels = notification.Push, []string{"push", "email"}
	res, err = store.ResolveRecipient(ctx, pool, n, false)
	require.NoError(t, err)
	require.Equal(t, store.Resolution{Refusal: notification.SkipSuppressed}, res, "the first refusal of a channel that had an address")

	n.RecipientID = ptr("nobody")
	res, err = store.ResolveRecipient(ctx, pool, n, false)
	require.NoError(t, err)
	require.Equal(t, store.Resolution{Refusal: notification.SkipNoAddress}, res)
}
