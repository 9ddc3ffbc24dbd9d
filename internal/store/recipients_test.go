package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// recipientsSetup is a fresh database with the default tenant and another.
func recipientsSetup(t *testing.T) (pool *pgxpool.Pool, a, b uuid.UUID) {
	t.Helper()
	pool, _ = testenv.Pool(t)
	other, _, err := store.EnsureTenant(context.Background(), pool, "tenant-b")
	require.NoError(t, err)
	return pool, store.DefaultTenantID, other.ID
}

func ptr[T any](v T) *T { return &v }

func TestPutRecipientReplacesTheWholeProfile(t *testing.T) {
	ctx := context.Background()
	pool, a, _ := recipientsSetup(t)
	first := store.Recipient{ID: "user-1",
		Addresses: store.Addresses{SMS: ptr("+14155550123"), Email: ptr("ada@example.com"), Push: []string{"tok-1", "tok-2", "tok-3"}},
		Timezone:  ptr("Europe/Istanbul"), Locale: ptr("tr-TR"),
		Preferences: store.Preferences{"marketing": {"email": false, "sms": true}}}
	got, created, err := store.PutRecipient(ctx, pool, a, first)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "+14155550123", *got.Addresses.SMS)
	require.Equal(t, []string{"tok-1", "tok-2", "tok-3"}, got.Addresses.Push, "push tokens keep their order")
	require.Equal(t, store.Preferences{"marketing": {"email": false, "sms": true}}, got.Preferences)

	// The second PUT names only an email and new tokens: everything else goes.
	second := store.Recipient{ID: "user-1", Addresses: store.Addresses{Email: ptr("ada@new.example"), Push: []string{"tok-9"}}}
	got, created, err = store.PutRecipient(ctx, pool, a, second)
	require.NoError(t, err)
	require.False(t, created)
	require.Nil(t, got.Addresses.SMS)
	require.Equal(t, "ada@new.example", *got.Addresses.Email)
	require.Equal(t, []string{"tok-9"}, got.Addresses.Push)
	require.Nil(t, got.Timezone)
	require.Nil(t, got.Locale)
	require.Empty(t, got.Preferences)
	require.True(t, got.UpdatedAt.After(got.CreatedAt) || got.UpdatedAt.Equal(got.CreatedAt))

	read, err := store.GetRecipient(ctx, pool, a, "user-1")
	require.NoError(t, err)
	require.Equal(t, got, read)
	require.Equal(t, 2, count(t, pool, `SELECT count(*) FROM recipient_addresses WHERE tenant_id = $1`, a),
		"the old address rows are gone")
}

func TestRecipientsBelongToTheirTenant(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	_, _, err := store.PutRecipient(ctx, pool, a, store.Recipient{ID: "same-id", Addresses: store.Addresses{SMS: ptr("+14155550100")}})
	require.NoError(t, err)

	_, err = store.GetRecipient(ctx, pool, b, "same-id")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, store.DeleteRecipient(ctx, pool, b, "same-id"), store.ErrNotFound)
	list, err := store.ListRecipients(ctx, pool, b, "", 10)
	require.NoError(t, err)
	require.Empty(t, list)

	// B's own profile of the same id is another person.
	_, created, err := store.PutRecipient(ctx, pool, b, store.Recipient{ID: "same-id"})
	require.NoError(t, err)
	require.True(t, created)
	got, err := store.GetRecipient(ctx, pool, a, "same-id")
	require.NoError(t, err)
	require.Equal(t, "+14155550100", *got.Addresses.SMS, "A's profile is untouched")
}

