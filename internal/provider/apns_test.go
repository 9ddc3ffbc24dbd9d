package provider_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const (
	testTeamID = "TEAM012345"
	testKeyID  = "KEY0123456"
	testTopic  = "com.example.app"
)

// apnsHarness is a fake APNs over TLS and HTTP/2, and the key it trusts.
type apnsHarness struct {
	fake  *sink.APNsFake
	srv   *sink.APNsServer
	p8    []byte
	roots *x509.CertPool
}

func newAPNsHarness(t testing.TB, cfg sink.APNsFakeConfig) *apnsHarness {
	t.Helper()
	p8, pub, err := sink.GenerateAPNsKey()
	require.NoError(t, err)
	cfg.PublicKey, cfg.TeamID, cfg.KeyID = pub, testTeamID, testKeyID
	fake := sink.NewAPNsFake(cfg)
	srv, err := sink.StartAPNs("127.0.0.1:0", fake)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(srv.CA))
	return &apnsHarness{fake: fake, srv: srv, p8: p8, roots: roots}
}

// sender is an apns sender of the harness's key, trusting its CA;
// change adjusts its settings.
func (h *apnsHarness) sender(t testing.TB, change func(*provider.APNsConfig)) *provider.APNs {
	t.Helper()
	cfg := provider.APNsConfig{
		BaseURL: h.srv.URL, TeamID: testTeamID, KeyID: testKeyID, Key: h.p8, Topic: testTopic, RootCAs: h.roots,
	}
	if change != nil {
		change(&cfg)
	}
	a, err := provider.NewAPNs(cfg)
	require.NoError(t, err)
	return a
}

func push(token string) provider.Message {
	return provider.Message{
		NotificationID: uuid.NewString(), Attempt: 1, Channel: "push", Recipient: token,
		Subject: "Your order shipped", Content: "It arrives on Tuesday ✓",
	}
}

// requireNoSecret checks that nothing the sender returned carries the
// key or a provider token the fake saw.
func (h *apnsHarness) requireNoSecret(t *testing.T, res provider.Result) {
	t.Helper()
	text := res.Error + res.Excerpt + res.MessageID
	block := strings.Split(strings.TrimSpace(string(h.p8)), "\n")[1]
	require.NotContains(t, text, block)
	for _, p := range h.fake.Pushes() {
		if p.JWT != "" {
			require.NotContains(t, text, p.JWT)
		}
	}
}

func TestAPNsSendDeliversAnAlertOverHTTP2WithAProviderToken(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{Topic: testTopic})
	m := push("a1b2c3d4")
	res := h.sender(t, nil).Send(context.Background(), m)

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Empty(t, res.Suppress)
	require.Equal(t, m.NotificationID, res.MessageID, "apns-id is the notification id, answered back")

	pushes := h.fake.Pushes()
	require.Len(t, pushes, 1)
	got := pushes[0]
	require.Equal(t, "HTTP/2.0", got.Proto)
	require.Equal(t, "a1b2c3d4", got.Token)
	require.Equal(t, testTopic, got.Topic)
	require.Equal(t, "alert", got.PushType)
	require.Equal(t, m.NotificationID, got.APNsID)
	require.Equal(t, testKeyID, got.KeyID)
	require.Equal(t, testTeamID, got.TeamID)
	require.JSONEq(t, `{"aps":{"alert":{"title":"Your order shipped","body":"It arrives on Tuesday ✓"}},"dispatchId":"`+m.NotificationID+`"}`,
		string(got.Payload))
	require.Equal(t, http.StatusOK, got.Status)
}

