package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// deferred waits until the notification is SCHEDULED, deferred by by, and
// answers it.
func (s *stack) deferred(id, by string) map[string]any {
	s.t.Helper()
	var last map[string]any
	require.Eventually(s.t, func() bool {
		_, last = s.get("/v1/notifications/" + id)
		return last["status"] == "SCHEDULED" && last["deferredBy"] == by
	}, 30*time.Second, 50*time.Millisecond, "notification %s never deferred by %s; last: %v", id, by, func() any { return last })
	return last
}

// workerMetrics answers the worker's /metrics text.
func (s *stack) workerMetrics() string {
	s.t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + s.envValue("WORKER_METRICS_PORT") + "/metrics")
	require.NoError(s.t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	return string(raw)
}

// scheduledAt reads a notification's scheduledAt.
func scheduledAt(t *testing.T, n map[string]any) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, n["scheduledAt"].(string))
	require.NoError(t, err, n)
	return at
}

// A profile inside its quiet hours: a non-critical notification waits
// until the window's end (SCHEDULED, deferredBy quiet-hours, scheduledAt =
// the end), a critical one goes at once; the one waiting can be cancelled,
// and one that would expire first fails expired, nothing sent.
func TestQuietHoursDeferANonCriticalNotificationToTheirEnd(t *testing.T) {
	s := setup(t)
	loc, err := time.LoadLocation("Europe/Istanbul")
	require.NoError(t, err)
	now := time.Now().In(loc)
	window := pacing.QuietHours{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(2 * time.Hour).Format("15:04")}
	_, end := window.Until(time.Now(), loc)
	code, p := s.put("/v1/recipients/ada", map[string]any{
		"addresses": map[string]any{"sms": "+15550100"}, "timezone": "Europe/Istanbul",
		"quietHours": map[string]any{"start": window.Start, "end": window.End},
	})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, p)
	code, c := s.put("/v1/categories/security", map[string]any{"critical": true})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, c)

	waiting := s.accepted(map[string]any{"recipientId": "ada", "channel": "sms", "category": "news", "content": "digest of the day"})
	n := s.deferred(waiting, "quiet-hours")
	require.WithinDuration(t, end, scheduledAt(t, n), time.Second, "it waits until the window ends")
	require.EqualValues(t, 0, n["attempts"], "a hold spends no attempt")

	critical := s.accepted(map[string]any{"recipientId": "ada", "channel": "sms", "category": "security", "content": "your code is 1234"})
	s.waitStatus(critical, "DELIVERED", 30*time.Second)
	uncategorized := s.accepted(map[string]any{"recipientId": "ada", "channel": "sms", "content": "no category: not critical"})
	s.deferred(uncategorized, "quiet-hours")

	summaries := s.summaries(waiting)
	require.Contains(t, summaries, "quiet hours until "+end.In(loc).Format("15:04")+" Europe/Istanbul", summaries)

	code, _, raw := s.request(http.MethodPost, "/v1/notifications/"+waiting+"/cancel", nil)
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, code, string(raw))
	s.waitStatus(waiting, "CANCELLED", 30*time.Second)

	expiring := s.accepted(map[string]any{"recipientId": "ada", "channel": "sms", "category": "news", "content": "too late",
		"expiresAt": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)})
	n = s.waitStatus(expiring, "FAILED", 30*time.Second)
	require.Equal(t, "expired", n["failureReason"], n)
	require.Equal(t, 1, s.sink.Stats().Requests, "only the critical one was sent")
}

