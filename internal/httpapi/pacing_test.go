package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// pacedAnswer is what the tests read of a notification's Recipients II
// members.
type pacedAnswer struct {
	ID             string  `json:"id"`
	DeferredBy     *string `json:"deferredBy"`
	OrderingKey    *string `json:"orderingKey"`
	MaxHold        *string `json:"maxHold"`
	OrderingBroken *bool   `json:"orderingBroken"`
	DigestKey      *string `json:"digestKey"`
	Digest         *struct {
		ID    string `json:"id"`
		Items int    `json:"items"`
	} `json:"digest"`
}

func TestAProfilesQuietHoursRoundTripAndANullPatchRemovesThem(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/recipients/ada", `{"timezone":"Europe/Istanbul","quietHours":{"start":"22:00","end":"08:00"}}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	require.Equal(t, map[string]any{"start": "22:00", "end": "08:00"}, decode[map[string]any](t, raw)["quietHours"])

	r, err := store.GetRecipient(context.Background(), f.pool, store.DefaultTenantID, "ada")
	require.NoError(t, err)
	require.Equal(t, &pacing.QuietHours{Start: "22:00", End: "08:00"}, r.QuietHours)

	// A patch merges the window member by member.
	resp, raw = f.do(http.MethodPatch, "/v1/recipients/ada", []byte(`{"quietHours":{"end":"07:30"}}`),
		"Content-Type", "application/merge-patch+json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	resp, raw = f.get("/v1/recipients/ada")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[struct {
		QuietHours *pacing.QuietHours `json:"quietHours"`
	}](t, raw)
	require.Equal(t, &pacing.QuietHours{Start: "22:00", End: "07:30"}, got.QuietHours)

	resp, raw = f.do(http.MethodPatch, "/v1/recipients/ada", []byte(`{"quietHours":null}`),
		"Content-Type", "application/merge-patch+json")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	resp, raw = f.get("/v1/recipients/ada")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, decode[map[string]any](t, raw), "quietHours", "null removes the window")
	r, err = store.GetRecipient(context.Background(), f.pool, store.DefaultTenantID, "ada")
	require.NoError(t, err)
	require.Nil(t, r.QuietHours)
	require.Equal(t, "Europe/Istanbul", *r.Timezone, "the rest of the profile stays")
}

func TestBadQuietHoursAreNamedMemberByMember(t *testing.T) {
	f := setup(t)
	for body, fields := range map[string][]string{
		`{"quietHours":{"start":"24:00","end":"08:00"}}`:            {"quietHours.start"},
		`{"quietHours":{"start":"22:00","end":"8"}}`:                {"quietHours.end"},
		`{"quietHours":{"start":"08:00","end":"08:00"}}`:            {"quietHours.end"},
		`{"quietHours":{"start":"22:00"}}`:                          {"quietHours.end"},
		`{"quietHours":{"start":22,"end":"08:00"}}`:                 {"quietHours.start"},
		`{"quietHours":{"start":"22:00","end":"08:00","tz":"UTC"}}`: {"quietHours.tz"},
		`{"quietHours":"22:00-08:00"}`:                              {"quietHours"},
	} {
		resp, raw := f.put("/v1/recipients/ada", body)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, fields, fieldNames(p), body)
	}
	require.Zero(t, count(t, f.pool, "recipients"), "nothing was stored")
}

