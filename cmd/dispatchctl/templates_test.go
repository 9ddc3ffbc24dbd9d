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

func TestTemplatesPutSendsTheFileAndPrintsTheVersion(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PUT /v1/templates/{name}", func(w http.ResponseWriter, r *http.Request) {
		text := "Merhaba {{ name }}"
		w.Header().Set("Location", "/v1/templates/"+r.PathValue("name"))
		answer(w, http.StatusOK, client.Template{Name: r.PathValue("name"), Version: 2, Channel: "sms", DefaultLocale: "tr",
			Locales: map[string]client.TemplateParts{"tr": {Text: &text}}, CreatedAt: t0, UpdatedAt: t0,
			Links: client.SelfLink{Self: "/v1/templates/" + r.PathValue("name")}})
	})
	file := filepath.Join(t.TempDir(), "t.json")
	body := `{"channel":"sms","defaultLocale":"tr","locales":{"tr":{"text":"Merhaba {{ name }}"}}}`
	require.NoError(t, os.WriteFile(file, []byte(body), 0o600))

	res := f.dispatchctl("templates", "put", "welcome")
	require.Equal(t, app.ExitUsage, res.code, "--file is required")
	res = f.dispatchctl("templates", "put", "welcome", "--file", file)
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	req := f.only()
	assert.Equal(t, "PUT /v1/templates/welcome", req.Method+" "+req.Path)
	assert.JSONEq(t, body, string(req.Body))
	assertField(t, res.stdout, "version", "2")
	assertField(t, res.stdout, "tr.text", "Merhaba {{ name }}")
}

func TestTemplatesRenderSendsDataAndLocale(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("POST /v1/templates/{name}/render", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, client.RenderedTemplate{Template: r.PathValue("name"), Version: 1, Locale: "tr", Text: "Merhaba Ada"})
	})
	res := f.dispatchctl("templates", "render", "welcome", "--data", `{"name":"Ada"}`, "--locale", "tr-TR")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	assert.JSONEq(t, `{"data":{"name":"Ada"},"locale":"tr-TR"}`, string(f.only().Body))
	assertField(t, res.stdout, "locale", "tr")
	assertField(t, res.stdout, "text", "Merhaba Ada")

	res = f.dispatchctl("templates", "render", "welcome", "--data", `[1]`)
	require.Equal(t, app.ExitUsage, res.code)
}
