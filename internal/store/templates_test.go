package store_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestEachPutOfATemplateIsANewVersion(t *testing.T) {
	ctx := context.Background()
	pool, a, b := recipientsSetup(t)
	first := store.Template{Name: "welcome", Channel: "email", DefaultLocale: "en",
		Locales: map[string]map[string]string{"en": {"subject": "Hi", "text": "Hello {{ name }}"}}}
	got, created, err := store.PutTemplate(ctx, pool, a, first)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, 1, got.Version)

	second := first
	second.Locales = map[string]map[string]string{"en": first.Locales["en"], "tr": {"subject": "Merhaba", "text": "Selam {{ name }}"}}
	got, created, err = store.PutTemplate(ctx, pool, a, second)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, 2, got.Version)
	require.Equal(t, "Selam {{ name }}", got.Locales["tr"]["text"])

	cur, err := store.GetTemplate(ctx, pool, a, "welcome")
	require.NoError(t, err)
	require.Equal(t, got, cur)
	versions, err := store.ListTemplateVersions(ctx, pool, a, "welcome")
	require.NoError(t, err)
	require.Len(t, versions, 2)
	require.Equal(t, []int{1, 2}, []int{versions[0].Version, versions[1].Version})

	_, err = store.GetTemplate(ctx, pool, b, "welcome")
	require.ErrorIs(t, err, store.ErrNotFound, "another tenant's template is not found")
	list, err := store.ListTemplates(ctx, pool, a, "", 10)
	require.NoError(t, err)
	require.Len(t, list, 1)

	require.NoError(t, store.DeleteTemplate(ctx, pool, a, "welcome"))
	require.ErrorIs(t, store.DeleteTemplate(ctx, pool, a, "welcome"), store.ErrNotFound)
	_, err = store.ListTemplateVersions(ctx, pool, a, "welcome")
	require.ErrorIs(t, err, store.ErrNotFound, "its versions went with it")
}

func TestANotificationKeepsItsTemplateAndEraseClearsItsHTML(t *testing.T) {
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	subject, html, name, locale, version := "Merhaba Ada", "<p>Merhaba <b>Ada</b></p>", "welcome", "tr", 3
	n, err := store.CreateNotification(ctx, pool, store.NewNotification{ID: uuid.Must(uuid.NewV7()),
		Channel: notification.Email, Priority: notification.Normal, Recipient: "ada@example.com",
		Subject: &subject, Content: "Merhaba Ada", Template: &name, TemplateVersion: &version, Locale: &locale, HTML: &html})
	require.NoError(t, err)
	require.Equal(t, html, *n.HTML)
	require.Equal(t, name, *n.Template)
	require.Equal(t, version, *n.TemplateVersion)
	require.Equal(t, locale, *n.Locale)

	op := opNewOperation(t, pool, store.ActionErase, store.OperationFilter{Recipient: opPtr("ada@example.com")})
	opRunAll(t, pool, op.ID, 10)
	erased := opGet(t, pool, n.ID)
	require.Equal(t, store.Erased, erased.Content)
	require.Nil(t, erased.HTML, "the html holds the same words as the content")
	require.Equal(t, name, *erased.Template, "which template it was is not the person's")
}
