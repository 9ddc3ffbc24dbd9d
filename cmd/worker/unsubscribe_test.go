package main

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
)

// TestSignsUnsubscribeLinksOnlyWithAPublicBaseURL: without PUBLIC_BASE_URL
// the worker signs nothing and says so; with it, it signs with the secret
// the API opens tokens with.
func TestSignsUnsubscribeLinksOnlyWithAPublicBaseURL(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()

	core, logged := observer.New(zap.InfoLevel)
	off, err := loadUnsubscribe(ctx, config.Config{}, pool, zap.New(core))
	require.NoError(t, err)
	require.Nil(t, off)
	require.Equal(t, 1, logged.FilterMessage("PUBLIC_BASE_URL is not set: emails carry no List-Unsubscribe header").Len())

	signer, err := loadUnsubscribe(ctx, config.Config{PublicBaseURL: "https://notify.example.com"}, pool, zap.NewNop())
	require.NoError(t, err)
	require.NotNil(t, signer)
	api, err := unsubscribe.Load(ctx, pool)
	require.NoError(t, err)
	_, err = api.Verify(signer.Sign(unsubscribe.Token{TenantID: uuid.New(), Channel: "email", Address: "ada@example.com", Category: "news"}))
	require.NoError(t, err, "the API opens what the worker signed")
}
