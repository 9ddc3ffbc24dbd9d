package provider_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const fcmProject = "dispatch-test"

// fcmKey is one service account's key for the package's tests: making an
// RSA key takes a while, and nothing here depends on it being fresh.
var fcmKey = sync.OnceValues(func() (fcmAccount, error) {
	key, public, err := sink.NewFCMServiceAccount(fcmProject, "https://oauth2.googleapis.com/token")
	return fcmAccount{key: key, public: public}, err
})

type fcmAccount struct {
	key    []byte
	public *rsa.PublicKey
}

func (a fcmAccount) privateKey(t testing.TB) string {
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	require.NoError(t, json.Unmarshal(a.key, &sa))
	return sa.PrivateKey
}

// fcmSetup is a fake FCM on loopback and a sender pointed at it.
type fcmSetup struct {
	fake    *sink.FCMFake
	srv     *httptest.Server
	account fcmAccount
	fcm     *provider.FCM
}

func newFCMSetup(t testing.TB, cfg sink.FCMFakeConfig) fcmSetup {
	t.Helper()
	account, err := fcmKey()
	require.NoError(t, err)
	if cfg.ProjectID == "" {
		cfg.ProjectID = fcmProject
	}
	if cfg.PublicKey == nil {
		cfg.PublicKey = account.public
	}
	cfg.ClientEmail = "dispatch@" + fcmProject + ".iam.gserviceaccount.com"
	fake := sink.NewFCMFake(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fcm, err := provider.NewFCM(provider.FCMConfig{
		CredentialsJSON: account.key, BaseURL: srv.URL, TokenURL: srv.URL + "/token", Timeout: 5 * time.Second,
	})
	require.NoError(t, err)
	return fcmSetup{fake: fake, srv: srv, account: account, fcm: fcm}
}

func fcmPush(token, title, body string) provider.Message {
	return provider.Message{NotificationID: "0190d5c4-7a3e-7c1a-9c53-3f1c2e9a4b10", Attempt: 2, Channel: "push",
		Recipient: token, Subject: title, Content: body}
}

func TestFCMSendsThroughTheHTTPv1API(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	m := fcmPush("tok-ok", "Your order", "It has shipped")
	m.Payload = []byte(`{"id":"x","metadata":{"collapseKey":"order-7","threadId":"orders","data":{"orderId":"7","from":"dropped"},"campaign":"spring"}}`)

	res := s.fcm.Send(context.Background(), m)
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Regexp(t, `^projects/`+fcmProject+`/messages/0:\d+%[0-9a-f]{16}$`, res.MessageID)
	require.False(t, res.ProviderFault)

	sends := s.fake.Sends()
	require.Len(t, sends, 1)
	got := sends[0]
	require.Equal(t, "tok-ok", got.Token)
	require.Equal(t, "Your order", got.Title)
	require.Equal(t, "It has shipped", got.Body)
	require.Equal(t, map[string]string{
		provider.FCMDataID: m.NotificationID, provider.FCMDataAttempt: "2", "orderId": "7",
	}, got.Data, "our ids as strings, the metadata's data without FCM's reserved keys")
	require.Equal(t, "order-7", got.CollapseKey)
	require.Equal(t, "orders", got.ThreadID)
	require.Equal(t, res.MessageID, got.Name)

	// The access token is cached: the next sends buy none.
	for range 3 {
		require.Equal(t, workflows.OutcomeDelivered, s.fcm.Send(context.Background(), fcmPush("tok-ok", "", "again")).Outcome)
	}
	require.Equal(t, 1, s.fake.Exchanges())
	require.Equal(t, 1, s.fcm.Exchanges())
	last := s.fake.Sends()[3]
	require.Empty(t, last.Title, "no subject, no title")
	require.Empty(t, last.CollapseKey)
}

func TestFCMRenewsAnExpiringToken(t *testing.T) {
	// A lifetime inside oauth2's early-renewal margin: every token is as
	// good as expired by the next send.
	s := newFCMSetup(t, sink.FCMFakeConfig{TokenLifetime: 5 * time.Second})
	for range 2 {
		require.Equal(t, workflows.OutcomeDelivered, s.fcm.Send(context.Background(), fcmPush("tok-ok", "", "hi")).Outcome)
	}
	require.Equal(t, 2, s.fake.Exchanges())
}

func TestFCMUnregisteredTokenIsSuppressed(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	res := s.fcm.Send(context.Background(), fcmPush("dead-1", "", "hi"))
	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, provider.SuppressUnregistered, res.Suppress)
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Contains(t, res.Error, "UNREGISTERED")
}

func TestFCMInvalidTokenIsSuppressed(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	res := s.fcm.Send(context.Background(), fcmPush("bad-1", "", "hi"))
	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, provider.SuppressUnregistered, res.Suppress)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.False(t, res.ProviderFault)
}