func TestAPNsTakesCollapseKeyThreadAndDataFromTheMetadata(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	m := push("a1b2c3d4")
	m.Payload = []byte(`{"id":"x","metadata":{"collapseKey":"order-42","threadId":"orders",` +
		`"data":{"orderId":"42","aps":"not ours to replace","dispatchId":"nor this"}}}`)
	res := h.sender(t, nil).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)

	got := h.fake.Pushes()[0]
	require.Equal(t, "order-42", got.CollapseID)
	require.JSONEq(t, `{"aps":{"alert":{"title":"Your order shipped","body":"It arrives on Tuesday ✓"},"thread-id":"orders"},`+
		`"dispatchId":"`+m.NotificationID+`","orderId":"42"}`, string(got.Payload))

	// A collapse key longer than APNs takes would have the push refused:
	// it goes without one.
	m = push("a1b2c3d4")
	m.Payload = []byte(`{"metadata":{"collapseKey":"` + strings.Repeat("k", 65) + `"}}`)
	res = h.sender(t, nil).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Empty(t, h.fake.Pushes()[1].CollapseID)
}

func TestAPNsProviderTokenIsCachedAcrossSendsAndRenewedAt40Minutes(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	var mu sync.Mutex
	now := time.Now()
	a := h.sender(t, func(c *provider.APNsConfig) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	for range 3 {
		res := a.Send(context.Background(), push("live-token"))
		require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	}
	require.EqualValues(t, 1, a.Tokens())
	pushes := h.fake.Pushes()
	require.Equal(t, pushes[0].JWT, pushes[1].JWT)
	require.Equal(t, pushes[0].JWT, pushes[2].JWT)

	mu.Lock()
	now = now.Add(provider.APNsTokenRenewAfter - time.Minute)
	mu.Unlock()
	require.Equal(t, workflows.OutcomeDelivered, a.Send(context.Background(), push("live-token")).Outcome)
	require.EqualValues(t, 1, a.Tokens(), "a token younger than 40 minutes is kept")

	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	require.Equal(t, workflows.OutcomeDelivered, a.Send(context.Background(), push("live-token")).Outcome)
	require.EqualValues(t, 2, a.Tokens(), "a token 40 minutes old is renewed")
	pushes = h.fake.Pushes()
	require.NotEqual(t, pushes[0].JWT, pushes[4].JWT)
}

func TestAPNsUnregisteredTokenIsPermanentAndSuppressed(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	res := h.sender(t, nil).Send(context.Background(), push("dead-1"))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, http.StatusGone, res.StatusCode)
	require.Equal(t, provider.SuppressUnregistered, res.Suppress)
	require.False(t, res.ProviderFault)
	require.Equal(t, "apns answered 410 Unregistered", res.Error)
	require.Contains(t, res.Excerpt, `"reason":"Unregistered"`)
	require.NotContains(t, res.Error+res.Excerpt, "dead-1", "the device token is the recipient")
	h.requireNoSecret(t, res)
}

func TestAPNsBadDeviceTokenIsPermanentAndSuppressed(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	res := h.sender(t, nil).Send(context.Background(), push("bad-token-7"))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Equal(t, provider.SuppressUnregistered, res.Suppress)
	require.False(t, res.ProviderFault)
	require.Equal(t, "apns answered 400 BadDeviceToken", res.Error)
	h.requireNoSecret(t, res)
}

func TestAPNsOtherBadRequestIsPermanentWithoutSuppression(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{Topic: "com.example.other"})
	res := h.sender(t, nil).Send(context.Background(), push("live-token"))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Empty(t, res.Suppress, "the token may be fine; this push was not")
	require.False(t, res.ProviderFault)
	require.Equal(t, "apns answered 400 TopicDisallowed", res.Error)
}

