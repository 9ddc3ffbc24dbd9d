package provider_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const (
	testAccountSID = "AC0123456789abcdef0123456789abcdef"
	testAuthToken  = "tok-0123456789abcdef0123456789ab"
	testFrom       = "+15005550006"
	testTo         = "+15558675310"
)

var smSID = regexp.MustCompile(`^SM[0-9a-f]{32}$`)

// capturedRequest is what the fake was sent, seen from in front of it.
type capturedRequest struct {
	method, path, contentType, userAgent string
	user, pass                           string
	hasAuth                              bool
	form                                 url.Values
}

// recording puts h behind a handler that remembers each request's shape.
func recording(h http.Handler) (http.Handler, func() []capturedRequest) {
	var mu sync.Mutex
	var seen []capturedRequest
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		user, pass, ok := r.BasicAuth()
		mu.Lock()
		seen = append(seen, capturedRequest{
			method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			userAgent: r.Header.Get("User-Agent"), user: user, pass: pass, hasAuth: ok, form: form,
		})
		mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, r)
	})
	return wrapped, func() []capturedRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]capturedRequest(nil), seen...)
	}
}

func newFake(t *testing.T, cfg sink.TwilioFakeConfig) (*sink.TwilioFake, *httptest.Server) {
	t.Helper()
	if cfg.AccountSID == "" {
		cfg.AccountSID = testAccountSID
	}
	if cfg.AuthToken == "" {
		cfg.AuthToken = testAuthToken
	}
	fake := sink.NewTwilioFake(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, srv
}

func newTwilio(t *testing.T, cfg provider.TwilioConfig) *provider.Twilio {
	t.Helper()
	if cfg.AccountSID == "" {
		cfg.AccountSID = testAccountSID
	}
	if cfg.AuthToken == "" {
		cfg.AuthToken = testAuthToken
	}
	if cfg.From == "" {
		cfg.From = testFrom
	}
	tw, err := provider.NewTwilio(cfg)
	require.NoError(t, err)
	return tw
}

func sms(to, body string) provider.Message {
	return provider.Message{NotificationID: "n-1", Attempt: 1, Channel: "sms", Recipient: to, Content: body}
}

func TestTwilioSendFollowsTheMessagesAPI(t *testing.T) {
	fake := sink.NewTwilioFake(sink.TwilioFakeConfig{AccountSID: testAccountSID, AuthToken: testAuthToken, NoCallback: true})
	t.Cleanup(fake.Close)
	handler, seen := recording(fake)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	arrivals := fake.Arrivals(4)

	callback := "https://example.com/v1/receipts/twilio-main"
	tw := newTwilio(t, provider.TwilioConfig{URL: srv.URL, StatusCallback: callback})
	res := tw.Send(context.Background(), sms(testTo, "Your code is 1234 ✓"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, http.StatusCreated, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Empty(t, res.Error)
	require.Regexp(t, smSID, res.MessageID)
	require.Contains(t, res.Excerpt, `"sid":"`+res.MessageID+`"`)

	select {
	case sid := <-arrivals:
		require.Equal(t, res.MessageID, sid)
	case <-time.After(5 * time.Second):
		t.Fatal("the fake never reported the message")
	}

	reqs := seen()
	require.Len(t, reqs, 1)
	req := reqs[0]
	require.Equal(t, http.MethodPost, req.method)
	require.Equal(t, "/2010-04-01/Accounts/"+testAccountSID+"/Messages.json", req.path)
	require.Equal(t, "application/x-www-form-urlencoded", req.contentType)
	require.Equal(t, "dispatch-engine", req.userAgent)
	require.True(t, req.hasAuth)
	require.Equal(t, testAccountSID, req.user)
	require.Equal(t, testAuthToken, req.pass)
	require.Equal(t, url.Values{
		"To": {testTo}, "From": {testFrom}, "Body": {"Your code is 1234 ✓"}, "StatusCallback": {callback + "?attempt=1&notification=n-1"},
	}, req.form)

	msgs := fake.Messages()
	require.Len(t, msgs, 1)
	require.Equal(t, sink.TwilioMessage{
		SID: res.MessageID, To: testTo, From: testFrom, Body: "Your code is 1234 ✓",
		StatusCallback: callback + "?attempt=1&notification=n-1", Status: "queued",
	}, msgs[0])
}

func TestTwilioSendsAMessagingServiceAsMessagingServiceSid(t *testing.T) {
	fake, srv := newFake(t, sink.TwilioFakeConfig{NoCallback: true})
	service := "MG0123456789abcdef0123456789abcdef"
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL, From: service}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Contains(t, res.Excerpt, `"status":"accepted"`)
	require.Equal(t, service, fake.Messages()[0].From)
}

func TestTwilioInvalidNumberIsPermanent(t *testing.T) {
	fake, srv := newFake(t, sink.TwilioFakeConfig{})
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms("555-0100", "hi"))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.False(t, res.ProviderFault, "a bad number is the message's fault, not the provider's")
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Equal(t, "twilio 21211: Invalid 'To' Phone Number", res.Error)
	require.Contains(t, res.Excerpt, `"code":21211`)
	require.Empty(t, res.MessageID)
	require.Empty(t, fake.Messages())
}

func TestTwilioMessageFaultCodesArePermanent(t *testing.T) {
	for _, code := range []int{21610, 21614, 21408, 21612, 21617} {
		_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: code})
		res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
		require.Equal(t, workflows.OutcomePermanent, res.Outcome, "code %d", code)
		require.False(t, res.ProviderFault, "code %d", code)
		require.Contains(t, res.Error, "twilio ", "code %d", code)
	}
	// A region the account may not send to comes with a 403, which alone
	// would point at our credentials; the code says it is this message's.
	_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: 21408, FailStatus: http.StatusForbidden})
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.False(t, res.ProviderFault)
}

