package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// recipientAnswer is a profile as the tests read it.
type recipientAnswer struct {
	ID        string `json:"id"`
	Addresses struct {
		SMS   *string  `json:"sms"`
		Email *string  `json:"email"`
		Push  []string `json:"push"`
	} `json:"addresses"`
	Timezone    *string                    `json:"timezone"`
	Locale      *string                    `json:"locale"`
	Preferences map[string]map[string]bool `json:"preferences"`
}

type pageAnswer[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"nextCursor"`
}

func (f *fixture) put(path, body string) (*http.Response, []byte) {
	f.t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	return f.do(http.MethodPut, path, b)
}

func (f *fixture) del(path string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(http.MethodDelete, path, nil)
}

func decode[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(raw, &v), "body: %s", raw)
	return v
}

const adaProfile = `{"addresses":{"sms":"+14155550123","email":"ada@example.com","push":["tok-1","tok-2"]},
	"timezone":"Europe/Istanbul","locale":"tr-TR","preferences":{"marketing":{"email":false}}}`

func TestPutRecipientCreatesThenReplacesTheWholeProfile(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/recipients/user:42@acme", adaProfile)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	require.Equal(t, "/v1/recipients/user:42@acme", resp.Header.Get("Location"))
	r := decode[recipientAnswer](t, raw)
	require.Equal(t, "user:42@acme", r.ID)
	require.Equal(t, []string{"tok-1", "tok-2"}, r.Addresses.Push)
	require.Equal(t, "Europe/Istanbul", *r.Timezone)
	require.Equal(t, map[string]map[string]bool{"marketing": {"email": false}}, r.Preferences)

	resp, raw = f.put("/v1/recipients/user:42@acme", `{"addresses":{"email":"ada@new.example"}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	resp, raw = f.get("/v1/recipients/user:42@acme")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r = decode[recipientAnswer](t, raw)
	require.Equal(t, "ada@new.example", *r.Addresses.Email)
	require.Nil(t, r.Addresses.SMS, "a PUT replaces the whole profile")
	require.Empty(t, r.Addresses.Push)
	require.Nil(t, r.Timezone)
	require.Nil(t, r.Locale)
	require.Empty(t, r.Preferences)

	resp, _ = f.del("/v1/recipients/user:42@acme")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, raw = f.get("/v1/recipients/user:42@acme")
	requireProblem(t, resp, raw, http.StatusNotFound)
}

func TestPutRecipientNamesEveryBadField(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/recipients/u1", `{"addresses":{"sms":"4155550123","email":"not an address","push":["ok","ok",""],"fax":"1"},
		"timezone":"Mars/Olympus","locale":"english please","preferences":{"marketing":{"fax":true,"email":"no"},"bad name!":{}}}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.ElementsMatch(t, []string{"addresses.sms", "addresses.email", "addresses.push[1]", "addresses.push[2]", "addresses.fax",
		"timezone", "locale", "preferences.marketing.fax", "preferences.marketing.email", "preferences.bad name!"}, fieldNames(p))

	for _, tz := range []string{"Local", ""} {
		resp, raw = f.put("/v1/recipients/u1", `{"timezone":"`+tz+`"}`)
		p = requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, []string{"timezone"}, fieldNames(p), tz)
	}
	resp, raw = f.put("/v1/recipients/u1", `{"preferences":{"marketing":{"email":false}},"nickname":"x"}`)
	p = requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"nickname"}, fieldNames(p))

	resp, raw = f.put("/v1/recipients/"+url.PathEscape("has space"), `{}`)
	p = requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"recipientId"}, fieldNames(p))
	require.Zero(t, count(t, f.pool, "recipients"), "nothing was stored")
}

