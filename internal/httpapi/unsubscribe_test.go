package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
)

const oneClickForm = "application/x-www-form-urlencoded"

// unsubscribeSetup is the API with a Signer, and the token of an email of
// category to address of the default tenant.
func unsubscribeSetup(t *testing.T, address, category string) (*fixture, *unsubscribe.Signer, string) {
	t.Helper()
	signer, err := unsubscribe.New(bytes.Repeat([]byte{42}, unsubscribe.KeySize))
	require.NoError(t, err)
	f := setup(t, withConfig(func(c *config) { c.Unsubscribe = signer }))
	token := signer.Sign(unsubscribe.Token{TenantID: store.DefaultTenantID, Channel: "email", Address: address, Category: category})
	return f, signer, token
}

// anonymous sends a request with no API key, as a mail client or a
// browser does; body, when set, goes with contentType.
func (f *fixture) anonymous(method, path, contentType string, body []byte) (*http.Response, []byte) {
	f.t.Helper()
	if body == nil {
		contentType = ""
	}
	_, resp, raw, err := f.send(method, path, body, "Authorization", "", "Content-Type", contentType)
	require.NoError(f.t, err)
	return resp, raw
}

func (f *fixture) optOuts() int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.pool.QueryRow(context.Background(), `SELECT count(*) FROM opt_outs`).Scan(&n))
	return n
}

func (f *fixture) refusal(address, category string) string {
	f.t.Helper()
	why, err := store.ConsentRefusal(context.Background(), f.pool, store.DefaultTenantID, "email", address, category)
	require.NoError(f.t, err)
	return why
}

