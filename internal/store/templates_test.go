package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
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