func TestTwilioBadCredentialsIsTheProvidersFault(t *testing.T) {
	_, srv := newFake(t, sink.TwilioFakeConfig{AuthToken: "the-real-token-0123456789abcdef"})
	wrongToken := "a-stale-token-0123456789abcdef0"
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL, AuthToken: wrongToken}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault, "refused credentials are ours, not the message's")
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Equal(t, "twilio 20003: Authenticate", res.Error)
	require.NotContains(t, res.Error+res.Excerpt, wrongToken)
}

func TestTwilioAccountSettingsCodesAreTheProvidersFault(t *testing.T) {
	for _, code := range []int{20005, 21606} {
		_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: code})
		res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
		require.Equal(t, workflows.OutcomeRetry, res.Outcome, "code %d", code)
		require.True(t, res.ProviderFault, "code %d", code)
	}
	// Another account's URL: our account sid is wrong for these credentials.
	_, srv := newFake(t, sink.TwilioFakeConfig{})
	other := "AC" + strings.Repeat("f", 32)
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL, AccountSID: other}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
}

func TestTwilioTooManyRequestsRetriesAfter(t *testing.T) {
	_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: 20429, FailStatus: http.StatusTooManyRequests, RetryAfter: 7 * time.Second})
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, http.StatusTooManyRequests, res.StatusCode)
	require.Equal(t, 7*time.Second, res.RetryAfter)
	require.Equal(t, "twilio 20429: Too Many Requests", res.Error)

	// The code alone, under a plain 400, means the same.
	_, srv = newFake(t, sink.TwilioFakeConfig{FailCode: 20429})
	res = newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Zero(t, res.RetryAfter)
}

func TestTwilioServerErrorsAndRedirectsAreTheProvidersFault(t *testing.T) {
	var followed atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Store(true)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"sid":"SM00000000000000000000000000000000"}`)
	}))
	t.Cleanup(target.Close)
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := int(status.Load()); s == http.StatusTemporaryRedirect {
			http.Redirect(w, r, target.URL+r.URL.Path, s)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"code":20500,"message":"Internal Server Error","status":503}`)
	}))
	t.Cleanup(srv.Close)
	tw := newTwilio(t, provider.TwilioConfig{URL: srv.URL})

	res := tw.Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, "twilio 20500: Internal Server Error", res.Error)

	status.Store(http.StatusTemporaryRedirect)
	res = tw.Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, http.StatusTemporaryRedirect, res.StatusCode)
	require.Contains(t, res.Error, "not followed")
	require.False(t, followed.Load(), "the redirect was followed")
}

