package provider_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const sendgridTestKey = "SG.test-key-0123456789.abcdefghijklmnopqrstuvwxyz"

func newSendGridFake(t testing.TB, cfg sink.SendGridFakeConfig) (*sink.SendGridFake, *httptest.Server) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = sendgridTestKey
	}
	fake, err := sink.NewSendGridFake(cfg, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, srv
}

func newSendGrid(t testing.TB, base string) *provider.SendGrid {
	t.Helper()
	sg, err := provider.NewSendGrid(provider.SendGridConfig{BaseURL: base, APIKey: sendgridTestKey,
		From: "Dispatch <noreply@example.com>", Timeout: 2 * time.Second})
	require.NoError(t, err)
	return sg
}

func email(to string) provider.Message {
	return provider.Message{NotificationID: "01a22001-d5be-7c3d-975c-b69a729f588b", Attempt: 2, Channel: "email",
		Recipient: to, Subject: "Your code", Content: "It is 123456.",
		Headers: map[string]string{"List-Unsubscribe": "<https://example.com/u/x>"}}
}

// requireNoSecrets checks that nothing a Result carries holds the key or
// the recipient.
func requireNoSecrets(t *testing.T, r provider.Result, recipient string) {
	t.Helper()
	for _, text := range []string{r.Error, r.Excerpt, r.MessageID} {
		require.NotContains(t, text, sendgridTestKey)
		require.NotContains(t, text, "SG.test-key")
		require.NotContains(t, strings.ToLower(text), strings.ToLower(recipient))
	}
}

func TestSendGridSendFollowsMailSend(t *testing.T) {
	fake, _ := newSendGridFake(t, sink.SendGridFakeConfig{})
	var seen http.Header
	var body []byte
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen, body = r.Header.Clone(), raw
		mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(raw)))
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	r := newSendGrid(t, front.URL).Send(context.Background(), email("ada@example.com"))

	require.Equal(t, workflows.OutcomeDelivered, r.Outcome, r.Error)
	require.Equal(t, http.StatusAccepted, r.StatusCode)
	msgs := fake.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, msgs[0].MessageID, r.MessageID, "the X-Message-Id")
	require.Equal(t, "ada@example.com", msgs[0].To)
	require.Equal(t, "noreply@example.com", msgs[0].From)
	require.Equal(t, "Your code", msgs[0].Subject)
	require.Equal(t, "It is 123456.", msgs[0].Text)
	require.Equal(t, map[string]string{"dispatch_id": "01a22001-d5be-7c3d-975c-b69a729f588b", "dispatch_attempt": "2"}, msgs[0].CustomArgs)
	require.Equal(t, "<01a22001-d5be-7c3d-975c-b69a729f588b@example.com>", msgs[0].Headers["Message-ID"])
	require.Equal(t, "<https://example.com/u/x>", msgs[0].Headers["List-Unsubscribe"])
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, "Bearer "+sendgridTestKey, seen.Get("Authorization"))
	require.Equal(t, "application/json", seen.Get("Content-Type"))
	var sent map[string]any
	require.NoError(t, json.Unmarshal(body, &sent))
	require.Equal(t, []any{map[string]any{"type": "text/plain", "value": "It is 123456."}}, sent["content"])
	require.Equal(t, map[string]any{"email": "noreply@example.com", "name": "Dispatch"}, sent["from"])
}

func TestSendGridInvalidRecipientIsPermanentAndSuppressed(t *testing.T) {
	_, srv := newSendGridFake(t, sink.SendGridFakeConfig{})
	r := newSendGrid(t, srv.URL).Send(context.Background(), email("invalid-ada@example.com"))
	require.Equal(t, workflows.OutcomePermanent, r.Outcome)
	require.Equal(t, provider.SuppressInvalid, r.Suppress)
	require.False(t, r.ProviderFault)
	require.Equal(t, http.StatusBadRequest, r.StatusCode)
	require.Contains(t, r.Error, "personalizations.0.to.0.email: Does not contain a valid address.")
	requireNoSecrets(t, r, "invalid-ada@example.com")
}