func TestListRecipientsPagesInIDOrder(t *testing.T) {
	ctx := context.Background()
	pool, a, _ := recipientsSetup(t)
	for _, id := range []string{"c", "a", "e", "b", "d"} {
		_, _, err := store.PutRecipient(ctx, pool, a, store.Recipient{ID: id, Addresses: store.Addresses{Push: []string{"t-" + id}}})
		require.NoError(t, err)
	}
	var seen []string
	after := ""
	for {
		page, err := store.ListRecipients(ctx, pool, a, after, 2)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			seen = append(seen, r.ID)
			require.Equal(t, []string{"t-" + r.ID}, r.Addresses.Push)
		}
		after = page[len(page)-1].ID
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, seen)
}

// TestDeleteRecipientErasesThePersonsAddressesEverywhere: the profile, its
// addresses, and the suppressions and opt-outs of each address it held go;
// another address's entries and another tenant's entries of the same
// address stay.
func TestDeleteRecipientErasesThePersonsAddressesEverywhere(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	_, _, err := store.PutRecipient(ctx, pool, a, store.Recipient{ID: "ada",
		Addresses: store.Addresses{SMS: ptr("+14155550123"), Email: ptr("ada@example.com"), Push: []string{"tok-a"}}})
	require.NoError(t, err)
	for _, tenant := range []uuid.UUID{a, b} {
		require.NoError(t, store.Suppress(ctx, pool, tenant, "email", "ada@example.com", store.SuppressBounced, nil))
		require.NoError(t, store.Suppress(ctx, pool, tenant, "push", "tok-a", store.SuppressUnregistered, nil))
		_, err = pool.Exec(ctx, `INSERT INTO opt_outs (tenant_id, channel, address, category, source)
			VALUES ($1, 'sms', '+14155550123', 'marketing', 'one-click')`, tenant)
		require.NoError(t, err)
	}
	require.NoError(t, store.Suppress(ctx, pool, a, "email", "bob@example.com", store.SuppressManual, nil))

	require.NoError(t, store.DeleteRecipient(ctx, pool, a, "ada"))

	_, err = store.GetRecipient(ctx, pool, a, "ada")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, count(t, pool, `SELECT count(*) FROM recipient_addresses`))
	require.Zero(t, count(t, pool, `SELECT count(*) FROM opt_outs WHERE tenant_id = $1`, a))
	left, err := store.ListSuppressions(ctx, pool, a, store.SuppressionFilter{Limit: 10})
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, "bob@example.com", left[0].Address, "another address's suppression stays")
	require.Equal(t, 2, count(t, pool, `SELECT count(*) FROM suppressions WHERE tenant_id = $1`, b), "another tenant's stay")
	require.Equal(t, 1, count(t, pool, `SELECT count(*) FROM opt_outs WHERE tenant_id = $1`, b))

	require.ErrorIs(t, store.DeleteRecipient(ctx, pool, a, "ada"), store.ErrNotFound)
}

func TestSuppressKeepsTheFirstReason(t *testing.T) {
	ctx := context.Background()
	pool, a, _ := recipientsSetup(t)
	first := uuid.Must(uuid.NewV7())
	require.NoError(t, store.Suppress(ctx, pool, a, "sms", "+14155550123", store.SuppressUnsubscribed, &first))
	require.NoError(t, store.Suppress(ctx, pool, a, "sms", "+14155550123", store.SuppressInvalid, ptr(uuid.Must(uuid.NewV7()))))
	s, err := store.GetSuppression(ctx, pool, a, "sms", "+14155550123")
	require.NoError(t, err)
	require.Equal(t, store.SuppressUnsubscribed, s.Reason)
	require.Equal(t, first, *s.NotificationID)
	require.Error(t, store.Suppress(ctx, pool, a, "sms", "+14155550123", "bored", nil), "an unknown reason")
}