func TestACategorysThrottleAndDigestRoundTrip(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/categories/news", `{"throttle":{"limit":3,"per":"1h"},"digest":{"window":"600s","maxItems":50}}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	want := `{"limit":3,"per":"1h"}`
	got := decode[map[string]any](t, raw)
	require.Equal(t, map[string]any{"limit": float64(3), "per": "1h"}, got["throttle"], want)
	require.Equal(t, map[string]any{"window": "10m", "maxItems": float64(50)}, got["digest"], "durations show in Go's shortest form")

	c, err := store.GetCategory(context.Background(), f.pool, store.DefaultTenantID, "news")
	require.NoError(t, err)
	require.Equal(t, &pacing.Throttle{Limit: 3, Per: pacing.Duration(time.Hour)}, c.Throttle)
	require.Equal(t, &pacing.Digest{Window: pacing.Duration(10 * time.Minute), MaxItems: 50}, c.Digest)

	resp, raw = f.get("/v1/categories/news")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got = decode[map[string]any](t, raw)
	require.Equal(t, map[string]any{"limit": float64(3), "per": "1h"}, got["throttle"])

	// A PUT is a full replace: what is left out goes.
	resp, raw = f.put("/v1/categories/news", `{"throttle":{"limit":1,"per":"1h30m"}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	got = decode[map[string]any](t, raw)
	require.Equal(t, map[string]any{"limit": float64(1), "per": "1h30m"}, got["throttle"])
	require.NotContains(t, got, "digest")
	c, err = store.GetCategory(context.Background(), f.pool, store.DefaultTenantID, "news")
	require.NoError(t, err)
	require.Nil(t, c.Digest)
}

func TestBadThrottlesAndDigestsAreNamedMemberByMember(t *testing.T) {
	f := setup(t)
	for body, fields := range map[string][]string{
		`{"throttle":{"limit":0,"per":"1h"}}`:               {"throttle.limit"},
		`{"throttle":{"limit":3,"per":"an hour"}}`:          {"throttle.per"},
		`{"throttle":{"limit":3,"per":"1ms"}}`:              {"throttle.per"},
		`{"throttle":{"limit":3.5,"per":"1h"}}`:             {"throttle.limit"},
		`{"throttle":{"per":"1h"}}`:                         {"throttle.limit"},
		`{"digest":{"window":"10m","maxItems":0}}`:          {"digest.maxItems"},
		`{"digest":{"window":"10m","maxItems":5000}}`:       {"digest.maxItems"},
		`{"digest":{"window":"10y","maxItems":5}}`:          {"digest.window"},
		`{"digest":{"window":"10m","maxItems":5,"x":true}}`: {"digest.x"},
		`{"throttle":[],"digest":1}`:                        {"throttle", "digest"},
	} {
		resp, raw := f.put("/v1/categories/news", body)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, fields, fieldNames(p), body)
	}
	require.Zero(t, count(t, f.pool, "categories"), "nothing was stored")
}

func TestOrderingAndDigestKeysAreStoredAndShown(t *testing.T) {
	f := setup(t)
	id := f.create(`{"channel":"sms","recipient":"+14155550123","content":"step 1","category":"orders",
		"orderingKey":"order-42","maxHold":"90s","digestKey":"daily"}`)
	n, err := store.GetNotification(context.Background(), f.pool, uuid.MustParse(id))
	require.NoError(t, err)
	require.Equal(t, "order-42", *n.OrderingKey)
	require.Equal(t, int64(90_000), *n.MaxHoldMS)
	require.Equal(t, "daily", *n.DigestKey)

	resp, raw := f.get("/v1/notifications/" + id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[pacedAnswer](t, raw)
	require.Equal(t, "order-42", *got.OrderingKey)
	require.Equal(t, "1m30s", *got.MaxHold)
	require.Equal(t, "daily", *got.DigestKey)
	require.Nil(t, got.DeferredBy)
	require.Nil(t, got.OrderingBroken)
	require.Nil(t, got.Digest)

	// A batch's items carry them too.
	resp, raw = f.post("/v1/notifications/batch", `{"notifications":[
		{"channel":"sms","recipient":"+14155550123","content":"a","orderingKey":"k"},
		{"channel":"sms","recipient":"+14155550123","content":"b","orderingKey":"k","maxHold":"5s"}]}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	batch := decode[struct {
		Notifications []pacedAnswer `json:"notifications"`
	}](t, raw)
	require.Len(t, batch.Notifications, 2)
	require.Equal(t, "k", *batch.Notifications[1].OrderingKey)
	require.Equal(t, "5s", *batch.Notifications[1].MaxHold)
	require.Nil(t, batch.Notifications[0].MaxHold)
}

func TestDeferredAndBrokenOrderingShowOnTheNotification(t *testing.T) {
	f := setup(t)
	id := f.create(`{"channel":"sms","recipient":"+14155550123","content":"x","orderingKey":"k"}`)
	_, err := f.pool.Exec(context.Background(),
		`UPDATE notifications SET deferred_by = 'quiet-hours', ordering_broken = true WHERE id = $1`, id)
	require.NoError(t, err)
	resp, raw := f.get("/v1/notifications?limit=5")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	page := decode[pageAnswer[pacedAnswer]](t, raw)
	require.Len(t, page.Data, 1)
	require.Equal(t, pacing.ByQuietHours, *page.Data[0].DeferredBy)
	require.True(t, *page.Data[0].OrderingBroken)

	_, err = f.pool.Exec(context.Background(), `UPDATE notifications SET ordering_broken = false WHERE id = $1`, id)
	require.NoError(t, err)
	resp, raw = f.get("/v1/notifications/" + id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, decode[map[string]any](t, raw), "orderingBroken", "shown only when true")
}

func TestBadOrderingAndDigestFieldsAreNamed(t *testing.T) {
	f := setup(t)
	const sms = `"channel":"sms","recipient":"+14155550123","content":"x"`
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'k'
	}
	for body, fields := range map[string][]string{
		`{` + sms + `,"orderingKey":""}`:                                     {"orderingKey"},
		`{` + sms + `,"orderingKey":"` + string(long) + `"}`:                 {"orderingKey"},
		`{` + sms + `,"orderingKey":"a\u0007b"}`:                             {"orderingKey"},
		`{` + sms + `,"maxHold":"30s"}`:                                      {"maxHold"},
		`{` + sms + `,"orderingKey":"k","maxHold":"soon"}`:                   {"maxHold"},
		`{` + sms + `,"orderingKey":"k","maxHold":"0s"}`:                     {"maxHold"},
		`{` + sms + `,"orderingKey":"k","maxHold":"25h"}`:                    {"maxHold"},
		`{` + sms + `,"orderingKey":"k","maxHold":30}`:                       {"maxHold"},
		`{` + sms + `,"digestKey":"daily"}`:                                  {"digestKey"},
		`{` + sms + `,"category":"news","digestKey":""}`:                     {"digestKey"},
		`{` + sms + `,"category":"news","digestKey":"` + string(long) + `"}`: {"digestKey"},
	} {
		resp, raw := f.post("/v1/notifications", body)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, fields, fieldNames(p), body)
	}
	resp, raw := f.post("/v1/notifications/batch", `{"notifications":[{`+sms+`,"maxHold":"1m"},{`+sms+`,"digestKey":"d"}]}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"notifications[0].maxHold", "notifications[1].digestKey"}, fieldNames(p))
	require.Zero(t, count(t, f.pool, "notifications"), "nothing was stored")
}

func TestTheIdempotencyFingerprintCoversOrderingAndDigestKeys(t *testing.T) {
	f := setup(t)
	const base = `"channel":"sms","recipient":"+14155550123","content":"x","category":"news"`
	resp, raw := f.post("/v1/notifications", `{`+base+`,"orderingKey":"a"}`, "Idempotency-Key", "fp-1")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	resp, raw = f.post("/v1/notifications", `{`+base+`,"orderingKey":"a"}`, "Idempotency-Key", "fp-1")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the same request replays: %s", raw)
	for _, other := range []string{
		`{` + base + `,"orderingKey":"b"}`,
		`{` + base + `,"orderingKey":"a","maxHold":"1m"}`,
		`{` + base + `,"orderingKey":"a","digestKey":"d"}`,
		`{` + base + `}`,
	} {
		resp, raw = f.post("/v1/notifications", other, "Idempotency-Key", "fp-1")
		requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	}
}

func TestADigestMemberShowsItsDigestAndTheMessagesAttempts(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	const item = `{"channel":"sms","recipient":"+14155550123","content":"item","category":"news","digestKey":"daily"}`
	member, other := f.create(item), f.create(item)
	// The digest's message is a notification of its own whose id is the
	// digest's; the worker makes it at the flush. Here it is made by hand.
	message := f.create(`{"channel":"sms","recipient":"+14155550123","content":"2 items","category":"news"}`)
	_, err := f.pool.Exec(ctx, `INSERT INTO digests (id, tenant_id, category, recipient_key, digest_key, closes_at, max_items, items, flushed_at)
		VALUES ($1, $2, 'news', '+14155550123', 'daily', now(), 50, 2, now())`, message, store.DefaultTenantID)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE notifications SET digest_id = $1, deferred_by = 'digest' WHERE id = ANY($2::uuid[])`,
		message, []string{member, other, message})
	require.NoError(t, err)
	delivered := 200
	require.NoError(t, store.FinishAttempt(ctx, f.pool,
		store.Attempt{NotificationID: uuid.MustParse(message), Attempt: 1, StartedAt: time.Now(), DurationMS: 12,
			StatusCode: &delivered, Outcome: "delivered"},
		store.Transition{Status: notification.StatusDelivered}))

	f.queries.reset()
	resp, raw := f.get("/v1/notifications/" + member)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[pacedAnswer](t, raw)
	require.NotNil(t, got.Digest, "body: %s", raw)
	require.Equal(t, message, got.Digest.ID)
	require.Equal(t, 2, got.Digest.Items)
	require.Equal(t, pacing.ByDigest, *got.DeferredBy)

	resp, raw = f.get("/v1/notifications/" + message)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Nil(t, decode[pacedAnswer](t, raw).Digest, "the message is not a member of its own digest")

	// A page reads each digest once.
	f.queries.reset()
	resp, raw = f.get("/v1/notifications?limit=10")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	page := decode[pageAnswer[pacedAnswer]](t, raw)
	require.Len(t, page.Data, 3)
	digestReads := 0
	for _, q := range f.queries.all() {
		if strings.Contains(q, "FROM digests") {
			digestReads++
		}
	}
	require.Equal(t, 1, digestReads)

	for _, id := range []string{member, other} {
		resp, raw = f.get("/v1/notifications/" + id + "/attempts")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		attempts := decode[pageAnswer[struct {
			Attempt int    `json:"attempt"`
			Outcome string `json:"outcome"`
		}]](t, raw)
		require.Len(t, attempts.Data, 1, "a member's attempts are its digest message's")
		require.Equal(t, "delivered", attempts.Data[0].Outcome)
	}
}

func TestAnotherTenantsDigestIsNeitherShownNorItsAttemptsRead(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	other, err := store.SetTenant(ctx, f.pool, "elsewhere", store.TenantSettings{})
	require.NoError(t, err)
	member := f.create(`{"channel":"sms","recipient":"+14155550123","content":"item","category":"news","digestKey":"daily"}`)
	foreign := uuid.Must(uuid.NewV7())
	_, err = f.pool.Exec(ctx, `INSERT INTO digests (id, tenant_id, category, recipient_key, digest_key, closes_at, max_items, items)
		VALUES ($1, $2, 'news', '+14155550123', 'daily', now(), 50, 7)`, foreign, other.ID)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE notifications SET digest_id = $1 WHERE id = $2`, foreign, member)
	require.NoError(t, err)

	resp, raw := f.get("/v1/notifications/" + member)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Nil(t, decode[pacedAnswer](t, raw).Digest)
	resp, raw = f.get("/v1/notifications/" + member + "/attempts")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"data":[]}`, string(raw))
}
