package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

type page struct {
	Data []struct {
		ID        string    `json:"id"`
		Status    string    `json:"status"`
		Channel   string    `json:"channel"`
		Priority  string    `json:"priority"`
		CreatedAt time.Time `json:"createdAt"`
	} `json:"data"`
	NextCursor *string `json:"nextCursor"`
}

func (f *fixture) list(query string) page {
	f.t.Helper()
	resp, body := f.get("/v1/notifications?" + query)
	require.Equal(f.t, http.StatusOK, resp.StatusCode, "body: %s", body)
	var p page
	require.NoError(f.t, json.Unmarshal(body, &p))
	return p
}

// listAll pages through the listing for query with page size limit and
// returns the ids in the order seen.
func (f *fixture) listAll(query string, limit int) []string {
	f.t.Helper()
	var ids []string
	q := query + "&limit=" + strconv.Itoa(limit)
	for range 1000 {
		p := f.list(q)
		require.LessOrEqual(f.t, len(p.Data), limit)
		for _, n := range p.Data {
			ids = append(ids, n.ID)
		}
		if p.NextCursor == nil {
			return ids
		}
		q = query + "&limit=" + strconv.Itoa(limit) + "&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	f.t.Fatal("the listing never ended")
	return nil
}

// backdate sets created_at, so tests control the listing order.
func (f *fixture) backdate(id string, at time.Time) {
	f.t.Helper()
	_, err := f.pool.Exec(context.Background(), `UPDATE notifications SET created_at = $2 WHERE id = $1`, id, at)
	require.NoError(f.t, err)
}

func TestListPagesNewestFirstThroughEveryNotificationOnce(t *testing.T) {
	f := setup(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	type row struct {
		id string
		at time.Time
	}
	var rows []row
	for i := range 7 {
		// Pairs share a created_at, so the id must break ties.
		r := row{id: f.create(smsBody), at: base.Add(time.Duration(i/2) * time.Second)}
		f.backdate(r.id, r.at)
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b row) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return strings.Compare(b.id, a.id) // UUIDs in canonical form sort as their bytes
	})
	want := make([]string, len(rows))
	for i, r := range rows {
		want[i] = r.id
	}

	first := f.list("limit=3")
	require.Len(t, first.Data, 3)
	require.NotNil(t, first.NextCursor)
	require.Equal(t, want, f.listAll("", 3))
	require.Equal(t, want, f.listAll("", 2))
	require.Equal(t, want, f.listAll("", 100))

	last := f.list("limit=7")
	require.Len(t, last.Data, 7)
	require.Nil(t, last.NextCursor, "no cursor when nothing follows")
}

func TestListDefaultsTo50PerPage(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications/batch", batchOf(60))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %.300s", body)
	p := f.list("")
	require.Len(t, p.Data, 50)
	require.NotNil(t, p.NextCursor)
}

func TestListWhileNotificationsAreAddedNeitherMissesNorRepeats(t *testing.T) {
	f := setup(t)
	var existing []string
	for range 10 {
		existing = append(existing, f.create(smsBody))
	}

	seen := map[string]int{}
	p := f.list("limit=3")
	for {
		for _, n := range p.Data {
			seen[n.ID]++
		}
		// Others keep writing between pages.
		f.create(smsBody)
		f.create(smsBody)
		if p.NextCursor == nil {
			break
		}
		p = f.list("limit=3&cursor=" + url.QueryEscape(*p.NextCursor))
	}
	for _, id := range existing {
		require.Equal(t, 1, seen[id], "notification %s seen %d times", id, seen[id])
	}
}

func TestListFiltersCombine(t *testing.T) {
	f := setup(t)
	sms := f.create(`{"channel":"sms","recipient":"+14155550123","content":"a","priority":"HIGH"}`)
	email := f.create(`{"channel":"email","recipient":"u@example.com","subject":"s","content":"b","priority":"LOW"}`)
	push := f.create(`{"channel":"push","recipient":"tok","content":"c"}`)
	resp, body := f.post("/v1/notifications/"+push+"/cancel", "", "Content-Type", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	f.backdate(email, old)
	_, batch := f.post("/v1/notifications/batch", batchOf(2))
	var b struct {
		BatchID       string `json:"batchId"`
		Notifications []struct {
			ID string `json:"id"`
		} `json:"notifications"`
	}
	require.NoError(t, json.Unmarshal(batch, &b))

	ids := func(query string) []string { return f.listAll(query, 100) }
	require.Equal(t, []string{sms}, ids("channel=sms&priority=HIGH"))
	require.Equal(t, []string{email}, ids("channel=email"))
	require.Equal(t, []string{push}, ids("status=CANCELLED"))
	require.Equal(t, []string{email}, ids("priority=LOW"))
	require.ElementsMatch(t, []string{b.Notifications[0].ID, b.Notifications[1].ID}, ids("batchId="+b.BatchID))
	require.Equal(t, []string{email}, ids("createdTo="+url.QueryEscape(old.Add(time.Second).Format(time.RFC3339))))
	require.NotContains(t, ids("createdFrom="+url.QueryEscape(old.Add(time.Second).Format(time.RFC3339))), email)
	require.Equal(t, []string{email}, ids("createdFrom="+url.QueryEscape(old.Format(time.RFC3339Nano))+
		"&createdTo="+url.QueryEscape(old.Add(time.Microsecond).Format(time.RFC3339Nano))), "createdFrom is inclusive")
	require.Empty(t, ids("status=DELIVERED"))
	require.Empty(t, ids("batchId="+uuid.NewString()))
}

func TestListRejectsBadQueryWith400NamingEachParameter(t *testing.T) {
	f := setup(t)
	f.create(smsBody)
	f.create(smsBody)
	cursor := *f.list("limit=1").NextCursor

	for _, tc := range []struct {
		query  string
		fields []string
	}{
		{"limit=0", []string{"limit"}},
		{"limit=101", []string{"limit"}},
		{"limit=ten", []string{"limit"}},
		{"status=LOST", []string{"status"}},
		{"channel=fax&priority=URGENT", []string{"channel", "priority"}},
		{"batchId=123", []string{"batchId"}},
		{"createdFrom=yesterday", []string{"createdFrom"}},
		{"createdFrom=2026-01-02T00:00:00Z&createdTo=2026-01-01T00:00:00Z", []string{"createdTo"}},
		{"statuss=FAILED", []string{"statuss"}},
		{"status=FAILED&status=QUEUED", []string{"status"}},
		{"cursor=not-a-cursor", []string{"cursor"}},
		{"cursor=" + url.QueryEscape(cursor) + "&channel=sms", []string{"cursor"}},
	} {
		resp, body := f.get("/v1/notifications?" + tc.query)
		p := requireProblem(t, resp, body, http.StatusBadRequest)
		require.Equal(t, "/problems/validation-error", p.Type)
		require.Equal(t, tc.fields, fieldNames(p), "query %s", tc.query)
	}

	// The page size may change while paging; the filters may not.
	p := f.list("limit=5&cursor=" + url.QueryEscape(cursor))
	require.Len(t, p.Data, 1)
}

// batchOf is a batch request body of n sms notifications.
func batchOf(n int) string {
	items := make([]map[string]string, n)
	for i := range items {
		items[i] = map[string]string{"channel": "sms", "recipient": "+14155550123", "content": "item " + strconv.Itoa(i)}
	}
	raw, _ := json.Marshal(map[string]any{"notifications": items})
	return string(raw)
}
