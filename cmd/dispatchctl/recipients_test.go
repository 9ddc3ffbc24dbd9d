package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

func recipient(id string) client.Recipient {
	return client.Recipient{ID: id, Preferences: client.Preferences{}, CreatedAt: t0, UpdatedAt: t0,
		Links: client.SelfLink{Self: "/v1/recipients/" + id}}
}

func TestRecipientsPutBuildsTheProfileFromFlags(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/recipients/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec := recipient(r.PathValue("id"))
		sms, tz := "+14155550123", "Europe/Istanbul"
		rec.Addresses = client.RecipientAddresses{Sms: &sms, Push: []string{"tok-1", "tok-2"}}
		rec.Timezone = &tz
		w.Header().Set("Location", "/v1/recipients/"+rec.ID)
		answer(w, http.StatusCreated, rec)
	})
	res := f.dispatchctl("recipients", "put", "user:42@acme", "--sms", "+14155550123", "--push", "tok-1", "--push", "tok-2",
		"--timezone", "Europe/Istanbul", "--pref", "marketing.email=false", "--pref", "news.v2.push=true")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	req := f.only()
	assert.Equal(t, "PUT /v1/recipients/user:42@acme", req.Method+" "+req.Path)
	assert.JSONEq(t, `{"addresses":{"sms":"+14155550123","push":["tok-1","tok-2"]},"timezone":"Europe/Istanbul",
		"preferences":{"marketing":{"email":false},"news.v2":{"push":true}}}`, string(req.Body))
	assertField(t, res.stdout, "push", "tok-1 tok-2")
	assertField(t, res.stdout, "timezone", "Europe/Istanbul")
}

func TestRecipientsPutSendsAFileAsIsAndRefusesFlagsWithIt(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/recipients/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/v1/recipients/"+r.PathValue("id"))
		answer(w, http.StatusOK, recipient(r.PathValue("id")))
	})
	file := filepath.Join(t.TempDir(), "p.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"locale":"tr-TR","preferences":{"marketing":{"sms":false}}}`), 0o600))

	res := f.dispatchctl("recipients", "put", "u1", "--file", file, "--sms", "+14155550123")
	require.Equal(t, app.ExitUsage, res.code)
	require.Empty(t, f.requests(), "nothing was sent")

	res = f.dispatchctl("recipients", "put", "u1", "--file", file)
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"locale":"tr-TR","preferences":{"marketing":{"sms":false}}}`, string(f.only().Body))
}

func TestRecipientsDeleteOfAnUnknownProfileExitsOne(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("DELETE /v1/recipients/{id}", func(w http.ResponseWriter, r *http.Request) {
		answerProblem(w, "req-404", client.Problem{Type: "/problems/not-found", Title: "Not found", Status: 404, Detail: "no recipient ada"})
	})
	res := f.dispatchctl("recipients", "delete", "ada")
	require.Equal(t, app.ExitFailed, res.code)
	assert.Contains(t, res.stderr, "no recipient ada")
	assert.Contains(t, res.stderr, "req-404")
}

func TestRecipientsListPrintsThePageAndTheNextCursor(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/recipients", func(w http.ResponseWriter, r *http.Request) {
		next := "next-page"
		answer(w, http.StatusOK, client.RecipientPage{Data: []client.Recipient{recipient("a"), recipient("b")}, NextCursor: &next})
	})
	res := f.dispatchctl("recipients", "list", "--limit", "2")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Equal(t, "/v1/recipients?limit=2", f.only().URL())
	assert.Contains(t, res.stdout, "a ")
	assert.Contains(t, res.stderr, "--cursor next-page")
}

func TestSuppressionsAddListAndRemoveAnE164Number(t *testing.T) {
	f := newFakeAPI(t)
	supp := func(reason client.SuppressionReason) client.Suppression {
		return client.Suppression{Channel: client.ChannelSms, Recipient: "+14155550123", Reason: reason, CreatedAt: t0,
			Links: client.SelfLink{Self: "/v1/suppressions/sms/+14155550123"}}
	}
	f.handle("PUT /v1/suppressions/{channel}/{recipient}", func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "+14155550123", r.PathValue("recipient"))
		w.Header().Set("Location", "/v1/suppressions/sms/+14155550123")
		answer(w, http.StatusCreated, supp(client.SuppressionReasonManual))
	})
	f.handle("GET /v1/suppressions", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.SuppressionPage{Data: []client.Suppression{supp(client.SuppressionReasonUnsubscribed)}})
	})
	f.handle("DELETE /v1/suppressions/{channel}/{recipient}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-1")
		w.WriteHeader(http.StatusNoContent)
	})

	res := f.dispatchctl("suppressions", "add", "sms", "+14155550123", "--note", "asked by phone")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assertField(t, res.stdout, "reason", "manual")
	res = f.dispatchctl("suppressions", "list", "--channel", "sms", "--reason", "unsubscribed", "--recipient", "+14155550123")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Contains(t, res.stdout, "unsubscribed")
	res = f.dispatchctl("suppressions", "remove", "sms", "+14155550123")
	require.Equal(t, app.ExitOK, res.code, res.stderr)

	reqs := f.requests()
	require.Len(t, reqs, 3)
	assert.JSONEq(t, `{"note":"asked by phone"}`, string(reqs[0].Body))
	assert.Equal(t, "/v1/suppressions?channel=sms&reason=unsubscribed&recipient=%2B14155550123", reqs[1].URL())
	assert.Equal(t, "DELETE /v1/suppressions/sms/+14155550123", reqs[2].Method+" "+reqs[2].Path)

	res = f.dispatchctl("suppressions", "add", "fax", "123")
	require.Equal(t, app.ExitUsage, res.code)
	res = f.dispatchctl("suppressions", "list", "--reason", "bored")
	require.Equal(t, app.ExitUsage, res.code)
	require.Len(t, f.requests(), 3, "nothing more was sent")
}

func TestCategoriesPutListAndDelete(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/categories/{name}", func(w http.ResponseWriter, r *http.Request) {
		d := "logins"
		w.Header().Set("Location", "/v1/categories/security")
		answer(w, http.StatusCreated, client.Category{Name: "security", Critical: true, Description: &d, CreatedAt: t0, UpdatedAt: t0,
			Links: client.SelfLink{Self: "/v1/categories/security"}})
	})
	f.handle("GET /v1/categories", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.CategoryPage{Data: []client.Category{{Name: "security", Critical: true, CreatedAt: t0, UpdatedAt: t0,
			Links: client.SelfLink{Self: "/v1/categories/security"}}}})
	})
	f.handle("DELETE /v1/categories/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-1")
		w.WriteHeader(http.StatusNoContent)
	})
	res := f.dispatchctl("categories", "put", "security", "--critical", "--description", "logins")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assertField(t, res.stdout, "critical", "true")
	res = f.dispatchctl("categories", "list")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.Contains(t, res.stdout, "security")
	res = f.dispatchctl("--json", "categories", "delete", "security")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"deleted":"security"}`, res.stdout)
	reqs := f.requests()
	require.Len(t, reqs, 3)
	assert.JSONEq(t, `{"critical":true,"description":"logins"}`, string(reqs[0].Body))
}