// A throttle of 2 per window on 5 notifications to one address: 2 go at
// once, 3 wait (SCHEDULED, deferredBy throttle) for free slots; all 5 are
// delivered, none dropped, and no window saw more than 2.
func TestAThrottleDefersTheExcessAndDropsNothing(t *testing.T) {
	s := setup(t)
	per := 3 * time.Second
	code, c := s.put("/v1/categories/promo", map[string]any{"throttle": map[string]any{"limit": 2, "per": per.String()}})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, c)

	var ids []string
	for range 5 {
		ids = append(ids, s.accepted(map[string]any{"channel": "sms", "recipient": "+15550101", "category": "promo", "content": "sale"}))
	}
	deferred := 0
	require.Eventually(t, func() bool {
		deferred = 0
		for _, id := range ids {
			if _, n := s.get("/v1/notifications/" + id); n["deferredBy"] == "throttle" {
				deferred++
			}
		}
		return deferred == 3
	}, 10*time.Second, 50*time.Millisecond, "3 of 5 wait for the throttle; saw %d", func() any { return deferred })
	for _, id := range ids {
		s.waitStatus(id, "DELIVERED", 30*time.Second)
	}
	require.Equal(t, 5, s.sink.Stats().Delivered)
	// Slots are taken in PostgreSQL just before each send: arrivals a hair
	// less than per apart may share a window at the sink.
	require.LessOrEqual(t, s.sink.MaxInWindow(per-200*time.Millisecond, ""), 2, "at most 2 reach the provider per window")
}

// digestItem is one member as a digest's webhook lists it.
type digestItem struct {
	ID      string `json:"id"`
	Content string `json:"content"`
}

// Five notifications with one digest key in a digesting category become
// one provider message listing the five; each ends DELIVERED with the
// digest's id and size, and shows the message's attempts. A member
// cancelled before the flush is left out.
func TestADigestSendsItsMembersAsOneMessage(t *testing.T) {
	s := setup(t)
	code, c := s.put("/v1/categories/comments", map[string]any{"digest": map[string]any{"window": "2s", "maxItems": 50}})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, c)

	var ids []string
	for i := range 6 {
		ids = append(ids, s.accepted(map[string]any{"channel": "sms", "recipient": "+15550102", "category": "comments",
			"digestKey": "post-7", "content": "comment " + string(rune('a'+i))}))
	}
	cancelled := ids[5]
	s.deferred(cancelled, "digest")
	code, _, raw := s.request(http.MethodPost, "/v1/notifications/"+cancelled+"/cancel", nil)
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, code, string(raw))
	s.waitStatus(cancelled, "CANCELLED", 30*time.Second)

	var digestID string
	for _, id := range ids[:5] {
		n := s.waitStatus(id, "DELIVERED", 30*time.Second)
		d, ok := n["digest"].(map[string]any)
		require.True(t, ok, "a member shows its digest: %v", n)
		require.EqualValues(t, 5, d["items"], n)
		if digestID == "" {
			digestID = d["id"].(string)
		}
		require.Equal(t, digestID, d["id"], "one digest for all five")
		log := s.providerAttempts(id)
		require.Len(t, log, 1, "a member shows its message's attempt")
		require.Equal(t, "delivered", log[0].Outcome)
	}
	require.Equal(t, 1, s.sink.Stats().Requests, "one provider message")
	rec, ok := s.sink.Record(digestID)
	require.True(t, ok, "the message went under the digest's id")
	var body struct {
		Content string       `json:"content"`
		Items   []digestItem `json:"items"`
	}
	require.NoError(t, json.Unmarshal(rec.Body, &body))
	require.Len(t, body.Items, 5, string(rec.Body))
	for i, item := range body.Items {
		require.Equal(t, ids[i], item.ID, "items in acceptance order")
		require.Equal(t, "comment "+string(rune('a'+i)), item.Content)
	}
	require.Contains(t, body.Content, "- comment a\n- comment b")

	// What the digest cost in Temporal: each member's run, the digest's
	// own, and its message's (the figures the closing note quotes).
	events := func(wfID string) int64 {
		desc, err := s.temporal.DescribeWorkflow(t.Context(), wfID, "")
		require.NoError(t, err)
		return desc.RawResponse.GetWorkflowExecutionInfo().GetHistoryLength()
	}
	t.Logf("digest of 5: member run %d events (the first %d), digest run %d, message run %d",
		events("notification-"+ids[1]), events("notification-"+ids[0]), events("digest-"+digestID), events("notification-"+digestID))
}