func TestUnsubscribePageAsksAndChangesNothing(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")

	for range 3 { // a scanner, a preview, the person
		resp, body := f.anonymous(http.MethodGet, "/u/"+token, "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
		page := string(body)
		require.Contains(t, page, "marketing")
		require.Contains(t, page, "a•••@example.com", "the address, masked")
		require.NotContains(t, page, "ada@example.com")
		require.Contains(t, page, `<form method="post">`, "the button posts to this same URL")
		require.Contains(t, page, `name="List-Unsubscribe" value="One-Click"`)
		for _, external := range []string{"src=", "href=", "http://", "https://", "<script", "@import", "url("} {
			require.NotContains(t, page, external, "self-contained")
		}
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
		require.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"))
		require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	}
	require.Zero(t, f.optOuts(), "a GET never unsubscribes")
	require.Empty(t, f.refusal("ada@example.com", "marketing"))
}

func TestUnsubscribePageEscapesWhatItShows(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", `promo"><script>alert(1)</script>&`)

	resp, body := f.anonymous(http.MethodGet, "/u/"+token, "", nil)

	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, string(body), "<script>")
	require.Contains(t, string(body), "promo&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;")
}

func TestOneClickPostOptsOutOnceAndRepeatsHarmlessly(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")

	for i := range 3 {
		resp, body := f.anonymous(http.MethodPost, "/u/"+token, oneClickForm, []byte(unsubscribe.OneClick))
		require.Equal(t, http.StatusOK, resp.StatusCode, "post %d: %s", i, body)
		require.Contains(t, string(body), "You are unsubscribed")
		require.Contains(t, string(body), "marketing")
	}

	require.Equal(t, 1, f.optOuts())
	require.Equal(t, "opted-out", f.refusal("ada@example.com", "marketing"))
	require.Empty(t, f.refusal("ada@example.com", "security"), "only the link's category")
	for _, entry := range f.logs.All() {
		require.NotContains(t, fmt.Sprint(entry.Message, entry.ContextMap()), "ada@example.com", "no log line names the address")
	}
	require.Equal(t, 3, f.logs.FilterMessage("unsubscribed").Len(), "one line per post, without the address")
}

func TestOneClickPostGoesOnTheProfileHoldingTheAddress(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")
	ctx := context.Background()
	_, err := f.pool.Exec(ctx, `INSERT INTO recipients (tenant_id, id, preferences) VALUES ($1, 'user-1', '{"marketing":{"sms":true}}')`, store.DefaultTenantID)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO recipient_addresses (tenant_id, recipient_id, channel, position, address)
		VALUES ($1, 'user-1', 'email', 0, 'ada@example.com')`, store.DefaultTenantID)
	require.NoError(t, err)

	resp, body := f.anonymous(http.MethodPost, "/u/"+token, oneClickForm, []byte(unsubscribe.OneClick))

	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var prefs string
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT preferences::text FROM recipients WHERE id = 'user-1'`).Scan(&prefs))
	require.JSONEq(t, `{"marketing":{"sms":true,"email":false}}`, prefs)
	require.Zero(t, f.optOuts())
}

func TestOneClickPostAsMultipart(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	require.NoError(t, w.WriteField("List-Unsubscribe", "One-Click"))
	require.NoError(t, w.Close())

	resp, body := f.anonymous(http.MethodPost, "/u/"+token, w.FormDataContentType(), buf.Bytes())

	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, 1, f.optOuts())
}

func TestPostWithoutTheOneClickBodyChangesNothing(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")
	for name, c := range map[string]struct {
		contentType string
		body        []byte
	}{
		"no body":        {"", nil},
		"another value":  {oneClickForm, []byte("List-Unsubscribe=Yes")},
		"another field":  {oneClickForm, []byte("unsubscribe=One-Click")},
		"the text alone": {"text/plain", []byte(unsubscribe.OneClick)},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := f.in(t).anonymous(http.MethodPost, "/u/"+token, c.contentType, c.body)
			requireProblem(t, resp, body, http.StatusBadRequest)
		})
	}
	require.Zero(t, f.optOuts())
}

func TestABadUnsubscribeLinkIsRefusedAndChangesNothing(t *testing.T) {
	f, signer, token := unsubscribeSetup(t, "ada@example.com", "marketing")
	raw, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	altered := bytes.Clone(raw)
	altered[len(altered)-1] ^= 1
	other, err := unsubscribe.New(bytes.Repeat([]byte{7}, unsubscribe.KeySize))
	require.NoError(t, err)
	tok := unsubscribe.Token{TenantID: store.DefaultTenantID, Channel: "email", Address: "ada@example.com", Category: "marketing"}
	forged := other.Sign(tok)
	tok.IssuedAt = time.Now().Add(-unsubscribe.TTL - time.Hour)
	expired := signer.Sign(tok)

	for name, bad := range map[string]string{
		"altered":   base64.RawURLEncoding.EncodeToString(altered),
		"truncated": token[:len(token)-4],
		"forged":    forged,
		"expired":   expired,
		"junk":      "not-a-token",
	} {
		t.Run(name, func(t *testing.T) {
			f := f.in(t)
			resp, body := f.anonymous(http.MethodGet, "/u/"+bad, "", nil)
			requireProblem(t, resp, body, http.StatusNotFound)
			resp, body = f.anonymous(http.MethodPost, "/u/"+bad, oneClickForm, []byte(unsubscribe.OneClick))
			p := requireProblem(t, resp, body, http.StatusNotFound)
			if name == "expired" {
				require.Contains(t, p.Detail, "expired")
			}
		})
	}
	require.Zero(t, f.optOuts())
}

func TestUnsubscribeLinkOfATenantThatIsGoneIsNotFound(t *testing.T) {
	f, signer, _ := unsubscribeSetup(t, "ada@example.com", "marketing")
	token := signer.Sign(unsubscribe.Token{TenantID: uuid.New(), Channel: "email", Address: "ada@example.com", Category: "marketing"})

	resp, body := f.anonymous(http.MethodPost, "/u/"+token, oneClickForm, []byte(unsubscribe.OneClick))

	requireProblem(t, resp, body, http.StatusNotFound)
	require.Zero(t, f.optOuts())
}

func TestUnsubscribePathsAreUnknownWithoutASigner(t *testing.T) {
	f := setup(t)
	signer, err := unsubscribe.New(bytes.Repeat([]byte{42}, unsubscribe.KeySize))
	require.NoError(t, err)
	token := signer.Sign(unsubscribe.Token{TenantID: store.DefaultTenantID, Channel: "email", Address: "ada@example.com", Category: "marketing"})

	resp, body := f.anonymous(http.MethodGet, "/u/"+token, "", nil)
	requireProblem(t, resp, body, http.StatusNotFound)
	resp, body = f.anonymous(http.MethodPost, "/u/"+token, oneClickForm, []byte(unsubscribe.OneClick))
	requireProblem(t, resp, body, http.StatusNotFound)
	require.Zero(t, f.optOuts())
}

func TestUnsubscribePathServesGetAndPostOnly(t *testing.T) {
	f, _, token := unsubscribeSetup(t, "ada@example.com", "marketing")
	resp, body := f.anonymous(http.MethodDelete, "/u/"+token, "", nil)
	requireProblem(t, resp, body, http.StatusMethodNotAllowed)
	require.True(t, strings.HasPrefix(resp.Header.Get("Allow"), "GET"), resp.Header.Get("Allow"))
	require.Contains(t, resp.Header.Get("Allow"), "POST")
}
