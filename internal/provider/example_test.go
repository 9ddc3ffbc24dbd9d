package provider_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// TestTheExampleProvidersFileIsValid keeps the file make run uses valid.
func TestTheExampleProvidersFileIsValid(t *testing.T) {
	// What make run's sink writes for the apns provider: its key and CA.
	apns := newAPNsHarness(t, sink.APNsFakeConfig{})
	dir := t.TempDir()
	apnsKey, apnsCA := filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(apnsKey, apns.p8, 0o600))
	require.NoError(t, os.WriteFile(apnsCA, apns.srv.CA, 0o600))
	// And the fcm provider's service account key.
	fcmAccount, err := fcmKey()
	require.NoError(t, err)
	fcmFile := filepath.Join(dir, "service-account.json")
	require.NoError(t, os.WriteFile(fcmFile, fcmAccount.key, 0o600))
	f, err := provider.ReadFile("../../deploy/providers.example.yaml",
		env(map[string]string{"PUSH_PROVIDER_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
			"APNS_KEY_FILE": apnsKey, "APNS_CA_FILE": apnsCA, "FCM_CREDENTIALS_FILE": fcmFile,
			"SENDGRID_API_KEY": "SG.test", "SENDGRID_EVENT_PUBLIC_KEY": sendgridKnownKey}))
	require.NoError(t, err)
	_, err = provider.NewSet(&f, provider.Defaults{ReceiptsURL: "http://127.0.0.1:8080/v1/receipts/"})
	require.NoError(t, err)
}
