package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

func TestListPrintsATableWithTheFilters(t *testing.T) {
	f := newFakeAPI(t)
	a, b := notification(newID(), client.StatusFAILED), notification(newID(), client.StatusFAILED)
	b.Recipient = "+14155550199"
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.NotificationPage{Data: []client.Notification{a, b}, NextCursor: ptr("cursor-2")})
	})

	res := f.dispatchctl("list", "--status", "failed", "--channel", "sms", "--priority", "HIGH", "--batch", a.ID.String(),
		"--created-from", "2026-01-02T14:00:00Z", "--created-to", "2026-01-02T17:00:00+01:00", "--limit", "2")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	req := f.only()
	assert.Equal(t, "/v1/notifications", req.Path)
	assert.Equal(t, "Bearer test-key", req.Header.Get("Authorization"))
	assert.Equal(t, map[string][]string{
		"status": {"FAILED"}, "channel": {"sms"}, "priority": {"HIGH"}, "batchId": {a.ID.String()},
		"createdFrom": {"2026-01-02T14:00:00Z"}, "createdTo": {"2026-01-02T16:00:00Z"}, "limit": {"2"},
	}, req.Query)

	lines := strings.Split(strings.TrimRight(res.stdout, "\n"), "\n")
	require.Len(t, lines, 3, res.stdout)
	assert.Regexp(t, `^ID\s+STATUS\s+CHANNEL\s+PRIORITY\s+ATTEMPTS\s+CREATED\s+SCHEDULED\s+DEFERRED BY\s+RECIPIENT$`, lines[0])
	assert.Regexp(t, `^`+a.ID.String()+`\s+FAILED\s+sms\s+HIGH\s+1\s+2026-01-02T15:04:05.123Z\s+-\s+-\s+\+14155550123$`, lines[1])
	assert.Regexp(t, `^`+b.ID.String()+`\s+FAILED\s+sms\s+HIGH\s+1\s+2026-01-02T15:04:05.123Z\s+-\s+-\s+\+14155550199$`, lines[2])
	assert.Equal(t, len(lines[0])-len("RECIPIENT"), strings.Index(lines[1], "+1415"), "the columns line up")
	assert.Equal(t, "more: --cursor cursor-2 (or --all)\n", res.stderr)
}

func TestListJSONPrintsThePage(t *testing.T) {
	f := newFakeAPI(t)
	a := notification(newID(), client.StatusDELIVERED)
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.NotificationPage{Data: []client.Notification{a}, NextCursor: ptr("cursor-2")})
	})

	res := f.dispatchctl("list", "--json", "--cursor", "cursor-1")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Equal(t, map[string][]string{"cursor": {"cursor-1"}}, f.only().Query)
	var page client.NotificationPage
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &page), res.stdout)
	require.Len(t, page.Data, 1)
	assert.Equal(t, a.ID, page.Data[0].ID)
	assert.Equal(t, "cursor-2", *page.NextCursor)
	assert.Empty(t, res.stderr, "the JSON carries the cursor")
}

func TestListAllFollowsTheCursors(t *testing.T) {
	f := newFakeAPI(t)
	pages := map[string]client.NotificationPage{
		"":   {Data: []client.Notification{notification(newID(), client.StatusQUEUED), notification(newID(), client.StatusQUEUED)}, NextCursor: ptr("c2")},
		"c2": {Data: []client.Notification{notification(newID(), client.StatusQUEUED)}, NextCursor: ptr("c3")},
		"c3": {Data: []client.Notification{}},
	}
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, pages[r.URL.Query().Get("cursor")])
	})

	res := f.dispatchctl("list", "--all", "--status", "QUEUED", "--limit", "2")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Len(t, strings.Split(strings.TrimSpace(res.stdout), "\n"), 1+3, "a header and three rows")

	res = f.dispatchctl("list", "--all", "--json", "--status", "QUEUED", "--limit", "2")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	var page client.NotificationPage
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &page), res.stdout)
	assert.Len(t, page.Data, 3)
	assert.Nil(t, page.NextCursor)

	var cursors []string
	for _, r := range f.requests() {
		assert.Equal(t, "QUEUED", r.Query["status"][0], "every page with the same filters")
		assert.Equal(t, "2", r.Query["limit"][0])
		cursors = append(cursors, strings.Join(r.Query["cursor"], ","))
	}
	assert.Equal(t, []string{"", "c2", "c3", "", "c2", "c3"}, cursors)
}

func TestListWithNothingPrintsTheHeader(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/notifications", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.NotificationPage{Data: []client.Notification{}})
	})
	res := f.dispatchctl("list", "--all")
	require.Equal(t, app.ExitOK, res.code)
	assert.Regexp(t, `^ID\s+STATUS`, res.stdout)

	res = f.dispatchctl("list", "--json")
	require.Equal(t, app.ExitOK, res.code)
	assert.JSONEq(t, `{"data":[],"nextCursor":null}`, res.stdout)
}
