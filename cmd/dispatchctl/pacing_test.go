package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestTenantsSetQuietHoursAndNoneRemovesThem(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	env := []string{"DATABASE_DSN=" + dsn}
	dir := isolatedDir(t)
	ctx := context.Background()

	r := runIn(t, dir, env, "tenants", "set", "acme", "--quiet-hours", "22:00-08:00")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Regexp(t, `(?m)^TENANT\s+ACCEPT/S\s+ACCEPT/DAY\s+WEIGHT\s+QUIET HOURS$`, r.stdout)
	require.Regexp(t, `(?m)^acme\s+-\s+-\s+1\s+22:00-08:00$`, r.stdout)
	tn, err := store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.Equal(t, &pacing.QuietHours{Start: "22:00", End: "08:00"}, tn.QuietHours)

	r = runIn(t, dir, env, "tenants", "set", "acme", "--weight", "2")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	tn, err = store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.NotNil(t, tn.QuietHours, "kept when the flag is not given")

	r = runIn(t, dir, env, "tenants", "list", "--json")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	var ts []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ts), r.stdout)
	require.Equal(t, "acme", ts[0]["name"])
	require.Equal(t, map[string]any{"start": "22:00", "end": "08:00"}, ts[0]["quietHours"])
	require.Nil(t, ts[1]["quietHours"], "the default tenant has none")

	for _, bad := range []string{"22-08", "22:00-22:00", "25:00-08:00", ""} {
		r = runIn(t, dir, env, "tenants", "set", "acme", "--quiet-hours", bad)
		require.Equal(t, app.ExitUsage, r.code, "--quiet-hours %q", bad)
	}

	r = runIn(t, dir, env, "tenants", "set", "acme", "--quiet-hours", "none")
	require.Equal(t, app.ExitOK, r.code, r.stderr)
	require.Regexp(t, `(?m)^acme\s+-\s+-\s+2\s+-$`, r.stdout)
	tn, err = store.TenantByName(ctx, pool, "acme")
	require.NoError(t, err)
	require.Nil(t, tn.QuietHours)
}