func TestRecipientsPatchSendsTheMergePatchWithNulls(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PATCH /v1/recipients/{id}", func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "application/merge-patch+json", r.Header.Get("Content-Type"))
		answer(w, http.StatusOK, recipient(r.PathValue("id")))
	})
	file := filepath.Join(t.TempDir(), "patch.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"timezone":null,"preferences":{"marketing":{"sms":false}}}`), 0o600))
	res := f.dispatchctl("recipients", "patch", "user-42", "--file", file)
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"timezone":null,"preferences":{"marketing":{"sms":false}}}`, string(f.only().Body))

	res = f.dispatchctl("recipients", "patch", "user-42")
	require.Equal(t, app.ExitUsage, res.code)
	require.Len(t, f.requests(), 1, "nothing more was sent")
}

// TestWatchBatchEndsWhenTheRestAreSkipped: SKIPPED is terminal, so a batch
// whose last notifications were skipped is done (exit 1: not all delivered).
func TestWatchBatchEndsWhenTheRestAreSkipped(t *testing.T) {
	f := newFakeAPI(t)
	id := newID()
	f.handle("GET /v1/batches/{batchId}", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, batchSummary(id, 3, func(s *client.BatchSummary_ByStatus) { s.DELIVERED, s.SKIPPED = 2, 1 }))
	})
	res := f.dispatchctl("watch", "--batch", id.String())
	require.Equal(t, app.ExitFailed, res.code)
	assert.Contains(t, res.stdout, "terminal 3/3  DELIVERED=2 SKIPPED=1")
	assert.Equal(t, "error: batch "+id.String()+": 1 of 3 did not end DELIVERED (FAILED=0 CANCELLED=0 SKIPPED=1)\n", res.stderr)
	require.Len(t, f.requests(), 1, "one read: it was done")
}