func TestSendGridOtherBadRequestIsPermanentWithoutSuppression(t *testing.T) {
	_, srv := newSendGridFake(t, sink.SendGridFakeConfig{})
	m := email("ada@example.com")
	m.Subject = ""
	r := newSendGrid(t, srv.URL).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomePermanent, r.Outcome)
	require.Empty(t, r.Suppress, "the message is bad, not the address")
	require.False(t, r.ProviderFault)
	require.Contains(t, r.Error, "subject")
}

func TestSendGridRefusedKeyIsTheProvidersFault(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A server echoing what it was sent must not put the key in the log.
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"errors":[{"message":"access forbidden for `+r.Header.Get("Authorization")+`"}]}`)
		}))
		r := newSendGrid(t, srv.URL).Send(context.Background(), email("ada@example.com"))
		srv.Close()
		require.Equal(t, workflows.OutcomeRetry, r.Outcome, status)
		require.True(t, r.ProviderFault, status)
		require.Empty(t, r.Suppress)
		require.Contains(t, r.Error, "[redacted]")
		requireNoSecrets(t, r, "ada@example.com")
	}
	_, srv := newSendGridFake(t, sink.SendGridFakeConfig{APIKey: "SG.another-key"})
	r := newSendGrid(t, srv.URL).Send(context.Background(), email("ada@example.com"))
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.True(t, r.ProviderFault)
}

func TestSendGridTooManyRequestsRetriesAfter(t *testing.T) {
	_, srv := newSendGridFake(t, sink.SendGridFakeConfig{RetryAfter: 7 * time.Second})
	r := newSendGrid(t, srv.URL).Send(context.Background(), email("busy-ada@example.com"))
	require.Equal(t, workflows.OutcomeRetry, r.Outcome)
	require.Equal(t, http.StatusTooManyRequests, r.StatusCode)
	require.Equal(t, 7*time.Second, r.RetryAfter)
	require.True(t, r.ProviderFault)
	requireNoSecrets(t, r, "busy-ada@example.com")

	// X-RateLimit-Reset stands in for a missing Retry-After.
	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(30*time.Second).Unix(), 10))
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(reset.Close)
	r = newSendGrid(t, reset.URL).Send(context.Background(), email("ada@example.com"))
	require.Equal(t, workflows.OutcomeRetry, r.Outcome)
	require.InDelta(t, 30, r.RetryAfter.Seconds(), 2)
}

func TestSendGridServerErrorsAreRetriedAsTheProvidersFault(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusMovedPermanently, http.StatusNotFound} {
		fake, srv := newSendGridFake(t, sink.SendGridFakeConfig{FailStatus: status, RetryAfter: 3 * time.Second})
		r := newSendGrid(t, srv.URL).Send(context.Background(), email("ada@example.com"))
		require.Equal(t, workflows.OutcomeRetry, r.Outcome, status)
		require.True(t, r.ProviderFault, status)
		if status >= 500 {
			require.Equal(t, 3*time.Second, r.RetryAfter, status)
		}
		require.Empty(t, fake.Messages())
	}
}

func TestSendGridTimeoutIsTheProvidersFaultAndACancelIsNot(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	sg, err := provider.NewSendGrid(provider.SendGridConfig{BaseURL: srv.URL, APIKey: sendgridTestKey, From: "noreply@example.com", Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	r := sg.Send(context.Background(), email("ada@example.com"))
	require.Equal(t, workflows.OutcomeRetry, r.Outcome)
	require.True(t, r.ProviderFault)
	require.True(t, strings.HasPrefix(r.Error, "timeout: "), r.Error)
	require.NotContains(t, r.Error, "/v3/mail/send")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = sg.Send(ctx, email("ada@example.com"))
	require.Equal(t, workflows.OutcomeRetry, r.Outcome)
	require.False(t, r.ProviderFault)
}

func TestSendGridRefusesAHeaderItWritesItself(t *testing.T) {
	_, srv := newSendGridFake(t, sink.SendGridFakeConfig{})
	m := email("ada@example.com")
	m.Headers = map[string]string{"Message-ID": "<forged@example.com>"}
	r := newSendGrid(t, srv.URL).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomePermanent, r.Outcome)
	m.Headers = map[string]string{"List-Unsubscribe": "<x>\r\nBcc: someone@example.com"}
	r = newSendGrid(t, srv.URL).Send(context.Background(), m)
	require.Equal(t, workflows.OutcomePermanent, r.Outcome)
}

func TestNewSendGridValidates(t *testing.T) {
	for name, cfg := range map[string]provider.SendGridConfig{
		"no key":         {From: "a@example.com"},
		"no from":        {APIKey: "k"},
		"bad base":       {APIKey: "k", From: "a@example.com", BaseURL: "ftp://x"},
		"key in the URL": {APIKey: "k", From: "a@example.com", BaseURL: "https://u:p@api.example.com"},
	} {
		_, err := provider.NewSendGrid(cfg)
		require.Error(t, err, name)
	}
}

// sendgridKnownAnswer is SendGrid's published verification example (its
// helper libraries' tests): the key, timestamp and payload it signed, and
// the signature it made.
const (
	sendgridKnownKey       = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
	sendgridKnownTimestamp = "1588788367"
	sendgridKnownPayload   = `{"category":"example_payload","event":"test_event","message_id":"message_id"}`
	sendgridKnownSignature = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
)

func TestSendGridSignatureVerifiesSendGridsOwnExample(t *testing.T) {
	key, err := provider.ParseSendGridPublicKey(sendgridKnownKey)
	require.NoError(t, err)
	at := time.Unix(1588788367, 0).Add(time.Minute)
	require.NoError(t, provider.VerifySendGridSignature(key, []byte(sendgridKnownPayload), sendgridKnownSignature, sendgridKnownTimestamp, at))
}

func TestSendGridSignatureRefusesForgeriesAndReplays(t *testing.T) {
	fake, _ := newSendGridFake(t, sink.SendGridFakeConfig{})
	key, err := provider.ParseSendGridPublicKey(fake.PublicKey())
	require.NoError(t, err)
	body := []byte(`[{"event":"delivered","dispatch_id":"x"}]`)
	ts, sig := fake.Sign(body)
	now := time.Now()

	require.NoError(t, provider.VerifySendGridSignature(key, body, sig, ts, now), "valid")
	require.ErrorIs(t, provider.VerifySendGridSignature(key, []byte(`[{"event":"bounce","dispatch_id":"x"}]`), sig, ts, now),
		provider.ErrSendGridSignature, "forged body")
	require.ErrorIs(t, provider.VerifySendGridSignature(key, body, sig, "1"+ts, now), provider.ErrSendGridSignature, "another timestamp")
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	require.ErrorIs(t, provider.VerifySendGridSignature(&other.PublicKey, body, sig, ts, now), provider.ErrSendGridSignature, "wrong key")
	require.ErrorIs(t, provider.VerifySendGridSignature(key, body, sig, ts, now.Add(6*time.Minute)), provider.ErrSendGridStale, "stale")
	require.ErrorIs(t, provider.VerifySendGridSignature(key, body, "", ts, now), provider.ErrSendGridUnsigned, "unsigned")
	require.ErrorIs(t, provider.VerifySendGridSignature(key, body, "not base64!", ts, now), provider.ErrSendGridSignature)
}

func TestSendGridPublicKeyIsBase64DEROrPEM(t *testing.T) {
	der := sendgridKnownKey
	_, err := provider.ParseSendGridPublicKey(der)
	require.NoError(t, err)
	k, err := provider.ParseSendGridPublicKey(der)
	require.NoError(t, err)
	raw, err := x509.MarshalPKIXPublicKey(k)
	require.NoError(t, err)
	_, err = provider.ParseSendGridPublicKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: raw})))
	require.NoError(t, err)
	_, err = provider.ParseSendGridPublicKey("not a key")
	require.Error(t, err)
}

func TestSendGridEventsMapToReceipts(t *testing.T) {
	for _, tc := range []struct {
		event provider.SendGridEvent
		want  provider.SendGridAction
		known bool
	}{
		{provider.SendGridEvent{Event: "delivered"}, provider.SendGridAction{Receipt: "delivered"}, true},
		{provider.SendGridEvent{Event: "bounce", Type: "bounce", Status: "5.1.1", Reason: "550 no such user ada@example.com", Email: "ada@example.com"},
			provider.SendGridAction{Receipt: "failed", Reason: "bounce: 5.1.1 550 no such user [recipient]", Suppress: "bounced"}, true},
		{provider.SendGridEvent{Event: "bounce", Type: "blocked"}, provider.SendGridAction{}, true},
		{provider.SendGridEvent{Event: "dropped", Reason: "Bounced Address"}, provider.SendGridAction{Receipt: "failed", Reason: "dropped: Bounced Address", Suppress: "bounced"}, true},
		{provider.SendGridEvent{Event: "deferred"}, provider.SendGridAction{}, true},
		{provider.SendGridEvent{Event: "spamreport"}, provider.SendGridAction{Receipt: "delivered", Suppress: "complained", OptOut: true}, true},
		{provider.SendGridEvent{Event: "processed"}, provider.SendGridAction{}, false},
		{provider.SendGridEvent{Event: "open"}, provider.SendGridAction{}, false},
	} {
		got, known := tc.event.Action()
		require.Equal(t, tc.want, got, tc.event.Event)
		require.Equal(t, tc.known, known, tc.event.Event)
	}
}

// BenchmarkSendSendGrid is one send through Mail Send to the fake over
// loopback: what the adapter costs per message (JSON body, HTTP/1.1 with
// a kept-alive connection, classification).
func BenchmarkSendSendGrid(b *testing.B) {
	_, srv := newSendGridFake(b, sink.SendGridFakeConfig{})
	sg, err := provider.NewSendGrid(provider.SendGridConfig{BaseURL: srv.URL, APIKey: sendgridTestKey, From: "noreply@example.com",
		HTTP: provider.NewHTTPClient(5*time.Second, 4)})
	require.NoError(b, err)
	m := email("ada@example.com")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := sg.Send(ctx, m); r.Outcome != workflows.OutcomeDelivered {
			b.Fatal(r.Error)
		}
	}
}

func TestASendGridProviderInTheProvidersFile(t *testing.T) {
	lookup := env(map[string]string{"SG_KEY": sendgridTestKey, "SG_EVENTS": sendgridKnownKey})
	f, err := provider.Parse([]byte(`
