package provider_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// secretPath and secretQuery are what a provider's URL carries beyond its
// scheme and host: a Slack-style token path and an api_key.
const (
	secretPath  = "/services/T0000/B0000/XXXXsecretpath"
	secretQuery = "api_key=k-0123456789"
)

// requireNoURLBeyondHost checks that text names the provider at most by
// scheme and host.
func requireNoURLBeyondHost(t *testing.T, text string) {
	t.Helper()
	require.NotContains(t, text, "/services")
	require.NotContains(t, text, "secretpath")
	require.NotContains(t, text, "api_key")
	require.NotContains(t, text, "k-0123456789")
}

func TestAWebhookNetworkErrorNamesOnlyTheProvidersHost(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	host := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens: connection refused

	hook, err := provider.NewWebhook("http://"+host+secretPath+"?"+secretQuery, provider.NewHTTPClient(time.Second, 1), nil)
	require.NoError(t, err)
	res := hook.Send(context.Background(), provider.Message{NotificationID: "n-1", Attempt: 1, Recipient: "user@example.com", Payload: []byte(`{}`)})

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
	require.Contains(t, res.Error, "http://"+host, "the host is named, so an operator can tell which provider")
	requireNoURLBeyondHost(t, res.Error)
}

func TestAWebhookTimeoutNamesOnlyTheProvidersHost(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(func() { close(release); srv.Close() })

	hook, err := provider.NewWebhook(srv.URL+secretPath+"?"+secretQuery, provider.NewHTTPClient(200*time.Millisecond, 1), nil)
	require.NoError(t, err)
	res := hook.Send(context.Background(), provider.Message{NotificationID: "n-1", Attempt: 1, Recipient: "user@example.com", Payload: []byte(`{}`)})

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, strings.HasPrefix(res.Error, "timeout: "), res.Error)
	require.Contains(t, res.Error, srv.URL)
	requireNoURLBeyondHost(t, res.Error)
}

func TestAWebhookReplyEchoingTheRecipientIsKeptWithoutIt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"error":"unknown device for Jane.Doe@Example.com"}`))
	}))
	t.Cleanup(srv.Close)

	hook, err := provider.NewWebhook(srv.URL, provider.NewHTTPClient(time.Second, 1), nil)
	require.NoError(t, err)
	res := hook.Send(context.Background(), provider.Message{NotificationID: "n-1", Attempt: 1, Recipient: "jane.doe@example.com", Payload: []byte(`{}`)})

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.NotContains(t, strings.ToLower(res.Excerpt+res.Error), "jane.doe@example.com")
	require.Contains(t, res.Excerpt, "unknown device for [recipient]")
}

func TestTwilioNetworkErrorNamesOnlyTheAPIsHost(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()

	res := newTwilio(t, provider.TwilioConfig{URL: addr}).Send(context.Background(), sms(testTo, "hi"))

	require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
	require.Contains(t, res.Error, addr)
	require.NotContains(t, res.Error, "/2010-04-01")
	require.NotContains(t, res.Error, testAccountSID)
}

func TestTwilioInvalidToNumberTextDoesNotNameTheNumber(t *testing.T) {
	// Twilio's real 21211 answer names the number it refused.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"code": 21211, "message": "The 'To' number ` + testTo + ` is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`))
	}))
	t.Cleanup(srv.Close)

	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, "twilio 21211: The 'To' number [recipient] is not a valid phone number.", res.Error)
	require.NotContains(t, res.Excerpt, testTo)
	require.NotContains(t, res.Excerpt, strings.TrimPrefix(testTo, "+"))
}

func TestTwilioDeliveredReplyIsKeptWithoutTheNumber(t *testing.T) {
	_, srv := newFake(t, sink.TwilioFakeConfig{NoCallback: true})

	res := newTwilio(t, provider.TwilioConfig{URL: srv.URL}).Send(context.Background(), sms(testTo, "hi"))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.NotEmpty(t, res.Excerpt)
	require.NotContains(t, res.Excerpt, strings.TrimPrefix(testTo, "+"))
}

func TestSMTPRecipientRefusedAtRcptIsNotNamedInTheResult(t *testing.T) {
	const rcpt = "Jane.Doe@example.com"
	port := smtpScriptedServer(t, map[string]string{"RCPT": "550 5.1.1 <jane.doe@example.com>: Recipient address rejected: User unknown"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})
	m := smtpMessage("n-rcpt-scrub", 1)
	m.Recipient = rcpt

	res := s.Send(context.Background(), m)

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 550, res.StatusCode)
	require.NotContains(t, strings.ToLower(res.Error+res.Excerpt), "jane.doe")
	require.Contains(t, res.Error, "Recipient address rejected")
}

func TestSMTPGreylistingAtRcptIsRetriedButNotTheProvidersFault(t *testing.T) {
	port := smtpScriptedServer(t, map[string]string{"RCPT": "451 4.7.1 <user@example.com>: Recipient address rejected: Greylisted, try again later"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-grey", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, 451, res.StatusCode)
	require.False(t, res.ProviderFault, "greylisting is about the recipient's mailbox, not the provider")
	require.NotContains(t, res.Error, "user@example.com")
}

func TestSMTPServiceClosingAtRcptIsTheProvidersFault(t *testing.T) {
	port := smtpScriptedServer(t, map[string]string{"RCPT": "421 4.3.2 Service shutting down"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-421", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
}

func TestSMTPSinkRefusingARecipientIsNotNamedInTheResult(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	mail.RefuseRecipient("refused.person@example.com", 550, "mailbox refused.person@example.com does not exist")
	s := smtpNew(t, provider.SMTPConfig{Port: port})
	m := smtpMessage("n-sink-rcpt", 1)
	m.Recipient = "refused.person@example.com"

	res := s.Send(context.Background(), m)

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 550, res.StatusCode)
	require.NotContains(t, res.Error, "refused.person")
	require.Empty(t, mail.Messages())

	// Another recipient is taken.
	ok := s.Send(context.Background(), smtpMessage("n-sink-ok", 1))
	require.Equal(t, workflows.OutcomeDelivered, ok.Outcome, ok.Error)
}
