package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

const welcomeTemplate = `{"channel":"email","defaultLocale":"en","locales":{
	"en":{"subject":"Welcome, {{ name }}","text":"Hello {{ name }}","html":"<p>Hello {{ name }}</p>"},
	"tr":{"subject":"Hoş geldin, {{ name }}","text":"Merhaba {{ name }}"}}}`

type templateAnswer struct {
	Name     string `json:"name"`
	Version  int    `json:"version"`
	Versions []struct {
		Version int `json:"version"`
	} `json:"versions"`
}

func TestEachPutOfATemplateIsANewVersionShownWithItsHistory(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	require.Equal(t, 1, decode[templateAnswer](t, raw).Version)
	resp, raw = f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.Equal(t, 2, decode[templateAnswer](t, raw).Version)

	resp, raw = f.get("/v1/templates/welcome")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[templateAnswer](t, raw)
	require.Equal(t, 2, got.Version)
	require.Len(t, got.Versions, 2)
	resp, raw = f.get("/v1/templates")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, decode[pageAnswer[templateAnswer]](t, raw).Data, 1)

	resp, _ = f.del("/v1/templates/welcome")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, raw = f.get("/v1/templates/welcome")
	requireProblem(t, resp, raw, http.StatusNotFound)
}

func TestATemplateThatDoesNotParseNamesItsLocaleAndPart(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/templates/broken", `{"channel":"email","defaultLocale":"en","locales":{
		"en":{"subject":"Hi","text":"{% if vip %}never closed"},
		"tr":{"subject":"Selam","text":"ok","html":"{% include 'x' %}","title":"no"}}}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.ElementsMatch(t, []string{"locales.en.text", "locales.tr.html", "locales.tr.title"}, fieldNames(p))

	resp, raw = f.put("/v1/templates/bad", `{"channel":"sms","defaultLocale":"de","locales":{"en":{}}}`)
	p = requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.ElementsMatch(t, []string{"defaultLocale", "locales.en.text"}, fieldNames(p))
}

func TestRenderPreviewsTheLocaleFallingBackToItsLanguage(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)

	resp, raw = f.post("/v1/templates/welcome/render", `{"data":{"name":"Ada"},"locale":"tr-TR"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	r := decode[map[string]any](t, raw)
	require.Equal(t, "tr", r["locale"])
	require.Equal(t, "Merhaba Ada", r["text"])
	require.Equal(t, "Hoş geldin, Ada", r["subject"])
	require.NotContains(t, r, "html", "tr has no html part")

	resp, raw = f.post("/v1/templates/welcome/render", `{"data":{"name":"<b>Ada</b>"},"locale":"de"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	r = decode[map[string]any](t, raw)
	require.Equal(t, "en", r["locale"], "a locale it lacks takes the default")
	require.Equal(t, "<p>Hello &lt;b&gt;Ada&lt;/b&gt;</p>", r["html"])

	resp, raw = f.post("/v1/templates/welcome/render", `{"data":{}}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"data.name"}, fieldNames(p))
	require.Contains(t, p.Errors[0].Message, "template welcome (version 1, locale en)")
}

func TestANotificationRendersItsTemplateAtAcceptance(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	resp, raw = f.put("/v1/recipients/ada", `{"addresses":{"email":"ada@example.com"},"locale":"tr-TR"}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)

	resp, raw = f.post("/v1/notifications", `{"recipientId":"ada","channel":"email","template":"welcome","data":{"name":"Ada"}}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	n := decode[map[string]any](t, raw)
	require.Equal(t, "Merhaba Ada", n["content"], "the profile's locale, by its language")
	require.Equal(t, "tr", n["locale"])
	require.EqualValues(t, 1, n["templateVersion"])

	resp, raw = f.post("/v1/notifications", `{"channel":"email","recipient":"bob@example.com","template":"welcome","data":{"name":"Bob"}}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", raw)
	n = decode[map[string]any](t, raw)
	require.NotContains(t, n, "html", "the answer leaves the html out")
	resp, raw = f.get("/v1/notifications/" + n["id"].(string))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	n = decode[map[string]any](t, raw)
	require.Equal(t, "Welcome, Bob", n["subject"])
	require.Equal(t, "<p>Hello Bob</p>", n["html"], "GET of one notification shows its html")

	for body, fields := range map[string][]string{
		`{"channel":"email","recipient":"b@example.com","template":"welcome","content":"x","data":{"name":"B"}}`: {"template"},
		`{"channel":"sms","recipient":"+14155550123","template":"welcome","data":{"name":"B"}}`:                  {"template"},
		`{"channel":"email","recipient":"b@example.com","template":"nope"}`:                                      {"template"},
		`{"channel":"email","recipient":"b@example.com","template":"welcome","data":[1]}`:                        {"data"},
		`{"channel":"sms","recipient":"+14155550123","content":"x","locale":"tr"}`:                               {"locale"},
	} {
		resp, raw = f.post("/v1/notifications", body)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, fields, fieldNames(p), body)
	}

	resp, raw = f.post("/v1/notifications/batch", `{"notifications":[
		{"channel":"email","recipient":"a@example.com","template":"welcome","data":{"name":"A"}},
		{"channel":"email","recipient":"b@example.com","template":"welcome","locale":"tr","data":{}}]}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"notifications[1].data.name"}, fieldNames(p))
}

func TestATemplatesDataAndLocaleAreInTheIdempotencyFingerprint(t *testing.T) {
	f := setup(t)
	resp, raw := f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", raw)
	send := func(body string) *http.Response {
		resp, _ := f.post("/v1/notifications", body, "Idempotency-Key", "k-1")
		return resp
	}
	first := `{"channel":"email","recipient":"a@example.com","template":"welcome","data":{"name":"A"}}`
	require.Equal(t, http.StatusAccepted, send(first).StatusCode)
	resp, raw = f.put("/v1/templates/welcome", welcomeTemplate)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", raw)
	require.Equal(t, http.StatusOK, send(first).StatusCode, "the same request replays, whatever the template's version now")
	require.Equal(t, http.StatusUnprocessableEntity,
		send(`{"channel":"email","recipient":"a@example.com","template":"welcome","data":{"name":"B"}}`).StatusCode)
	require.Equal(t, http.StatusUnprocessableEntity,
		send(`{"channel":"email","recipient":"a@example.com","template":"welcome","data":{"name":"A"},"locale":"tr"}`).StatusCode)
}
