package store_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// optOutSetup is a fresh database with a second tenant beside the default.
func optOutSetup(t *testing.T) (*pgxpool.Pool, uuid.UUID, uuid.UUID) {
	t.Helper()
	t.Parallel()
	pool, _ := testenv.Pool(t)
	other, _, err := store.EnsureTenant(context.Background(), pool, "other")
	require.NoError(t, err)
	return pool, store.DefaultTenantID, other.ID
}

// profile stores a recipient profile with preferences and one address per
// channel in addresses.
func profile(t *testing.T, pool *pgxpool.Pool, tenant uuid.UUID, id, preferences string, addresses map[string]string) {
	t.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO recipients (tenant_id, id, preferences) VALUES ($1, $2, $3)`, tenant, id, preferences)
	require.NoError(t, err)
	for channel, address := range addresses {
		_, err := pool.Exec(ctx, `INSERT INTO recipient_addresses (tenant_id, recipient_id, channel, position, address)
			VALUES ($1, $2, $3, 0, $4)`, tenant, id, channel, address)
		require.NoError(t, err)
	}
}

func preferences(t *testing.T, pool *pgxpool.Pool, tenant uuid.UUID, id string) map[string]map[string]bool {
	t.Helper()
	var raw []byte
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT preferences FROM recipients WHERE tenant_id = $1 AND id = $2`, tenant, id).Scan(&raw))
	var prefs map[string]map[string]bool
	require.NoError(t, json.Unmarshal(raw, &prefs))
	return prefs
}

func refusal(t *testing.T, pool *pgxpool.Pool, tenant uuid.UUID, channel, address, category string) *string {
	t.Helper()
	why, err := store.ConsentRefusal(context.Background(), pool, tenant, channel, address, category)
	require.NoError(t, err)
	if why == "" {
		return nil
	}
	return &why
}

func TestRecordOptOutOfAnAddressNoProfileHolds(t *testing.T) {
	pool, tenant, other := optOutSetup(t)
	ctx := context.Background()

	for range 2 {
		require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", nil, "marketing", store.OptOutUnsubscribe))
	}

	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM opt_outs WHERE tenant_id = $1 AND channel = 'email'
		AND address = 'ada@example.com' AND category = 'marketing' AND source = 'unsubscribe'`, tenant), "a repeat adds nothing")
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM opt_outs`))
	require.Equal(t, "opted-out", *refusal(t, pool, tenant, "email", "ada@example.com", "marketing"))
	require.Nil(t, refusal(t, pool, tenant, "email", "ada@example.com", "security"), "another category is still sent")
	require.Nil(t, refusal(t, pool, tenant, "sms", "ada@example.com", "marketing"), "another channel is still sent")
	require.Nil(t, refusal(t, pool, other, "email", "ada@example.com", "marketing"), "another tenant is still sent")
}

func TestRecordOptOutGoesOnTheProfileHoldingTheAddress(t *testing.T) {
	pool, tenant, other := optOutSetup(t)
	ctx := context.Background()
	profile(t, pool, tenant, "user-1", `{"marketing":{"sms":true},"digest":{"email":true}}`, map[string]string{"email": "ada@example.com", "sms": "+14155550123"})
	profile(t, pool, other, "user-1", `{}`, map[string]string{"email": "ada@example.com"})

	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", nil, "marketing", store.OptOutUnsubscribe))
	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", nil, "news", store.OptOutUnsubscribe))
	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", nil, "news", store.OptOutUnsubscribe))

	require.Equal(t, map[string]map[string]bool{
		"marketing": {"sms": true, "email": false},
		"digest":    {"email": true},
		"news":      {"email": false}, // the category's object made
	}, preferences(t, pool, tenant, "user-1"))
	require.Empty(t, preferences(t, pool, other, "user-1"), "the other tenant's profile with the same address is untouched")
	require.Zero(t, count(t, pool, `SELECT count(*) FROM opt_outs`), "a profile held it: no address opt-out")
	require.Equal(t, "opted-out", *refusal(t, pool, tenant, "email", "ada@example.com", "marketing"))
	require.Nil(t, refusal(t, pool, tenant, "sms", "+14155550123", "marketing"))
}

func TestRecordOptOutByRecipientID(t *testing.T) {
	pool, tenant, _ := optOutSetup(t)
	ctx := context.Background()
	profile(t, pool, tenant, "user-1", `{}`, map[string]string{"email": "ada@example.com"})
	profile(t, pool, tenant, "user-2", `{}`, map[string]string{"email": "old@example.com"})

	// The profile named wins over the one holding the address now.
	id := "user-2"
	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", &id, "marketing", store.OptOutUnsubscribe))
	require.Equal(t, map[string]map[string]bool{"marketing": {"email": false}}, preferences(t, pool, tenant, "user-2"))
	require.Empty(t, preferences(t, pool, tenant, "user-1"))

	// A profile named that no longer exists: the address decides.
	gone := "user-erased"
	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", &gone, "marketing", store.OptOutUnsubscribe))
	require.Equal(t, map[string]map[string]bool{"marketing": {"email": false}}, preferences(t, pool, tenant, "user-1"))
	require.NoError(t, store.RecordOptOut(ctx, pool, tenant, "email", "nobody@example.com", &gone, "marketing", store.OptOutUnsubscribe))
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM opt_outs WHERE address = 'nobody@example.com'`))
	require.Zero(t, count(t, pool, `SELECT count(*) FROM recipients WHERE id = 'user-erased'`))
}

func TestRecordOptOutRefusesWhatItCannotRecord(t *testing.T) {
	pool, tenant, _ := optOutSetup(t)
	ctx := context.Background()
	require.Error(t, store.RecordOptOut(ctx, pool, tenant, "fax", "ada@example.com", nil, "marketing", store.OptOutUnsubscribe))
	require.Error(t, store.RecordOptOut(ctx, pool, tenant, "email", "", nil, "marketing", store.OptOutUnsubscribe))
	require.Error(t, store.RecordOptOut(ctx, pool, tenant, "email", "ada@example.com", nil, "", store.OptOutUnsubscribe))
	require.Zero(t, count(t, pool, `SELECT count(*) FROM opt_outs`))
}

func TestSigningKeyIsMadeOnceAndShared(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	first := make([]byte, 32)
	first[0] = 1
	second := make([]byte, 32)
	second[0] = 2

	got, err := store.SigningKey(ctx, pool, "unsubscribe", first)
	require.NoError(t, err)
	require.Equal(t, first, got)
	again, err := store.SigningKey(ctx, pool, "unsubscribe", second)
	require.NoError(t, err)
	require.Equal(t, first, again, "the key stored first is everyone's")
	other, err := store.SigningKey(ctx, pool, "another-purpose", second)
	require.NoError(t, err)
	require.Equal(t, second, other)

	_, err = store.SigningKey(ctx, pool, "short", []byte("too short"))
	require.Error(t, err, "the schema wants 32 bytes at least")
}

func TestRecordOptOutForATenantThatIsGoneIsNotFound(t *testing.T) {
	pool, _, _ := optOutSetup(t)
	err := store.RecordOptOut(context.Background(), pool, uuid.New(), "email", "ada@example.com", nil, "marketing", store.OptOutUnsubscribe)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, count(t, pool, `SELECT count(*) FROM opt_outs`))
}