func TestAPNsTooManyRequestsIsRetriedAfterRetryAfter(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{RetryAfter: 7 * time.Second})
	res := h.sender(t, nil).Send(context.Background(), push("busy-1"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	require.Equal(t, 7*time.Second, res.RetryAfter)
	require.False(t, res.ProviderFault, "TooManyRequests is about one device, not the provider")
	require.Empty(t, res.Suppress)
}

func TestAPNsServerErrorIsRetriedAndTheProvidersFault(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{RetryAfter: 3 * time.Second})
	res := h.sender(t, nil).Send(context.Background(), push("down-1"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, 3*time.Second, res.RetryAfter)
	require.True(t, res.ProviderFault)
}

func TestAPNsExpiredProviderTokenIsRenewedOnceAndResent(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	a := h.sender(t, nil)
	res := a.Send(context.Background(), push("expire-once-1"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.EqualValues(t, 2, a.Tokens())
	pushes := h.fake.Pushes()
	require.Len(t, pushes, 2, "one refusal, one resend, within the same attempt")
	require.Equal(t, http.StatusForbidden, pushes[0].Status)
	require.Equal(t, "ExpiredProviderToken", pushes[0].Reason)
	require.Equal(t, http.StatusOK, pushes[1].Status)
	require.NotEqual(t, pushes[0].JWT, pushes[1].JWT)
	require.Equal(t, pushes[0].APNsID, pushes[1].APNsID)

	// The renewed token serves the next sends.
	require.Equal(t, workflows.OutcomeDelivered, a.Send(context.Background(), push("live-token")).Outcome)
	require.EqualValues(t, 2, a.Tokens())
}

func TestAPNsRefusedProviderTokenIsRenewedOnceThenTheProvidersFault(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	otherKey, _, err := sink.GenerateAPNsKey()
	require.NoError(t, err)
	a := h.sender(t, func(c *provider.APNsConfig) { c.Key = otherKey })
	res := a.Send(context.Background(), push("live-token"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault, "a key APNs refuses is ours: fail over, count against the breaker")
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	require.Equal(t, "apns answered 403 InvalidProviderToken", res.Error)
	require.Len(t, h.fake.Pushes(), 2, "renewed once, not more")
	require.EqualValues(t, 2, a.Tokens())
	require.NotContains(t, res.Error+res.Excerpt, strings.Split(string(otherKey), "\n")[1])
	h.requireNoSecret(t, res)
}

func TestAPNsOtherForbiddenIsTheProvidersFaultWithoutRenewal(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	var mu sync.Mutex
	calls := 0
	// A 403 whose reason is not the token's (a certificate's, an
	// account's): renewing the token cannot help.
	forbidden, err := sink.StartAPNs("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"reason":"Forbidden"}`))
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = forbidden.Close() })
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(forbidden.CA))
	a := h.sender(t, func(c *provider.APNsConfig) { c.BaseURL, c.RootCAs = forbidden.URL, roots })
	res := a.Send(context.Background(), push("live-token"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, "apns answered 403 Forbidden", res.Error)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, calls, "no renewal for a 403 that is not about the token")
	require.EqualValues(t, 1, a.Tokens())
}

func TestAPNsReplyEchoingTheProviderTokenIsKeptWithoutIt(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	var mu sync.Mutex
	var seen string
	// A gateway in front of APNs that quotes the request back.
	echo, err := sink.StartAPNs("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Get("authorization")
		mu.Unlock()
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(`{"reason":"upstream","request":"` + r.Header.Get("authorization") + " " + r.URL.Path + `"}`))
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = echo.Close() })
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(echo.CA))
	res := h.sender(t, func(c *provider.APNsConfig) { c.BaseURL, c.RootCAs = echo.URL, roots }).
		Send(context.Background(), push("device-4242"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	mu.Lock()
	defer mu.Unlock()
	jwtPart := strings.TrimPrefix(seen, "bearer ")
	require.NotEmpty(t, jwtPart)
	require.NotContains(t, res.Excerpt, jwtPart)
	require.Contains(t, res.Excerpt, "[redacted]")
	require.NotContains(t, res.Excerpt, "device-4242")
}

func TestAPNsNoAnswerIsRetriedAndNamesOnlyTheOrigin(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	a := h.sender(t, nil)
	require.NoError(t, h.srv.Close())
	res := a.Send(context.Background(), push("live-secret-device"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.NotContains(t, res.Error, "live-secret-device")
	require.NotContains(t, res.Error, "/3/device")
}

func TestAPNsSpeaksHTTP2WithoutTLSToAnHTTPBase(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	plain := httptest.NewUnstartedServer(h.fake)
	plain.Config.Protocols = new(http.Protocols)
	plain.Config.Protocols.SetUnencryptedHTTP2(true)
	plain.Start()
	t.Cleanup(plain.Close)
	res := h.sender(t, func(c *provider.APNsConfig) { c.BaseURL = plain.URL }).Send(context.Background(), push("live-token"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	pushes := h.fake.Pushes()
	require.Len(t, pushes, 1)
	require.Equal(t, "HTTP/2.0", pushes[0].Proto)
}

func TestAPNsSettings(t *testing.T) {
	p8, _, err := sink.GenerateAPNsKey()
	require.NoError(t, err)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "AuthKey.p8")
	require.NoError(t, os.WriteFile(keyFile, p8, 0o600))
	base := provider.APNsConfig{TeamID: testTeamID, KeyID: testKeyID, KeyFile: keyFile, Topic: testTopic}

	prod, err := provider.NewAPNs(base)
	require.NoError(t, err)
	sandboxCfg := base
	sandboxCfg.Environment = provider.APNsSandbox
	sandbox, err := provider.NewAPNs(sandboxCfg)
	require.NoError(t, err)
	require.NotNil(t, prod)
	require.NotNil(t, sandbox)

	bad := base
	bad.Environment = "staging"
	_, err = provider.NewAPNs(bad)
	require.ErrorContains(t, err, `environment "staging"`)

	// A key file that is not a .p8 EC P-256 key is named, its content not.
	notKey := filepath.Join(dir, "not.p8")
	require.NoError(t, os.WriteFile(notKey, []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"), 0o600))
	bad = base
	bad.KeyFile = notKey
	_, err = provider.NewAPNs(bad)
	require.ErrorContains(t, err, "keyFile: not a PKCS#8 private key")
	require.NotContains(t, err.Error(), "c2VjcmV0LWJ5dGVz")
}

func TestAPNsProvidersFileBuildsASenderFromKeyFileAndCAFile(t *testing.T) {
	h := newAPNsHarness(t, sink.APNsFakeConfig{})
	dir := t.TempDir()
	keyFile, caFile := filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(keyFile, h.p8, 0o600))
	require.NoError(t, os.WriteFile(caFile, h.srv.CA, 0o600))
	raw := "providers:\n  - name: ios\n    kind: apns\n    teamId: " + testTeamID + "\n    keyId: " + testKeyID +
		"\n    keyFile: ${APNS_KEY_FILE}\n    topic: " + testTopic + "\n    environment: sandbox\n    baseURL: " + h.srv.URL +
		"\n    caFile: ${APNS_CA_FILE}\nroutes:\n  push: [ios]\n"
	f, err := provider.Parse([]byte(raw), env(map[string]string{"APNS_KEY_FILE": keyFile, "APNS_CA_FILE": caFile}))
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{Timeout: 5 * time.Second})
	require.NoError(t, err)
	p := set.Route("push")[0]
	require.Equal(t, provider.KindAPNs, p.Kind)
	require.Equal(t, h.srv.URL, p.Target)
	res := p.Sender.Send(context.Background(), push("live-token"))
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)

	_, err = provider.Parse([]byte("providers:\n  - name: ios\n    kind: apns\n    environment: qa\n"), env(nil))
	require.ErrorContains(t, err, "providers[0].teamId: is required for kind apns")
	require.ErrorContains(t, err, "providers[0].keyFile: is required for kind apns")
	require.ErrorContains(t, err, `providers[0].environment: "qa" is not production or sandbox`)
}

// BenchmarkSendAPNs is what one push costs the sender against the fake
// over loopback, TLS and HTTP/2, the provider token cached.
func BenchmarkSendAPNs(b *testing.B) {
	h := newAPNsHarness(b, sink.APNsFakeConfig{})
	a := h.sender(b, nil)
	m := push("live-token")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := a.Send(context.Background(), m); res.Outcome != workflows.OutcomeDelivered {
			b.Fatal(res.Error)
		}
	}
	b.StopTimer()
	var last sink.APNsPush
	if pushes := h.fake.Pushes(); len(pushes) > 0 {
		last = pushes[len(pushes)-1]
	}
	out, _ := json.Marshal(map[string]any{"proto": last.Proto, "tokens": a.Tokens()})
	b.Logf("%s", out)
}