func TestPutSuppressionIsManualByDefaultAndReplacesReasonAndNote(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	source := uuid.Must(uuid.NewV7())
	require.NoError(t, store.Suppress(ctx, pool, a, "email", "ada@example.com", store.SuppressBounced, &source))
	s, created, err := store.PutSuppression(ctx, pool, a, "email", "ada@example.com", "", ptr("asked by phone"))
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, store.SuppressManual, s.Reason)
	require.Equal(t, "asked by phone", *s.Note)
	require.Equal(t, source, *s.NotificationID, "the source notification is kept")

	_, created, err = store.PutSuppression(ctx, pool, b, "email", "ada@example.com", "", nil)
	require.NoError(t, err)
	require.True(t, created, "another tenant's entry is its own")
	require.NoError(t, store.DeleteSuppression(ctx, pool, a, "email", "ada@example.com"))
	require.ErrorIs(t, store.DeleteSuppression(ctx, pool, a, "email", "ada@example.com"), store.ErrNotFound)
	_, err = store.GetSuppression(ctx, pool, b, "email", "ada@example.com")
	require.NoError(t, err, "B's entry stays")
}

func TestListSuppressionsFiltersAndPagesNewestFirst(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	base := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	insert := func(tenant uuid.UUID, channel, addr, reason string, at time.Time) {
		_, err := pool.Exec(ctx, `INSERT INTO suppressions (tenant_id, channel, address, reason, created_at)
			VALUES ($1, $2, $3, $4, $5)`, tenant, channel, addr, reason, at)
		require.NoError(t, err)
	}
	// Three share one instant, so the keyset's tie-break is exercised.
	insert(a, "email", "a@example.com", "bounced", base)
	insert(a, "sms", "+14155550001", "manual", base.Add(time.Second))
	insert(a, "email", "b@example.com", "manual", base.Add(time.Second))
	insert(a, "push", "tok", "unregistered", base.Add(time.Second))
	insert(a, "email", "c@example.com", "complained", base.Add(2*time.Second))
	insert(b, "email", "a@example.com", "bounced", base.Add(3*time.Second))

	var seen []string
	f := store.SuppressionFilter{Limit: 2}
	for {
		page, err := store.ListSuppressions(ctx, pool, a, f)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, s := range page {
			seen = append(seen, s.Channel+":"+s.Address)
		}
		last := page[len(page)-1]
		f.After = &store.SuppressionKeyset{CreatedAt: last.CreatedAt, Channel: last.Channel, Address: last.Address}
	}
	require.Equal(t, []string{"email:c@example.com", "email:b@example.com", "push:tok", "sms:+14155550001", "email:a@example.com"}, seen)

	byReason, err := store.ListSuppressions(ctx, pool, a, store.SuppressionFilter{Reason: ptr("manual"), Limit: 10})
	require.NoError(t, err)
	require.Len(t, byReason, 2)
	byChannel, err := store.ListSuppressions(ctx, pool, a, store.SuppressionFilter{Channel: ptr("email"), Address: ptr("a@example.com"), Limit: 10})
	require.NoError(t, err)
	require.Len(t, byChannel, 1)
	require.Equal(t, "bounced", byChannel[0].Reason)
}

func TestCategoriesAreUpsertedPerTenant(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	c, created, err := store.PutCategory(ctx, pool, a, "security", true, ptr("logins and password resets"))
	require.NoError(t, err)
	require.True(t, created)
	require.True(t, c.Critical)
	c, created, err = store.PutCategory(ctx, pool, a, "security", false, nil)
	require.NoError(t, err)
	require.False(t, created)
	require.False(t, c.Critical)
	require.Nil(t, c.Description, "a PUT replaces the description too")
	_, _, err = store.PutCategory(ctx, pool, a, "marketing", false, nil)
	require.NoError(t, err)

	list, err := store.ListCategories(ctx, pool, a, "", 10)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "marketing", list[0].Name)
	page, err := store.ListCategories(ctx, pool, a, "marketing", 10)
	require.NoError(t, err)
	require.Len(t, page, 1)

	_, err = store.GetCategory(ctx, pool, b, "security")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, store.DeleteCategory(ctx, pool, b, "security"), store.ErrNotFound)
	require.NoError(t, store.DeleteCategory(ctx, pool, a, "security"))
	_, err = store.GetCategory(ctx, pool, a, "security")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestEraseOperationForgetsTheAddressOnTheRecipientSide: a completed erase