func TestFCMInvalidMessageIsPermanentAndKeepsTheToken(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	res := s.fcm.Send(context.Background(), fcmPush("tok-ok", "", strings.Repeat("x", 5000)))
	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Empty(t, res.Suppress, "the message was too big, not the token dead")
	require.False(t, res.ProviderFault)
	require.Contains(t, res.Error, "INVALID_ARGUMENT")
}

func TestFCMSenderIDMismatchIsPermanent(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	res := s.fcm.Send(context.Background(), fcmPush("mismatch-1", "", "hi"))
	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Empty(t, res.Suppress)
	require.False(t, res.ProviderFault)
}

func TestFCMQuotaAndServerErrorsRetryAfter(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{RetryAfter: 7 * time.Second})
	for token, want := range map[string]struct {
		status     int
		retryAfter time.Duration
	}{
		"busy-1": {http.StatusTooManyRequests, 7 * time.Second},
		"down-1": {http.StatusServiceUnavailable, 7 * time.Second},
		"oops-1": {http.StatusInternalServerError, 0},
	} {
		res := s.fcm.Send(context.Background(), fcmPush(token, "", "hi"))
		require.Equal(t, workflows.OutcomeRetry, res.Outcome, token)
		require.Equal(t, want.status, res.StatusCode, token)
		require.Equal(t, want.retryAfter, res.RetryAfter, token)
		require.True(t, res.ProviderFault, token)
		require.Empty(t, res.Suppress, token)
	}
}

func TestFCMAuthFailuresAreTheProvidersFault(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{})
	res := s.fcm.Send(context.Background(), fcmPush("thirdparty-1", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Contains(t, res.Error, "THIRD_PARTY_AUTH_ERROR")

	// FCM stops taking our token: that send fails as the provider's fault,
	// and the next buys a new token rather than wait for the old to expire.
	s.fake.RevokeTokens()
	res = s.fcm.Send(context.Background(), fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.True(t, res.ProviderFault)
	require.Equal(t, workflows.OutcomeDelivered, s.fcm.Send(context.Background(), fcmPush("tok-ok", "", "hi")).Outcome)
	require.Equal(t, 2, s.fake.Exchanges())

	// Another project than the key may send in.
	other, err := provider.NewFCM(provider.FCMConfig{
		CredentialsJSON: s.account.key, ProjectID: "someone-else", BaseURL: s.srv.URL, TokenURL: s.srv.URL + "/token",
	})
	require.NoError(t, err)
	res = other.Send(context.Background(), fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	require.True(t, res.ProviderFault)
	require.NotContains(t, res.Error, "/v1/projects/someone-else/messages:send", "the endpoint's path is not shown")
}

func TestFCMFailedTokenExchangeIsTheProvidersFault(t *testing.T) {
	s := newFCMSetup(t, sink.FCMFakeConfig{RefuseGrants: true})
	res := s.fcm.Send(context.Background(), fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Contains(t, res.Error, "fcm token exchange answered 400 invalid_grant")
	require.Empty(t, s.fake.Sends(), "nothing is sent without a token")

	// A grant signed with another key is refused the same way.
	otherKey, otherPublic, err := sink.NewFCMServiceAccount(fcmProject, "")
	require.NoError(t, err)
	require.NotNil(t, otherPublic)
	other, err := provider.NewFCM(provider.FCMConfig{CredentialsJSON: otherKey, BaseURL: s.srv.URL, TokenURL: s.srv.URL + "/token"})
	require.NoError(t, err)
	s.fake.SetConfig(sink.FCMFakeConfig{ProjectID: fcmProject, PublicKey: s.account.public})
	res = other.Send(context.Background(), fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Contains(t, res.Error, "invalid_grant")
	require.Equal(t, 2, s.fake.Refused())

	// No token endpoint at all.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	gone, err := provider.NewFCM(provider.FCMConfig{CredentialsJSON: s.account.key, BaseURL: s.srv.URL, TokenURL: closed.URL + "/token"})
	require.NoError(t, err)
	res = gone.Send(context.Background(), fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.True(t, strings.HasPrefix(res.Error, "network: fcm token exchange"), res.Error)

	// A cancel is nobody's fault.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res = gone.Send(ctx, fcmPush("tok-ok", "", "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.False(t, res.ProviderFault, res.Error)
}

// TestFCMResultsNeverHoldTheKeyOrTokens: a token endpoint and an API that
// echo everything they were sent (the form with the signed grant, the
// bearer token) in their answers; no Result text holds the key, a grant,
// the access token or the project's path, whatever the class.
func TestFCMResultsNeverHoldTheKeyOrTokens(t *testing.T) {
	account, err := fcmKey()
	require.NoError(t, err)
	const access = "ya29.echoed-access-token-0123456789"
	echo := func(r *http.Request) string {
		body, _ := io.ReadAll(r.Body)
		return r.Header.Get("Authorization") + " " + string(body) + " " + string(account.key)
	}
	var status int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") && status == 0 {
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": access, "expires_in": 3600})
			return
		}
		w.WriteHeader(max(status, http.StatusInternalServerError))
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"status": "INTERNAL", "message": echo(r)}})
	}))
	t.Cleanup(srv.Close)
	fcm, err := provider.NewFCM(provider.FCMConfig{CredentialsJSON: account.key, BaseURL: srv.URL, TokenURL: srv.URL + "/token"})
	require.NoError(t, err)

	var results []provider.Result
	for _, s := range []int{0, http.StatusUnauthorized, http.StatusBadRequest} {
		status = s
		if s != 0 {
			// The next send exchanges again, and the endpoint echoes.
			fcm, err = provider.NewFCM(provider.FCMConfig{CredentialsJSON: account.key, BaseURL: srv.URL, TokenURL: srv.URL + "/token"})
			require.NoError(t, err)
		}
		results = append(results, fcm.Send(context.Background(), fcmPush("tok-ok", "", "hi")))
	}
	key := account.privateKey(t)
	for _, res := range results {
		require.NotEqual(t, workflows.OutcomeDelivered, res.Outcome)
		require.Contains(t, res.Excerpt, "[redacted]", "the answer echoed secrets, which were taken out")
		for _, text := range []string{res.Error, res.Excerpt} {
			require.NotContains(t, text, access)
			require.NotContains(t, text, "eyJ", "no grant")
			require.NotContains(t, text, "/v1/projects/")
			for _, line := range strings.Split(key, "\n") {
				if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
					require.NotContains(t, text, line)
				}
			}
		}
	}
}

