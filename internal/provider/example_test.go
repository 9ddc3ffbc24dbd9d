package provider_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

// TestTheExampleProvidersFileIsValid keeps the file make run uses valid.
func TestTheExampleProvidersFileIsValid(t *testing.T) {
	f, err := provider.ReadFile("../../deploy/providers.example.yaml",
		env(map[string]string{"PUSH_PROVIDER_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
	require.NoError(t, err)
	_, err = provider.NewSet(&f, provider.Defaults{ReceiptsURL: "http://127.0.0.1:8080/v1/receipts/"})
	require.NoError(t, err)
}