// of an address removes its suppressions, its opt-outs and the profile
// address rows holding it, in its tenant only; the profile stays with its
// other addresses.
func TestEraseOperationForgetsTheAddressOnTheRecipientSide(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	const person = "ann@example.com"
	opInsert(t, pool, opRow{Channel: "email", Recipient: person, Subject: opPtr("hi"), Status: "DELIVERED"})
	for _, tenant := range []uuid.UUID{a, b} {
		_, _, err := store.PutRecipient(ctx, pool, tenant, store.Recipient{ID: "ann",
			Addresses: store.Addresses{Email: ptr(person), SMS: ptr("+14155550123")}})
		require.NoError(t, err)
		require.NoError(t, store.Suppress(ctx, pool, tenant, "email", person, store.SuppressBounced, nil))
		_, err = pool.Exec(ctx, `INSERT INTO opt_outs (tenant_id, channel, address, category, source)
			VALUES ($1, 'email', $2, 'marketing', 'one-click')`, tenant, person)
		require.NoError(t, err)
	}

	op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr(person)})
	pages := opRunAll(t, pool, op.ID, 10)
	require.Equal(t, store.OperationCompleted, pages[len(pages)-1].Status)

	_, err := store.GetSuppression(ctx, pool, a, "email", person)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, count(t, pool, `SELECT count(*) FROM opt_outs WHERE tenant_id = $1`, a))
	ann, err := store.GetRecipient(ctx, pool, a, "ann")
	require.NoError(t, err, "the profile stays")
	require.Nil(t, ann.Addresses.Email)
	require.Equal(t, "+14155550123", *ann.Addresses.SMS)

	_, err = store.GetSuppression(ctx, pool, b, "email", person)
	require.NoError(t, err, "another tenant's suppression stays")
	annB, err := store.GetRecipient(ctx, pool, b, "ann")
	require.NoError(t, err)
	require.Equal(t, person, *annB.Addresses.Email)
}

// TestPatchRecipientAppliesConcurrentChangesOneAfterTheOther: each of ten
// concurrent changes adds its own preference to what it reads; the row is
// held while one applies, so none is lost. An unknown profile is not found
// and a change that fails writes nothing.
func TestPatchRecipientAppliesConcurrentChangesOneAfterTheOther(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	_, _, err := store.PutRecipient(ctx, pool, a, store.Recipient{ID: "ada", Addresses: store.Addresses{SMS: ptr("+14155550123")}})
	require.NoError(t, err)
	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := store.PatchRecipient(ctx, pool, a, "ada", func(r store.Recipient) (store.Recipient, error) {
				r.Preferences[fmt.Sprintf("cat-%d", i)] = map[string]bool{"sms": false}
				return r, nil
			})
			errs <- err
		}()
	}
	for range 10 {
		require.NoError(t, <-errs)
	}
	got, err := store.GetRecipient(ctx, pool, a, "ada")
	require.NoError(t, err)
	require.Len(t, got.Preferences, 10, "no change was lost")
	require.Equal(t, "+14155550123", *got.Addresses.SMS, "what no change touched stays")

	_, err = store.PatchRecipient(ctx, pool, b, "ada", func(r store.Recipient) (store.Recipient, error) { return r, nil })
	require.ErrorIs(t, err, store.ErrNotFound, "another tenant's profile")
	refused := errors.New("refused")
	_, err = store.PatchRecipient(ctx, pool, a, "ada", func(r store.Recipient) (store.Recipient, error) {
		r.Addresses = store.Addresses{}
		return r, refused
	})
	require.ErrorIs(t, err, refused)
	got, err = store.GetRecipient(ctx, pool, a, "ada")
	require.NoError(t, err)
	require.NotNil(t, got.Addresses.SMS, "nothing was written")
}