func TestNewFCMValidates(t *testing.T) {
	account, err := fcmKey()
	require.NoError(t, err)
	key := account.privateKey(t)
	for name, tc := range map[string]struct {
		json   string
		cfg    provider.FCMConfig
		reason string
	}{
		"not json":    {json: `{"type":`, reason: "not a service account's JSON key"},
		"user":        {json: `{"type":"authorized_user"}`, reason: `type is "authorized_user"`},
		"no email":    {json: `{"type":"service_account","project_id":"p","private_key":"x"}`, reason: "no client_email"},
		"bad key":     {json: `{"type":"service_account","project_id":"p","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`, reason: "private_key"},
		"no project":  {json: string(jsonWithout(t, account.key, "project_id")), reason: "projectId is required"},
		"base url":    {json: string(account.key), cfg: provider.FCMConfig{BaseURL: "fcm.googleapis.com"}, reason: "baseURL"},
		"token query": {json: string(account.key), cfg: provider.FCMConfig{TokenURL: "https://example.com/token?key=1"}, reason: "tokenURL"},
	} {
		tc.cfg.CredentialsJSON = []byte(tc.json)
		_, err := provider.NewFCM(tc.cfg)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), tc.reason, name)
		require.NotContains(t, err.Error(), "PRIVATE KEY", name)
		require.NotContains(t, err.Error(), strings.Split(key, "\n")[1], name)
	}
}

func jsonWithout(t *testing.T, raw []byte, field string) []byte {
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	delete(m, field)
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return out
}

// TestAnFCMProviderFromTheProvidersFile: kind fcm reads its key from
// credentialsFile (a ${VAR} reference here) and shows only the API's
// origin; a missing credentialsFile is named.
func TestAnFCMProviderFromTheProvidersFile(t *testing.T) {
	account, err := fcmKey()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "fcm.json")
	require.NoError(t, os.WriteFile(path, account.key, 0o600))
	f, err := provider.Parse([]byte(`
providers:
  - name: fcm
    kind: fcm
    credentialsFile: ${FCM_KEY}
    baseURL: http://127.0.0.1:1/fcm
    tokenURL: http://127.0.0.1:1/fcm/token
routes:
  push: [fcm]
`), env(map[string]string{"FCM_KEY": path}))
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{})
	require.NoError(t, err)
	p := set.Route("push")[0]
	require.Equal(t, provider.KindFCM, p.Kind)
	require.Equal(t, "http://127.0.0.1:1", p.Target)

	_, err = provider.Parse([]byte("providers:\n  - name: fcm\n    kind: fcm\n"), env(nil))
	require.ErrorContains(t, err, "providers[0].credentialsFile: is required for kind fcm")
}

// BenchmarkSendFCM is one send through the FCM sender to the fake over
// loopback, with a cached access token: what the adapter costs per push.
func BenchmarkSendFCM(b *testing.B) {
	s := newFCMSetup(b, sink.FCMFakeConfig{})
	m := fcmPush("tok-ok", "Your order", "It has shipped")
	m.Payload = []byte(`{"id":"x","metadata":{"collapseKey":"order-7","data":{"orderId":"7"}}}`)
	require.Equal(b, workflows.OutcomeDelivered, s.fcm.Send(context.Background(), m).Outcome)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := s.fcm.Send(context.Background(), m); res.Outcome != workflows.OutcomeDelivered {
			b.Fatal(res.Error)
		}
	}
}