func TestSendCarriesTheOrderingAndDigestFlags(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("POST /v1/notifications", sendHandler(t, id))

	res := f.dispatchctl("send", "--channel", "sms", "--to", "+14155550123", "--content", "shipped",
		"--category", "orders", "--ordering-key", "order-42", "--max-hold", "30s", "--digest-key", "daily")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"channel":"sms","recipient":"+14155550123","content":"shipped","category":"orders",
		"orderingKey":"order-42","maxHold":"30s","digestKey":"daily"}`, string(f.only().Body))

	res = f.dispatchctl("send", "--channel", "sms", "--to", "+14155550123", "--content", "x",
		"--ordering-key", "k", "--max-hold", "a while")
	require.Equal(t, app.ExitUsage, res.code)
	res = f.dispatchctl("send", "--file", "-", "--ordering-key", "k")
	require.Equal(t, app.ExitUsage, res.code)
	require.Len(t, f.requests(), 1, "nothing more was sent")
}

func TestGetShowsWhyAndUntilWhenANotificationWaits(t *testing.T) {
	f := newFakeAPI(t)
	id, digest := newID(), newID()
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		n := notification(id, client.StatusSCHEDULED)
		until := t0.Add(8 * time.Hour)
		by := client.NotificationDeferredByQuietHours
		n.ScheduledAt, n.DeferredBy = &until, &by
		n.OrderingKey, n.MaxHold, n.OrderingBroken = ptr("order-42"), ptr("1m30s"), ptr(true)
		n.DigestKey, n.Digest = ptr("daily"), &client.DigestMembership{ID: digest, Items: 3}
		answer(w, http.StatusOK, n)
	})
	res := f.dispatchctl("get", id.String())
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assertField(t, res.stdout, "scheduled", "2026-01-02T23:04:05.123Z")
	assertField(t, res.stdout, "deferred by", "quiet-hours")
	assertField(t, res.stdout, "ordering key", "order-42")
	assertField(t, res.stdout, "max hold", "1m30s")
	assertField(t, res.stdout, "digest key", "daily")
	assert.Contains(t, res.stdout, digest.String()+" (3 items")
	assert.Contains(t, res.stdout, "ordering broken")
}

func TestWatchPrintsANewWaitOfAScheduledNotification(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	quiet, throttle := client.NotificationDeferredByQuietHours, client.NotificationDeferredByThrottle
	states := []func(n *client.Notification){
		func(n *client.Notification) {
			n.Status, n.DeferredBy, n.ScheduledAt = client.StatusSCHEDULED, &throttle, ptr(t0.Add(time.Hour))
		},
		func(n *client.Notification) {
			n.Status, n.DeferredBy, n.ScheduledAt = client.StatusSCHEDULED, &quiet, ptr(t0.Add(8*time.Hour))
		},
		func(n *client.Notification) {
			n.Status, n.Attempts, n.DeliveredAt, n.DeferredBy = client.StatusDELIVERED, 1, &t0, &quiet
		},
	}
	var gets atomic.Int32
	f.handle("GET /v1/notifications/{id}", func(w http.ResponseWriter, r *http.Request) {
		i := int(gets.Add(1)) - 1
		require.Less(t, i, len(states), "read again after it was terminal")
		n := notification(id, client.StatusQUEUED)
		states[i](&n)
		answer(w, http.StatusOK, n)
	})

	res := f.dispatchctl("watch", id.String())

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Equal(t, `2026-01-02T15:04:05.123Z  SCHEDULED   attempts=0  scheduled=2026-01-02T16:04:05.123Z  deferred=throttle
2026-01-02T15:04:05.123Z  SCHEDULED   attempts=0  scheduled=2026-01-02T23:04:05.123Z  deferred=quiet-hours
2026-01-02T15:04:05.123Z  DELIVERED   attempts=1  deferred=quiet-hours
`, res.stdout)
}

func TestCategoriesPutSendsTheThrottleAndDigestFlags(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/categories/{name}", func(w http.ResponseWriter, r *http.Request) {
		var in client.CategoryInput
		require.NoError(t, json.NewDecoder(r.Body).Decode(&in))
		w.Header().Set("Location", "/v1/categories/news")
		answer(w, http.StatusCreated, client.Category{Name: "news", Throttle: in.Throttle, Digest: in.Digest,
			CreatedAt: t0, UpdatedAt: t0, Links: client.SelfLink{Self: "/v1/categories/news"}})
	})
	res := f.dispatchctl("categories", "put", "news", "--throttle-limit", "3", "--throttle-per", "1h",
		"--digest-window", "10m", "--digest-max-items", "50")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assertField(t, res.stdout, "throttle", "3 per 1h")
	assertField(t, res.stdout, "digest", "10m, max 50")
	assert.JSONEq(t, `{"critical":false,"throttle":{"limit":3,"per":"1h"},"digest":{"window":"10m","maxItems":50}}`,
		string(f.only().Body))

	res = f.dispatchctl("categories", "put", "news", "--throttle-limit", "3")
	require.Equal(t, app.ExitUsage, res.code)
	res = f.dispatchctl("categories", "put", "news", "--digest-window", "10m")
	require.Equal(t, app.ExitUsage, res.code)
	require.Len(t, f.requests(), 1, "nothing more was sent")
}

func TestRecipientsPutSendsQuietHours(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/recipients/{id}", func(w http.ResponseWriter, r *http.Request) {
		var in client.RecipientInput
		require.NoError(t, json.NewDecoder(r.Body).Decode(&in))
		w.Header().Set("Location", "/v1/recipients/ada")
		answer(w, http.StatusCreated, client.Recipient{ID: "ada", Preferences: client.Preferences{}, QuietHours: in.QuietHours,
			CreatedAt: t0, UpdatedAt: t0, Links: client.SelfLink{Self: "/v1/recipients/ada"}})
	})
	res := f.dispatchctl("recipients", "put", "ada", "--timezone", "Europe/Istanbul", "--quiet-hours", "22:00-08:00")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assertField(t, res.stdout, "quiet hours", "22:00-08:00")
	assert.JSONEq(t, `{"timezone":"Europe/Istanbul","quietHours":{"start":"22:00","end":"08:00"}}`, string(f.only().Body))

	res = f.dispatchctl("recipients", "put", "ada", "--quiet-hours", "late")
	require.Equal(t, app.ExitUsage, res.code)
	require.Len(t, f.requests(), 1, "nothing more was sent")
}