func TestTwilioAnswerWithoutASidIsNotADelivery(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>\x00\xff"+strings.Repeat("é", 600)+"</html>")
	}))
	t.Cleanup(srv.Close)
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Equal(t, "twilio answered 200 without a message sid", res.Error)
	require.LessOrEqual(t, len(res.Excerpt), 512)
	require.True(t, utf8.ValidString(res.Excerpt))
	require.True(t, strings.HasPrefix(res.Excerpt, "<html>\uFFFD\uFFFDé"), res.Excerpt)
}

func TestTwilioExcerptIsTheValidStartOfALongReply(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"sid":"SM0123456789abcdef0123456789abcdef","body":"`+strings.Repeat("日本", 400)+`"}`)
	}))
	t.Cleanup(srv.Close)
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, "SM0123456789abcdef0123456789abcdef", res.MessageID)
	require.LessOrEqual(t, len(res.Excerpt), 512)
	require.Greater(t, len(res.Excerpt), 500)
	require.True(t, utf8.ValidString(res.Excerpt))
}

func TestTwilioTimeoutIsTheProvidersFaultAndACancelIsNot(t *testing.T) {
	arrived := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices the client gone only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)

	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL, Timeout: 100 * time.Millisecond}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.Zero(t, res.StatusCode)
	require.True(t, strings.HasPrefix(res.Error, "timeout: "), res.Error)
	// The timed-out request may have been cut off before the handler ran
	// (a loaded machine): drain its arrival if it came, never wait forever.
	select {
	case <-arrived:
	case <-time.After(2 * time.Second):
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan provider.Result, 1)
	tw := newTwilio(t, provider.TwilioConfig{URL: srv.URL})
	go func() { done <- tw.Send(ctx, sms(testTo, "hi")) }()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the send never reached the server")
	}
	cancel()
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled ctx did not abort the send")
	}
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.False(t, res.ProviderFault, "a cancel says nothing about the provider")
	require.True(t, strings.HasPrefix(res.Error, "cancelled: "), res.Error)
}

func TestTwilioNetworkErrorIsTheProvidersFault(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	res := newTwilio(t, provider.TwilioConfig{URL: addr}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
	require.NotContains(t, res.Error, testAuthToken)
}

func TestNewTwilioValidates(t *testing.T) {
	ok := provider.TwilioConfig{AccountSID: testAccountSID, AuthToken: testAuthToken, From: testFrom}
	for name, mutate := range map[string]func(*provider.TwilioConfig){
		"no account":         func(c *provider.TwilioConfig) { c.AccountSID = "" },
		"account with slash": func(c *provider.TwilioConfig) { c.AccountSID = "AC1/../x" },
		"no token":           func(c *provider.TwilioConfig) { c.AuthToken = "" },
		"no from":            func(c *provider.TwilioConfig) { c.From = " " },
		"relative url":       func(c *provider.TwilioConfig) { c.URL = "api.twilio.com" },
		"url with password":  func(c *provider.TwilioConfig) { c.URL = "https://u:p@api.twilio.com" },
		"relative callback":  func(c *provider.TwilioConfig) { c.StatusCallback = "/v1/receipts/twilio" },
		"negative timeout":   func(c *provider.TwilioConfig) { c.Timeout = -time.Second },
	} {
		cfg := ok
		mutate(&cfg)
		_, err := provider.NewTwilio(cfg)
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), testAuthToken, name)
	}
	_, err := provider.NewTwilio(ok)
	require.NoError(t, err)
}

func TestTwilioSignatureMatchesTheDocumentedExample(t *testing.T) {
	// The worked example of Twilio's request-validation documentation, which
	// its helper libraries (twilio-python, twilio-php, twilio-csharp) test
	// against.
	const token = "12345"
	const fullURL = "https://mycompany.com/myapp.php?foo=1&bar=2"
	params := url.Values{
		"CallSid": {"CA1234567890ABCDE"},
		"Caller":  {"+14158675309"},
		"Digits":  {"1234"},
		"From":    {"+14158675309"},
		"To":      {"+18005551212"},
	}
	const documented = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
	require.Equal(t, documented, provider.TwilioSignature(token, fullURL, params))
	require.True(t, provider.ValidTwilioSignature(token, fullURL, params, documented))

	// The libraries' vector for a name given more than once: each distinct
	// value once, sorted, not in the order they came.
	repeated := url.Values{"Sid": {"CA123"}, "SidAccount": {"AC123"}, "Digits": {"5678", "1234", "1234"}}
	require.Equal(t, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", provider.TwilioSignature(token, fullURL, repeated))

	changed := url.Values{}
	for k, v := range params {
		changed[k] = v
	}
	changed.Set("Digits", "9999")
	require.False(t, provider.ValidTwilioSignature(token, fullURL, changed, documented), "a changed parameter")
	added := url.Values{"Extra": {""}}
	for k, v := range params {
		added[k] = v
	}
	require.False(t, provider.ValidTwilioSignature(token, fullURL, added, documented), "an added parameter")
	require.False(t, provider.ValidTwilioSignature(token, fullURL+"&baz=3", params, documented), "a changed URL")
	require.False(t, provider.ValidTwilioSignature(token, strings.Replace(fullURL, "https:", "http:", 1), params, documented), "another scheme")
	require.False(t, provider.ValidTwilioSignature("54321", fullURL, params, documented), "a wrong token")
	require.False(t, provider.ValidTwilioSignature(token, fullURL, params, ""), "no signature")
	require.False(t, provider.ValidTwilioSignature(token, fullURL, params, documented[:len(documented)-1]), "a cut signature")

	// Twilio may sign the URL with or without its scheme's default port.
	require.True(t, provider.ValidTwilioSignature(token, strings.Replace(fullURL, ".com/", ".com:443/", 1), params, documented))
	withPort := provider.TwilioSignature(token, "https://example.com:443/v1/receipts/twilio", params)
	require.True(t, provider.ValidTwilioSignature(token, "https://example.com/v1/receipts/twilio", params, withPort))
	require.False(t, provider.ValidTwilioSignature(token, "https://example.com:8443/v1/receipts/twilio", params, withPort))
}

func TestTwilioReceiptMapsStatuses(t *testing.T) {
	for _, c := range []struct {
		status, errorCode string
		want, reason      string
		final             bool
	}{
		{"queued", "", "", "queued", false},
		{"accepted", "", "", "accepted", false},
		{"scheduled", "", "", "scheduled", false},
		{"sending", "", "", "sending", false},
		{"sent", "", "", "sent", false},
		{"delivered", "", "delivered", "delivered", true},
		{"read", "", "delivered", "read", true},
		{"undelivered", "30003", "failed", "undelivered, ErrorCode 30003", true},
		{"failed", "30008", "failed", "failed, ErrorCode 30008", true},
		{"canceled", "", "failed", "canceled", true},
		{"something-new", "", "", "something-new", false},
	} {
		form := url.Values{"MessageSid": {"SM1"}, "MessageStatus": {c.status}}
		if c.errorCode != "" {
			form.Set("ErrorCode", c.errorCode)
		}
		sid, status, reason, final := provider.TwilioReceipt(form)
		require.Equal(t, "SM1", sid, c.status)
		require.Equal(t, c.want, status, c.status)
		require.Equal(t, c.reason, reason, c.status)
		require.Equal(t, c.final, final, c.status)
	}
	sid, status, _, final := provider.TwilioReceipt(url.Values{"SmsSid": {"SM2"}, "SmsStatus": {"delivered"}})
	require.Equal(t, "SM2", sid)
	require.Equal(t, "delivered", status)
	require.True(t, final)
}

// callback is one status callback as the receiver saw it.
type callback struct {
	form      url.Values
	signature string
	valid     bool
}

func TestTwilioFakeSendsSignedStatusCallbacks(t *testing.T) {
	got := make(chan callback, 8)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sig := r.Header.Get("X-Twilio-Signature")
		// The URL Twilio was given, which is what it signs.
		fullURL := "http://" + r.Host + r.URL.RequestURI()
		valid := r.ParseForm() == nil && provider.ValidTwilioSignature(testAuthToken, fullURL, r.PostForm, sig)
		got <- callback{form: r.PostForm, signature: sig, valid: valid}
		if !valid {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	fake, srv := newFake(t, sink.TwilioFakeConfig{CallbackDelay: 20 * time.Millisecond})
	statusCallback := receiver.URL + "/v1/receipts/twilio-main?region=us1"
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL, StatusCallback: statusCallback}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)

	var statuses []string
	for len(statuses) < 3 {
		select {
		case cb := <-got:
			require.True(t, cb.valid, "callback %v with signature %q", cb.form, cb.signature)
			require.Equal(t, res.MessageID, cb.form.Get("MessageSid"))
			require.Equal(t, testAccountSID, cb.form.Get("AccountSid"))
			require.Equal(t, testFrom, cb.form.Get("From"))
			require.Equal(t, testTo, cb.form.Get("To"))
			require.Equal(t, "2010-04-01", cb.form.Get("ApiVersion"))
			require.Empty(t, cb.form.Get("ErrorCode"))
			require.False(t, provider.ValidTwilioSignature("another-token", statusCallback, cb.form, cb.signature))

			sid, status, reason, final := provider.TwilioReceipt(cb.form)
			require.Equal(t, res.MessageID, sid)
			require.Equal(t, cb.form.Get("MessageStatus"), reason)
			if cb.form.Get("MessageStatus") == "delivered" {
				require.True(t, final)
				require.Equal(t, "delivered", status)
			} else {
				require.False(t, final, "only delivered is final")
				require.Empty(t, status)
			}
			statuses = append(statuses, cb.form.Get("MessageStatus"))
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v arrived", statuses)
		}
	}
	require.Equal(t, []string{"queued", "sent", "delivered"}, statuses)

	require.Eventually(t, func() bool {
		msgs := fake.Messages()
		return len(msgs) == 1 && len(msgs[0].Callbacks) == 3
	}, 5*time.Second, 10*time.Millisecond)
	msg := fake.Messages()[0]
	require.Equal(t, "delivered", msg.Status)
	require.Equal(t, []sink.TwilioCallbackResult{
		{Status: "queued", HTTPStatus: http.StatusNoContent},
		{Status: "sent", HTTPStatus: http.StatusNoContent},
		{Status: "delivered", HTTPStatus: http.StatusNoContent},
	}, msg.Callbacks)
}

func TestTwilioDeadNumbersAreSuppressed(t *testing.T) {
	for code, want := range map[int]string{
		21610: provider.SuppressUnsubscribed,
		21211: provider.SuppressInvalid,
		21614: provider.SuppressInvalid,
		21612: "", // not reachable now: this message's, not the number's
		21408: "",
		21617: "",
		20429: "",
		20003: "",
	} {
		_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: code})
		res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
		require.Equal(t, want, res.Suppress, "code %d", code)
	}
	// A 5xx carrying a dead-number code is still the provider's fault and
	// says nothing about the number.
	_, srv := newFake(t, sink.TwilioFakeConfig{FailCode: 21610, FailStatus: http.StatusServiceUnavailable})
	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Empty(t, res.Suppress)

	// The fake's dead numbers, as make run and the end-to-end tests send them.
	_, srv = newFake(t, sink.TwilioFakeConfig{NoCallback: true})
	tw := newTwilio(t, provider.TwilioConfig{URL: srv.URL})
	stop := tw.Send(context.Background(), sms("+1555867"+sink.TwilioUnsubscribedSuffix, "hi"))
	require.Equal(t, workflows.OutcomePermanent, stop.Outcome)
	require.Equal(t, provider.SuppressUnsubscribed, stop.Suppress)
	invalid := tw.Send(context.Background(), sms("+1555867"+sink.TwilioInvalidSuffix, "hi"))
	require.Equal(t, workflows.OutcomePermanent, invalid.Outcome)
	require.Equal(t, provider.SuppressInvalid, invalid.Suppress)
	ok := tw.Send(context.Background(), sms(testTo, "hi"))
	require.Equal(t, workflows.OutcomeDelivered, ok.Outcome, ok.Error)
	require.Empty(t, ok.Suppress)
}