// An ordering key's notifications reach the provider in acceptance order,
// each only after the one before it ended, even though every one fails its
// first two attempts.
func TestAnOrderingKeyDeliversInOrderThroughRetries(t *testing.T) {
	s := setup(t)
	s.sink.SetConfig(sink.Config{FailFirst: 2})
	var ids []string
	for i := range 5 {
		ids = append(ids, s.accepted(map[string]any{"channel": "sms", "recipient": "+15550103", "orderingKey": "account-9",
			"content": "event " + string(rune('1'+i))}))
	}
	for _, id := range ids {
		n := s.waitStatus(id, "DELIVERED", 60*time.Second)
		require.NotEqual(t, true, n["orderingBroken"], n)
	}
	for i := 1; i < len(ids); i++ {
		prev, ok := s.sink.Record(ids[i-1])
		require.True(t, ok)
		next, ok := s.sink.Record(ids[i])
		require.True(t, ok)
		require.Equal(t, 3, next.Requests, "two failures, then delivered")
		require.True(t, prev.LastAt.Before(next.FirstAt),
			"notification %d's first attempt came after %d was delivered (%s vs %s)", i, i-1, next.FirstAt, prev.LastAt)
	}
}

const orderingProviders = `
providers:
  - name: stuck
    kind: webhook
    url: {sink}/stuck
  - name: fine
    kind: webhook
    url: {sink}/fine
routes:
  email: [stuck]
  sms: [fine]
  push: [fine]
`

// A head that never succeeds holds the next one for its maxHold only: then
// the next goes, marked orderingBroken, while the head keeps retrying.
func TestAStuckHeadReleasesTheNextAfterMaxHold(t *testing.T) {
	s := setupWith(t, withProviders(orderingProviders))
	s.sink.SetPathConfig("/stuck", sink.Config{FailRate: 1, RetryAfter: 30 * time.Second})
	head := s.accepted(map[string]any{"channel": "email", "recipient": "ada@example.com", "subject": "Hi",
		"orderingKey": "k", "content": "first"})
	s.waitStatus(head, "RETRYING", 30*time.Second)
	accepted := time.Now()
	next := s.accepted(map[string]any{"channel": "sms", "recipient": "+15550104", "orderingKey": "k",
		"maxHold": "2s", "content": "second"})
	s.deferred(next, "ordering")
	n := s.waitStatus(next, "DELIVERED", 30*time.Second)
	require.Equal(t, true, n["orderingBroken"], n)
	require.GreaterOrEqual(t, time.Since(accepted), 2*time.Second, "it waited its maxHold")
	_, h := s.get("/v1/notifications/" + head)
	require.Equal(t, "RETRYING", h["status"], "the head keeps retrying on its own")
	require.Contains(t, s.workerMetrics(), "dispatch_ordering_broken_total 1")
}

// A profile with no quiet hours of its own takes its tenant's default (set
// as dispatchctl tenants set --quiet-hours does), in its timezone (UTC when
// it has none); with the default removed, the next goes at once.
func TestATenantsDefaultQuietHoursApplyToProfilesWithoutTheirOwn(t *testing.T) {
	s := setup(t)
	ctx := t.Context()
	now := time.Now().UTC()
	window := pacing.QuietHours{Start: now.Add(-time.Hour).Format("15:04"), End: now.Add(time.Hour).Format("15:04")}
	_, err := store.SetTenant(ctx, s.db(), store.DefaultTenantName, store.TenantSettings{QuietHours: &window})
	require.NoError(t, err)
	code, p := s.put("/v1/recipients/bob", map[string]any{"addresses": map[string]any{"sms": "+15550105"}})
	require.Contains(t, []int{http.StatusOK, http.StatusCreated}, code, p)

	waiting := s.accepted(map[string]any{"recipientId": "bob", "channel": "sms", "content": "good night"})
	s.deferred(waiting, "quiet-hours")
	byAddress := s.accepted(map[string]any{"channel": "sms", "recipient": "+15550105", "content": "an address has no timezone"})
	s.waitStatus(byAddress, "DELIVERED", 30*time.Second)

	_, err = store.SetTenant(ctx, s.db(), store.DefaultTenantName, store.TenantSettings{QuietHours: store.NoQuietHours})
	require.NoError(t, err)
	now2 := s.accepted(map[string]any{"recipientId": "bob", "channel": "sms", "content": "no window now"})
	s.waitStatus(now2, "DELIVERED", 30*time.Second)
}
