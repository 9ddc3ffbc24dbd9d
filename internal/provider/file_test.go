package provider_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

const goodFile = `providers:
  - name: sms-primary
    kind: webhook
    url: http://127.0.0.1:9090/a
    secret: ${SMS_PRIMARY_SECRET}
    timeout: 5s
    awaitReceipt: 30s
  - name: sms-backup
    kind: twilio
    accountSid: AC123
    authToken: ${TWILIO_TOKEN}
    from: "+15550000"
  - name: mail
    kind: smtp
    host: 127.0.0.1
    port: 2525
    from: Dispatch <noreply@example.com>
routes:
  sms: [sms-primary, sms-backup]
  email: [mail]
breaker:
  failureThreshold: 5
  openFor: 10s
`

func TestProvidersFileReadsTheDocumentedShape(t *testing.T) {
	f, err := provider.Parse([]byte(goodFile), env(map[string]string{"SMS_PRIMARY_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "TWILIO_TOKEN": "tok"}))
	require.NoError(t, err)
	require.Len(t, f.Providers, 3)
	require.Equal(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", f.Providers[0].Secret, "${VAR} is resolved")
	require.Equal(t, 30*time.Second, f.Providers[0].AwaitReceipt)
	require.Equal(t, []string{"sms-primary", "sms-backup"}, f.Routes["sms"])
	require.Equal(t, 10*time.Second, f.Breaker.OpenFor)

	set, err := provider.NewSet(&f, provider.Defaults{WebhookURL: "http://127.0.0.1:9090/webhook", Timeout: 10 * time.Second,
		ReceiptsURL: "http://127.0.0.1:8080/v1/receipts/"})
	require.NoError(t, err)
	require.Len(t, set.Route("sms"), 2)
	require.Equal(t, provider.DefaultName, set.Route("push")[0].Name, "a channel without a route uses WEBHOOK_SITE_URL")
	require.Equal(t, 10*time.Second, set.Route("email")[0].Timeout, "no timeout: WEBHOOK_TIMEOUT")
	require.Equal(t, 5, set.BreakerSettings()["sms-primary"].FailureThreshold)
}

func TestWithoutAFileOneDefaultProviderServesEveryChannel(t *testing.T) {
	set, err := provider.NewSet(nil, provider.Defaults{WebhookURL: "http://127.0.0.1:9090/webhook", Timeout: time.Second})
	require.NoError(t, err)
	require.False(t, set.Explicit)
	for _, ch := range []string{"sms", "email", "push"} {
		require.Equal(t, provider.DefaultName, set.Route(ch)[0].Name)
	}
	require.Empty(t, set.BreakerSettings(), "no breakers: delivery as without the feature")
}

func TestProvidersFileErrorsNameTheFileLineAndField(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "providers:\n  - name: a\n    kind: webhook\n    urll: http://x\n", "p.yaml:4: urll: unknown field"},
		{"missing url", "providers:\n  - name: a\n    kind: webhook\n", "p.yaml:2: providers[0].url: is required for kind webhook"},
		{"bad kind", "providers:\n  - name: a\n    kind: carrier-pigeon\n", `p.yaml:3: providers[0].kind: "carrier-pigeon" is not webhook, smtp, twilio, apns, fcm or sendgrid`},
		{"unset variable", "providers:\n  - name: a\n    kind: webhook\n    url: http://x\n    secret: ${NOPE}\n", "p.yaml:5: providers[0].secret: references NOPE, which is not set"},
		{"unknown route provider", "providers:\n  - name: a\n    kind: webhook\n    url: http://x\nroutes:\n  sms: [a, b]\n", `p.yaml:5: routes.sms: names "b", which is not a declared provider`},
		{"bad duration", "providers:\n  - name: a\n    kind: webhook\n    url: http://x\n    timeout: soon\n", "p.yaml:5"},
		{"duplicate name", "providers:\n  - name: a\n    kind: webhook\n    url: http://x\n  - name: a\n    kind: webhook\n    url: http://y\n", `p.yaml:5: providers[1].name: "a" is declared twice`},
		{"inline credential", "providers:\n  - name: a\n    kind: webhook\n    url: http://x\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "p.yaml:5: providers[0].secret: must reference the environment"},
		{"receipts from smtp", "providers:\n  - name: m\n    kind: smtp\n    host: h\n    from: a@example.com\n    awaitReceipt: 5s\n", "p.yaml:6: providers[0].awaitReceipt: is not supported for kind smtp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tt.yaml), 0o600))
			_, err := provider.ReadFile(path, env(nil))
			require.Error(t, err)
			require.Contains(t, err.Error(), filepath.Dir(path)+"/"+tt.want)
		})
	}
}

func TestSecretsNeverShowInTheProvidersTarget(t *testing.T) {
	f, err := provider.Parse([]byte("providers:\n  - name: a\n    kind: webhook\n    url: https://user:pa55@hooks.example.com/x?token=t0ken\n"), env(nil))
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{Timeout: time.Second})
	require.NoError(t, err)
	p, _ := set.Get("a")
	require.Equal(t, "https://hooks.example.com", p.Target, "a URL's path and query may carry tokens: only its scheme and host are shown")
}

func TestAProviderNameMustBeAPathSegmentOfItsReceiptsURL(t *testing.T) {
	for _, name := range []string{"sms primary", "sms/primary", "sms?x", "%2F", ".hidden", "-dash", "ünï", strings.Repeat("a", 64)} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			require.NoError(t, os.WriteFile(path, []byte("providers:\n  - name: \""+name+"\"\n    kind: webhook\n    url: http://x\n"), 0o600))
			_, err := provider.ReadFile(path, env(nil))
			require.Error(t, err)
			require.Contains(t, err.Error(), filepath.Dir(path)+`/p.yaml:2: providers[0].name: "`+name+`" is not a provider name`)
		})
	}
	for _, name := range []string{"sms-primary", "twilio_main", "mail.eu", "Push2", strings.Repeat("a", 63)} {
		_, err := provider.Parse([]byte("providers:\n  - name: \""+name+"\"\n    kind: webhook\n    url: http://x\n"), env(nil))
		require.NoError(t, err, name)
	}
}
