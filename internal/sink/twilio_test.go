package sink_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

const (
	fakeAccount = "AC00000000000000000000000000000001"
	fakeToken   = "fake-token-00000000000000000000001"
)

func newTwilioFake(t *testing.T, cfg sink.TwilioFakeConfig) (*sink.TwilioFake, *httptest.Server) {
	t.Helper()
	cfg.AccountSID, cfg.AuthToken = fakeAccount, fakeToken
	fake := sink.NewTwilioFake(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, srv
}

// twilioPost sends form to the fake's Messages API for account, with
// the given credentials, and returns the status and the decoded answer.
func twilioPost(t *testing.T, base, account, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/2010-04-01/Accounts/"+account+"/Messages.json", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	return resp.StatusCode, answer
}

func TestTwilioFakeAnswersLikeTheMessagesAPI(t *testing.T) {
	fake, srv := newTwilioFake(t, sink.TwilioFakeConfig{NoCallback: true})
	arrivals := fake.Arrivals(4)
	form := url.Values{"To": {"+15558675310"}, "From": {"+15005550006"}, "Body": {"hello"}}

	status, answer := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusCreated, status)
	sid, _ := answer["sid"].(string)
	require.Regexp(t, regexp.MustCompile(`^SM[0-9a-f]{32}$`), sid)
	require.Equal(t, "queued", answer["status"])
	require.Equal(t, fakeAccount, answer["account_sid"])
	require.Equal(t, "+15558675310", answer["to"])
	require.Equal(t, "hello", answer["body"])
	require.Nil(t, answer["error_code"])
	_, err := time.Parse(time.RFC1123Z, answer["date_created"].(string))
	require.NoError(t, err)
	select {
	case got := <-arrivals:
		require.Equal(t, sid, got)
	case <-time.After(5 * time.Second):
		t.Fatal("no arrival")
	}

	status, answer = twilioPost(t, srv.URL, fakeAccount, fakeAccount, "wrong", form)
	require.Equal(t, http.StatusUnauthorized, status)
	require.EqualValues(t, 20003, answer["code"])
	require.EqualValues(t, 401, answer["status"])

	status, answer = twilioPost(t, srv.URL, fakeAccount, "", "", form)
	require.Equal(t, http.StatusUnauthorized, status)
	require.EqualValues(t, 20003, answer["code"])

	status, answer = twilioPost(t, srv.URL, "AC00000000000000000000000000000002", fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusNotFound, status)
	require.EqualValues(t, 20404, answer["code"])

	for code, f := range map[int]url.Values{
		21604: {"From": {"+15005550006"}, "Body": {"hello"}},
		21603: {"To": {"+15558675310"}, "Body": {"hello"}},
		21602: {"To": {"+15558675310"}, "From": {"+15005550006"}},
		21211: {"To": {"555-0100"}, "From": {"+15005550006"}, "Body": {"hello"}},
		21617: {"To": {"+15558675310"}, "From": {"+15005550006"}, "Body": {strings.Repeat("x", 1601)}},
	} {
		status, answer = twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, f)
		require.Equal(t, http.StatusBadRequest, status, "code %d", code)
		require.EqualValues(t, code, answer["code"])
	}
	require.Len(t, fake.Messages(), 1, "only the valid message was taken")

	fake.SetConfig(sink.TwilioFakeConfig{AccountSID: fakeAccount, AuthToken: fakeToken, FailCode: 21610})
	status, answer = twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusBadRequest, status)
	require.EqualValues(t, 21610, answer["code"])
	require.Equal(t, "Attempt to send to unsubscribed recipient", answer["message"])
}