func TestListRecipientsPagesWithACursor(t *testing.T) {
	f := setup(t)
	for _, id := range []string{"c", "a", "b"} {
		resp, raw := f.put("/v1/recipients/"+id, `{"addresses":{"push":["tok-`+id+`"]}}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	}
	var ids []string
	path := "/v1/recipients?limit=2"
	for {
		resp, raw := f.get(path)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
		page := decode[pageAnswer[recipientAnswer]](t, raw)
		for _, r := range page.Data {
			ids = append(ids, r.ID)
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/recipients?limit=2&cursor=" + *page.NextCursor
	}
	require.Equal(t, []string{"a", "b", "c"}, ids)

	resp, raw := f.get("/v1/recipients?lmit=2")
	p := requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"lmit"}, fieldNames(p))
}

func TestCategoriesArePutReadListedAndDeleted(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/categories/security", `{"critical":true,"description":"logins"}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	resp, raw = f.put("/v1/categories/security", `{"critical":true}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.NotContains(t, string(raw), "logins", "a PUT replaces the description")
	resp, raw = f.put("/v1/categories/marketing", `{}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	require.Contains(t, string(raw), `"critical":false`)

	resp, raw = f.get("/v1/categories")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	page := decode[pageAnswer[struct {
		Name     string `json:"name"`
		Critical bool   `json:"critical"`
	}]](t, raw)
	require.Len(t, page.Data, 2)
	require.Equal(t, "marketing", page.Data[0].Name)
	require.True(t, page.Data[1].Critical)

	resp, raw = f.put("/v1/categories/bad%20name", `{}`)
	p := requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"name"}, fieldNames(p))
	resp, raw = f.put("/v1/categories/x", `{"critical":"yes"}`)
	p = requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"critical"}, fieldNames(p))

	resp, _ = f.del("/v1/categories/security")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, raw = f.get("/v1/categories/security")
	requireProblem(t, resp, raw, http.StatusNotFound)
}

// suppressionAnswer is a suppression as the tests read it.
type suppressionAnswer struct {
	Channel        string  `json:"channel"`
	Recipient      string  `json:"recipient"`
	Reason         string  `json:"reason"`
	Note           *string `json:"note"`
	NotificationID *string `json:"notificationId"`
}

// TestSuppressionOfAnE164NumberWorksWithThePlusAsIsOrEncoded: the path's
// recipient is percent-decoded, and a literal '+' stays a '+'.
func TestSuppressionOfAnE164NumberWorksWithThePlusAsIsOrEncoded(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/suppressions/sms/%2B14155550123", `{"note":"asked by phone"}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	s := decode[suppressionAnswer](t, raw)
	require.Equal(t, suppressionAnswer{Channel: "sms", Recipient: "+14155550123", Reason: "manual", Note: ptr("asked by phone")}, s)
	require.Equal(t, "/v1/suppressions/sms/+14155550123", resp.Header.Get("Location"))

	resp, raw = f.get("/v1/suppressions/sms/+14155550123")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	resp, raw = f.put("/v1/suppressions/sms/+14155550123", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.Nil(t, decode[suppressionAnswer](t, raw).Note, "a PUT replaces the note")

	resp, raw = f.get("/v1/suppressions?channel=sms&recipient=%2B14155550123")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.Len(t, decode[pageAnswer[suppressionAnswer]](t, raw).Data, 1)

	resp, _ = f.del("/v1/suppressions/sms/+14155550123")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, raw = f.del("/v1/suppressions/sms/%2B14155550123")
	requireProblem(t, resp, raw, http.StatusNotFound)
}

func TestSuppressionsAreValidatedFilteredAndPaged(t *testing.T) {
	f := setup(t)
	for _, p := range []string{"email/a%40example.com", "email/b@example.com", "push/tok-1", "sms/+14155550100"} {
		resp, raw := f.put("/v1/suppressions/"+p, `{"reason":"bounced"}`)
		require.Equal(t, http.StatusCreated, resp.StatusCode, "%s: %s", p, raw)
	}
	require.NoError(t, store.Suppress(context.Background(), f.pool, store.DefaultTenantID, "email", "c@example.com", store.SuppressComplained, nil))

	var seen []string
	path := "/v1/suppressions?channel=email&limit=2"
	for {
		resp, raw := f.get(path)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
		page := decode[pageAnswer[suppressionAnswer]](t, raw)
		for _, s := range page.Data {
			seen = append(seen, s.Recipient)
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/suppressions?channel=email&limit=2&cursor=" + *page.NextCursor
		// The cursor is bound to its filters.
		resp, raw = f.get("/v1/suppressions?channel=sms&limit=2&cursor=" + *page.NextCursor)
		p := requireProblem(t, resp, raw, http.StatusBadRequest)
		require.Equal(t, []string{"cursor"}, fieldNames(p))
	}
	require.ElementsMatch(t, []string{"a@example.com", "b@example.com", "c@example.com"}, seen)
	require.Len(t, seen, 3, "no row twice")

	resp, raw := f.get("/v1/suppressions?reason=complained")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []suppressionAnswer{{Channel: "email", Recipient: "c@example.com", Reason: "complained"}},
		decode[pageAnswer[suppressionAnswer]](t, raw).Data)

	resp, raw = f.get("/v1/suppressions?reason=bored&channel=fax")
	p := requireProblem(t, resp, raw, http.StatusBadRequest)
	require.ElementsMatch(t, []string{"reason", "channel"}, fieldNames(p))
	resp, raw = f.put("/v1/suppressions/sms/4155550100", "")
	p = requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"recipient"}, fieldNames(p))
	resp, raw = f.put("/v1/suppressions/fax/123", "")
	p = requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"channel"}, fieldNames(p))
	resp, raw = f.put("/v1/suppressions/email/d@example.com", `{"reason":"bored"}`)
	p = requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"reason"}, fieldNames(p))
}