providers:
  - {name: sg, kind: sendgrid, apiKey: "${SG_KEY}", from: "noreply@example.com", eventPublicKey: "${SG_EVENTS}", awaitReceipt: 1m}
routes:
  email: [sg]
`), lookup)
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{Timeout: time.Second})
	require.NoError(t, err)
	p, ok := set.Get("sg")
	require.True(t, ok)
	require.Equal(t, provider.SendGridDefaultURL, p.Target)
	require.NotNil(t, p.EventKey)

	for yaml, want := range map[string]string{
		`{name: sg, kind: sendgrid, apiKey: "SG.literal", from: "a@example.com"}`:                                "providers[0].apiKey: must reference the environment",
		`{name: sg, kind: sendgrid, apiKey: "${SG_KEY}", from: "a@example.com", awaitReceipt: 1m}`:               "providers[0].awaitReceipt: needs eventPublicKey",
		`{name: sg, kind: sendgrid, apiKey: "${SG_KEY}", from: "a@example.com", eventPublicKey: "bm90IGEga2V5"}`: "providers[0].eventPublicKey: is not a public key",
		`{name: sg, kind: sendgrid, from: "a@example.com"}`:                                                      "providers[0].apiKey: is required for kind sendgrid",
	} {
		_, err := provider.Parse([]byte("providers:\n  - "+yaml+"\n"), lookup)
		require.ErrorContains(t, err, want, yaml)
	}
}