func TestTwilioFakeReportsAFailureWithItsErrorCodeAndWhatTheReceiverAnswered(t *testing.T) {
	forms := make(chan url.Values, 8)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		valid := r.ParseForm() == nil &&
			provider.ValidTwilioSignature(fakeToken, "http://"+r.Host+r.URL.RequestURI(), r.PostForm, r.Header.Get("X-Twilio-Signature"))
		if !valid {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		forms <- r.PostForm
		if r.PostForm.Get("MessageStatus") == "sent" {
			// A receiver that fails one callback does not get it again.
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(receiver.Close)
	fake, srv := newTwilioFake(t, sink.TwilioFakeConfig{Final: "undelivered"})

	silent := url.Values{"To": {"+15558675310"}, "From": {"+15005550006"}, "Body": {"no callback asked"}}
	status, _ := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, silent)
	require.Equal(t, http.StatusCreated, status)
	form := url.Values{
		"To": {"+15558675310"}, "From": {"+15005550006"}, "Body": {"hello"},
		"StatusCallback": {receiver.URL + "/v1/receipts/twilio"},
	}
	status, answer := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusCreated, status)
	sid := answer["sid"].(string)

	var statuses []string
	for len(statuses) < 3 {
		select {
		case f := <-forms:
			require.Equal(t, sid, f.Get("MessageSid"), "a message without a StatusCallback gets no callbacks")
			statuses = append(statuses, f.Get("MessageStatus"))
			if f.Get("MessageStatus") == "undelivered" {
				require.Equal(t, "30003", f.Get("ErrorCode"))
				_, receipt, reason, final := provider.TwilioReceipt(f)
				require.True(t, final)
				require.Equal(t, "failed", receipt)
				require.Equal(t, "undelivered, ErrorCode 30003", reason)
			} else {
				require.Empty(t, f.Get("ErrorCode"))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v arrived", statuses)
		}
	}
	require.Equal(t, []string{"queued", "sent", "undelivered"}, statuses)

	require.Eventually(t, func() bool {
		msgs := fake.Messages()
		return len(msgs) == 2 && len(msgs[1].Callbacks) == 3
	}, 5*time.Second, 10*time.Millisecond)
	msgs := fake.Messages()
	require.Empty(t, msgs[0].Callbacks)
	require.Equal(t, "queued", msgs[0].Status)
	require.Equal(t, "undelivered", msgs[1].Status)
	require.Equal(t, []sink.TwilioCallbackResult{
		{Status: "queued", HTTPStatus: http.StatusOK},
		{Status: "sent", HTTPStatus: http.StatusInternalServerError},
		{Status: "undelivered", HTTPStatus: http.StatusOK},
	}, msgs[1].Callbacks)
}

func TestTwilioFakeRecordsACallbackThatFoundNoReceiver(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL + "/v1/receipts/twilio"
	gone.Close()
	fake, srv := newTwilioFake(t, sink.TwilioFakeConfig{})
	form := url.Values{"To": {"+15558675310"}, "From": {"+15005550006"}, "Body": {"hello"}, "StatusCallback": {goneURL}}
	status, _ := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusCreated, status)

	require.Eventually(t, func() bool {
		msgs := fake.Messages()
		return len(msgs) == 1 && len(msgs[0].Callbacks) == 3
	}, 10*time.Second, 10*time.Millisecond)
	for _, cb := range fake.Messages()[0].Callbacks {
		require.Zero(t, cb.HTTPStatus)
		require.NotEmpty(t, cb.Err)
	}
}

func TestTwilioFakeRefusesDeadNumbers(t *testing.T) {
	fake, srv := newTwilioFake(t, sink.TwilioFakeConfig{NoCallback: true})
	for to, code := range map[string]float64{
		"+1555867" + sink.TwilioUnsubscribedSuffix: 21610,
		"+1555867" + sink.TwilioInvalidSuffix:      21211,
	} {
		form := url.Values{"To": {to}, "From": {"+15005550006"}, "Body": {"hello"}}
		status, answer := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
		require.Equal(t, http.StatusBadRequest, status, to)
		require.Equal(t, code, answer["code"], to)
	}
	require.Empty(t, fake.Messages())

	// Only the end of the number counts.
	form := url.Values{"To": {"+15550000123"}, "From": {"+15005550006"}, "Body": {"hello"}}
	status, _ := twilioPost(t, srv.URL, fakeAccount, fakeAccount, fakeToken, form)
	require.Equal(t, http.StatusCreated, status)
}