// TestDeletingARecipientErasesItsAddressesSuppressions: DELETE erases the
// person, with the suppressions of every address the profile held.
func TestDeletingARecipientErasesItsAddressesSuppressions(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/recipients/ada", adaProfile)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	for _, p := range []string{"email/ada@example.com", "push/tok-2", "email/bob@example.com"} {
		resp, raw = f.put("/v1/suppressions/"+p, "")
		require.Equal(t, http.StatusCreated, resp.StatusCode, "%s: %s", p, raw)
	}
	resp, _ = f.del("/v1/recipients/ada")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	_, raw = f.get("/v1/suppressions")
	require.Equal(t, []suppressionAnswer{{Channel: "email", Recipient: "bob@example.com", Reason: "manual"}},
		decode[pageAnswer[suppressionAnswer]](t, raw).Data)
}

// TestAnotherTenantsRecipientsCategoriesAndSuppressionsAreNotFound: every
// recipient-side resource of tenant A answers 404 to tenant B on read and
// delete, is absent from B's lists, and B's PUT of the same name makes B's
// own resource without touching A's.
func TestAnotherTenantsRecipientsCategoriesAndSuppressionsAreNotFound(t *testing.T) {
	a := setup(t)
	b := a.as(a.tenantKey("tenant-b"))
	for _, put := range []struct{ path, body string }{
		{"/v1/recipients/ada", adaProfile},
		{"/v1/categories/security", `{"critical":true}`},
		{"/v1/suppressions/sms/+14155550123", `{"reason":"unsubscribed"}`},
	} {
		resp, raw := a.put(put.path, put.body)
		require.Equal(t, http.StatusCreated, resp.StatusCode, "%s: %s", put.path, raw)
	}
	for _, path := range []string{"/v1/recipients/ada", "/v1/categories/security", "/v1/suppressions/sms/+14155550123"} {
		t.Run(path, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodDelete} {
				resp, raw := b.in(t).do(method, path, nil)
				p := requireProblem(t, resp, raw, http.StatusNotFound)
				require.Equal(t, "/problems/not-found", p.Type)
			}
		})
	}
	for _, list := range []string{"/v1/recipients", "/v1/categories", "/v1/suppressions", "/v1/suppressions?recipient=%2B14155550123"} {
		resp, raw := b.get(list)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Empty(t, decode[pageAnswer[json.RawMessage]](t, raw).Data, "B lists none of A's: %s", list)
	}
	// B's PUT of the same names creates B's own, and A's are unchanged.
	resp, raw := b.put("/v1/recipients/ada", `{"locale":"en"}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	resp, raw = b.put("/v1/categories/security", `{}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	resp, raw = b.put("/v1/suppressions/sms/+14155550123", "")
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	resp, raw = b.del("/v1/recipients/ada")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "body: %s", raw)

	_, raw = a.get("/v1/recipients/ada")
	require.Equal(t, "+14155550123", *decode[recipientAnswer](t, raw).Addresses.SMS)
	_, raw = a.get("/v1/categories/security")
	require.Contains(t, string(raw), `"critical":true`)
	_, raw = a.get("/v1/suppressions/sms/+14155550123")
	require.Equal(t, "unsubscribed", decode[suppressionAnswer](t, raw).Reason)
	// A's recipients list cursor does not serve B.
	_, _ = a.put("/v1/recipients/bob", `{}`)
	_, raw = a.get("/v1/recipients?limit=1")
	cursor := decode[pageAnswer[recipientAnswer]](t, raw).NextCursor
	require.NotNil(t, cursor)
	resp, raw = b.get("/v1/recipients?limit=1&cursor=" + *cursor)
	p := requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Equal(t, []string{"cursor"}, fieldNames(p))
}

func ptr[T any](v T) *T { return &v }

func (f *fixture) patch(path, body string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(http.MethodPatch, path, []byte(body), "Content-Type", "application/merge-patch+json")
}

// TestPatchRecipientMergesPerRFC7396: null removes a member, objects merge
// member by member, the push list is replaced whole, and the result is
// checked as a PUT body is.
func TestPatchRecipientMergesPerRFC7396(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/recipients/ada", adaProfile)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)

	resp, raw = f.patch("/v1/recipients/ada", `{"timezone":null,"addresses":{"sms":null,"push":["tok-9"]},
		"preferences":{"marketing":{"sms":false},"news":{"push":false}}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	r := decode[recipientAnswer](t, raw)
	require.Nil(t, r.Timezone)
	require.Equal(t, "tr-TR", *r.Locale, "what the patch does not name stays")
	require.Nil(t, r.Addresses.SMS)
	require.Equal(t, "ada@example.com", *r.Addresses.Email)
	require.Equal(t, []string{"tok-9"}, r.Addresses.Push)
	require.Equal(t, map[string]map[string]bool{"marketing": {"email": false, "sms": false}, "news": {"push": false}}, r.Preferences)

	resp, raw = f.patch("/v1/recipients/ada", `{"preferences":{"marketing":{"email":null}},"addresses":{"email":"nope"}}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"addresses.email"}, fieldNames(p))
	_, raw = f.get("/v1/recipients/ada")
	require.Equal(t, "ada@example.com", *decode[recipientAnswer](t, raw).Addresses.Email, "a refused patch changes nothing")

	resp, raw = f.patch("/v1/recipients/ada", `{"preferences":{"marketing":null}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.Equal(t, map[string]map[string]bool{"news": {"push": false}}, decode[recipientAnswer](t, raw).Preferences)

	resp, raw = f.do(http.MethodPatch, "/v1/recipients/ada", []byte(`{"locale":"en"}`))
	requireProblem(t, resp, raw, http.StatusUnsupportedMediaType)
	resp, raw = f.patch("/v1/recipients/nobody", `{"locale":"en"}`)
	requireProblem(t, resp, raw, http.StatusNotFound)
	resp, raw = f.as(f.tenantKey("tenant-b")).patch("/v1/recipients/ada", `{"locale":"en"}`)
	requireProblem(t, resp, raw, http.StatusNotFound)
}
