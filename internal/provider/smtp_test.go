package provider_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

const smtpArrivalWait = 5 * time.Second

func smtpNew(t *testing.T, cfg provider.SMTPConfig) *provider.SMTP {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.From == "" {
		cfg.From = "Dispatch <noreply@example.com>"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	s, err := provider.NewSMTP(cfg)
	require.NoError(t, err)
	return s
}

func smtpMessage(id string, attempt int) provider.Message {
	return provider.Message{
		NotificationID: id,
		Attempt:        attempt,
		Channel:        "email",
		Recipient:      "user@example.com",
		Subject:        "Your order shipped",
		Content:        "It left the warehouse today.",
	}
}

func smtpArrival(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(smtpArrivalWait):
		t.Fatal("no message arrived at the mail sink")
		return ""
	}
}

func TestSMTPSendArrivesWithHeaders(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mail.Arrivals(4)
	s := smtpNew(t, provider.SMTPConfig{Port: port, MessageIDDomain: "mail.example.com"})

	res := s.Send(context.Background(), smtpMessage("0b7e4d2c-9a51-4f0e-8d7c-1f2a3b4c5d6e", 3))

	want := "<0b7e4d2c-9a51-4f0e-8d7c-1f2a3b4c5d6e@mail.example.com>"
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, 250, res.StatusCode)
	require.Equal(t, want, res.MessageID)
	require.Empty(t, res.Error)
	require.False(t, res.ProviderFault)
	require.Equal(t, want, smtpArrival(t, arrivals))

	got := mail.ByMessageID(want)
	require.Len(t, got, 1)
	msg := got[0]
	require.Equal(t, "noreply@example.com", msg.From)
	require.Equal(t, []string{"user@example.com"}, msg.To)
	from, err := msg.Header.AddressList("From")
	require.NoError(t, err)
	require.Equal(t, "Dispatch", from[0].Name)
	require.Equal(t, "noreply@example.com", from[0].Address)
	require.Contains(t, msg.Header.Get("To"), "user@example.com")
	require.Equal(t, "Your order shipped", msg.Header.Get("Subject"))
	require.Equal(t, "0b7e4d2c-9a51-4f0e-8d7c-1f2a3b4c5d6e", msg.Header.Get("X-Dispatch-Notification-Id"))
	require.Equal(t, "3", msg.Header.Get("X-Dispatch-Attempt"))
	require.Contains(t, msg.Header.Get("Content-Type"), "text/plain")
	require.Equal(t, "It left the warehouse today.", strings.TrimSpace(msg.Body))
}

func TestSMTPMessageIDDefaultsToTheDomainOfFrom(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mail.Arrivals(1)
	s := smtpNew(t, provider.SMTPConfig{Port: port, From: "Dispatch <noreply@notify.example.com>"})

	res := s.Send(context.Background(), smtpMessage("n-1", 1))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, "<n-1@notify.example.com>", res.MessageID)
	require.Equal(t, provider.MessageID("n-1", "notify.example.com"), smtpArrival(t, arrivals))
}

func TestSMTPRetrySendsTheSameMessageID(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mail.Arrivals(4)
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	first := s.Send(context.Background(), smtpMessage("n-retry", 1))
	second := s.Send(context.Background(), smtpMessage("n-retry", 2))

	require.Equal(t, workflows.OutcomeDelivered, first.Outcome, first.Error)
	require.Equal(t, workflows.OutcomeDelivered, second.Outcome, second.Error)
	require.Equal(t, first.MessageID, second.MessageID)
	require.Equal(t, first.MessageID, smtpArrival(t, arrivals))
	require.Equal(t, first.MessageID, smtpArrival(t, arrivals))
	got := mail.ByMessageID("<n-retry@example.com>")
	require.Len(t, got, 2)
	require.Equal(t, "1", got[0].Header.Get("X-Dispatch-Attempt"))
	require.Equal(t, "2", got[1].Header.Get("X-Dispatch-Attempt"))
}

func TestSMTP4xxIsRetryable(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	mail.FailNext(1, 451, "greylisted, try again later")
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-451", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, 451, res.StatusCode)
	require.True(t, res.ProviderFault)
	require.Contains(t, res.Error, "greylisted")
	require.Empty(t, mail.Messages())

	// The refusal was for one DATA only; the retry is taken.
	retry := s.Send(context.Background(), smtpMessage("n-451", 2))
	require.Equal(t, workflows.OutcomeDelivered, retry.Outcome, retry.Error)
}

func TestSMTP5xxIsPermanent(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	mail.FailNext(1, 550, "mailbox unavailable")
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-550", 1))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 550, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Contains(t, res.Error, "mailbox unavailable")
	require.Equal(t, "<n-550@example.com>", res.MessageID)
}

func TestSMTPAuthAndStartTLS(t *testing.T) {
	serverTLS, clientTLS := testenv.SelfSignedTLS(t)
	const password = "s3cret-Passw0rd"
	mail, port := testenv.MailServer(t, sink.MailConfig{Username: "dispatch", Password: password, TLSConfig: serverTLS})
	arrivals := mail.Arrivals(1)

	t.Run("delivers", func(t *testing.T) {
		s := smtpNew(t, provider.SMTPConfig{Port: port, StartTLS: true, TLSConfig: clientTLS, Username: "dispatch", Password: password})
		res := s.Send(context.Background(), smtpMessage("n-auth", 1))
		require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
		require.Equal(t, "<n-auth@example.com>", smtpArrival(t, arrivals))
	})

	t.Run("wrong password is the provider's fault", func(t *testing.T) {
		const wrong = "not-the-Passw0rd"
		s := smtpNew(t, provider.SMTPConfig{Port: port, StartTLS: true, TLSConfig: clientTLS, Username: "dispatch", Password: wrong})
		res := s.Send(context.Background(), smtpMessage("n-auth-bad", 1))
		require.Equal(t, workflows.OutcomeRetry, res.Outcome)
		require.Equal(t, 535, res.StatusCode)
		require.True(t, res.ProviderFault)
		require.NotContains(t, res.Error, wrong)
		require.NotContains(t, res.Error, password)
	})

	t.Run("no credentials is the provider's fault", func(t *testing.T) {
		s := smtpNew(t, provider.SMTPConfig{Port: port, StartTLS: true, TLSConfig: clientTLS})
		res := s.Send(context.Background(), smtpMessage("n-auth-none", 1))
		require.Equal(t, workflows.OutcomeRetry, res.Outcome)
		require.Equal(t, 530, res.StatusCode)
		require.True(t, res.ProviderFault)
	})

	t.Run("an untrusted certificate is a network failure", func(t *testing.T) {
		s := smtpNew(t, provider.SMTPConfig{Port: port, StartTLS: true, Username: "dispatch", Password: password})
		res := s.Send(context.Background(), smtpMessage("n-untrusted", 1))
		require.Equal(t, workflows.OutcomeRetry, res.Outcome)
		require.Zero(t, res.StatusCode)
		require.True(t, res.ProviderFault)
		require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
		require.NotContains(t, res.Error, password)
	})

	require.Len(t, mail.Messages(), 1)
}

func TestSMTPStartTLSRequiredButNotOfferedIsProviderFault(t *testing.T) {
	_, port := testenv.MailServer(t, sink.MailConfig{})
	s := smtpNew(t, provider.SMTPConfig{Port: port, StartTLS: true})

	res := s.Send(context.Background(), smtpMessage("n-notls", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, res.ProviderFault)
	require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
	require.Contains(t, res.Error, "STARTTLS")
}

func TestSMTPPlainAuthWithoutTLSOnLoopback(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{Username: "dispatch", Password: "local-pass"})
	arrivals := mail.Arrivals(1)
	s := smtpNew(t, provider.SMTPConfig{Port: port, Username: "dispatch", Password: "local-pass"})

	res := s.Send(context.Background(), smtpMessage("n-local-auth", 1))

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	require.Equal(t, "<n-local-auth@example.com>", smtpArrival(t, arrivals))
}

func TestSMTPUnreachableIsRetryableProviderFault(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-closed", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Zero(t, res.StatusCode)
	require.True(t, res.ProviderFault)
	require.True(t, strings.HasPrefix(res.Error, "network: "), res.Error)
}

func TestSMTPRefusalOnConnectIsProviderFault(t *testing.T) {
	port := smtpScriptedServer(t, map[string]string{"": "554 5.3.2 Service not available"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-554", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, 554, res.StatusCode)
	require.True(t, res.ProviderFault)
}

func TestSMTPRejectedSenderIsProviderFault(t *testing.T) {
	port := smtpScriptedServer(t, map[string]string{"MAIL": "553 5.7.1 Sender address rejected"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-553", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Equal(t, 553, res.StatusCode)
	require.True(t, res.ProviderFault)
}

func TestSMTPRejectedRecipientIsPermanent(t *testing.T) {
	port := smtpScriptedServer(t, map[string]string{"RCPT": "550 5.1.1 No such user"})
	s := smtpNew(t, provider.SMTPConfig{Port: port})

	res := s.Send(context.Background(), smtpMessage("n-rcpt", 1))

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 550, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Contains(t, res.Error, "No such user")
}

func TestSMTPCancelledContextAbortsTheExchange(t *testing.T) {
	accepted := smtpSilentServer(t)
	s := smtpNew(t, provider.SMTPConfig{Port: accepted.port, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-accepted.conns
		cancel()
	}()

	res := s.Send(ctx, smtpMessage("n-cancel", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.True(t, strings.HasPrefix(res.Error, "cancelled: "), res.Error)
	require.False(t, res.ProviderFault)
}

func TestSMTPSilentServerTimesOut(t *testing.T) {
	accepted := smtpSilentServer(t)
	s := smtpNew(t, provider.SMTPConfig{Port: accepted.port, Timeout: 300 * time.Millisecond})

	res := s.Send(context.Background(), smtpMessage("n-timeout", 1))

	require.Equal(t, workflows.OutcomeRetry, res.Outcome)
	require.Zero(t, res.StatusCode)
	require.True(t, res.ProviderFault)
	require.True(t, strings.HasPrefix(res.Error, "timeout: "), res.Error)
}

func TestSMTPInvalidRecipientIsPermanent(t *testing.T) {
	s := smtpNew(t, provider.SMTPConfig{Port: 2525})
	m := smtpMessage("n-bad-rcpt", 1)
	m.Recipient = "not an address"

	res := s.Send(context.Background(), m)

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.False(t, res.ProviderFault)
}

func TestNewSMTPValidates(t *testing.T) {
	for name, cfg := range map[string]provider.SMTPConfig{
		"no host":          {From: "noreply@example.com"},
		"from not address": {Host: "127.0.0.1", From: "nobody"},
		"bad port":         {Host: "127.0.0.1", From: "noreply@example.com", Port: 70000},
		"bad domain":       {Host: "127.0.0.1", From: "noreply@example.com", MessageIDDomain: "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := provider.NewSMTP(cfg)
			require.Error(t, err)
		})
	}
	_, err := provider.NewSMTP(provider.SMTPConfig{Host: "smtp.example.com", From: "Dispatch <noreply@example.com>", StartTLS: true})
	require.NoError(t, err)
}

// smtpScriptedServer is an SMTP server that answers each command verb with
// replies[verb] ("" is the greeting), and 250 (354 to DATA) otherwise: a
// server refusing at a step the mail sink cannot be told to refuse at.
func smtpScriptedServer(t *testing.T, replies map[string]string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	reply := func(verb, def string) string {
		if r, ok := replies[verb]; ok {
			return r
		}
		return def
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(smtpArrivalWait))
				r := bufio.NewReader(c)
				say := func(line string) bool {
					_, err := c.Write([]byte(line + "\r\n"))
					return err == nil
				}
				if greeting := reply("", "220 localhost ESMTP"); !say(greeting) {
					return
				}
				inData := false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					if inData {
						if line == "." {
							inData = false
							say(reply(".", "250 2.0.0 queued"))
						}
						continue
					}
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					switch verb {
					case "QUIT":
						say("221 bye")
						return
					case "DATA":
						resp := reply("DATA", "354 go ahead")
						inData = strings.HasPrefix(resp, "354")
						say(resp)
					default:
						say(reply(verb, "250 ok"))
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

type smtpSilent struct {
	port  int
	conns <-chan struct{}
}

// smtpSilentServer accepts connections and never says anything: a provider
// that stopped answering. conns receives once per accepted connection.
func smtpSilentServer(t *testing.T) smtpSilent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	conns := make(chan struct{}, 8)
	var open []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			open = append(open, c)
			select {
			case conns <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for _, c := range open {
			_ = c.Close()
		}
	})
	return smtpSilent{port: l.Addr().(*net.TCPAddr).Port, conns: conns}
}

func TestSMTPExtraHeadersArrive(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	arrivals := mail.Arrivals(1)
	s := smtpNew(t, provider.SMTPConfig{Port: port})
	m := smtpMessage("n-headers", 1)
	// Long enough that the writer folds it, as it will a real token.
	unsubscribe := "<https://dispatch.example.com/u/" + strings.Repeat("Ab0_-", 30) + ">, <mailto:unsubscribe@example.com?subject=unsubscribe-xyz>"
	m.Headers = map[string]string{"List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

	res := s.Send(context.Background(), m)

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, res.Error)
	smtpArrival(t, arrivals)
	got := mail.ByMessageID("<n-headers@example.com>")
	require.Len(t, got, 1)
	require.Equal(t, unsubscribe, got[0].Header.Get("List-Unsubscribe"))
	require.Equal(t, "List-Unsubscribe=One-Click", got[0].Header.Get("List-Unsubscribe-Post"))
	require.Equal(t, "Your order shipped", got[0].Header.Get("Subject"))
}

func TestSMTPExtraHeadersCannotInjectOrReplace(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	s := smtpNew(t, provider.SMTPConfig{Port: port})
	for name, headers := range map[string]map[string]string{
		"CRLF in a value": {"List-Unsubscribe": "<https://x.example/u/t>\r\nBcc: victim@example.com"},
		"LF in a value":   {"List-Unsubscribe": "<https://x.example/u/t>\nBcc: victim@example.com"},
		"colon in a name": {"Bcc: victim@example.com\r\nX": "1"},
		"space in a name": {"List Unsubscribe": "x"},
		"empty name":      {"": "x"},
		"a reserved name": {"subject": "Something else"},
		"our own header":  {"X-Dispatch-Attempt": "9"},
	} {
		t.Run(name, func(t *testing.T) {
			res := s.Send(context.Background(), provider.Message{
				NotificationID: "n-inject", Attempt: 1, Channel: "email", Recipient: "user@example.com",
				Subject: "s", Content: "c", Headers: headers,
			})
			require.Equal(t, workflows.OutcomePermanent, res.Outcome)
			require.False(t, res.ProviderFault)
			require.Empty(t, res.Suppress)
			require.True(t, strings.HasPrefix(res.Error, "smtp: "), res.Error)
		})
	}
	require.Empty(t, mail.Messages(), "nothing was sent")
}

func TestSMTPAddressRefusalAtRcptIsSuppressed(t *testing.T) {
	const ehloWithCodes = "250-localhost\r\n250 ENHANCEDSTATUSCODES"
	for name, c := range map[string]struct {
		replies  map[string]string
		outcome  workflows.Outcome
		suppress string
	}{
		"5.1.1 in the text":               {map[string]string{"RCPT": "550 5.1.1 No such user"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"5.1.1 as the enhanced code":      {map[string]string{"EHLO": ehloWithCodes, "RCPT": "550 5.1.1 No such user"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"551 user not local":              {map[string]string{"RCPT": "551 5.1.6 Mailbox moved"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"553 bad address syntax":          {map[string]string{"RCPT": "553 5.1.3 Bad recipient address syntax"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"554 with an enhanced 5.1.1":      {map[string]string{"EHLO": ehloWithCodes, "RCPT": "554 5.1.1 Unknown"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"a generic 5.0.0 before 5.1.1":    {map[string]string{"EHLO": ehloWithCodes, "RCPT": "550 5.0.0 5.1.1 <user@example.com>: User unknown"}, workflows.OutcomePermanent, provider.SuppressRefused},
		"policy refusal 5.7.1":            {map[string]string{"EHLO": ehloWithCodes, "RCPT": "550 5.7.1 Relaying denied"}, workflows.OutcomePermanent, ""},
		"mailbox full 5.2.2":              {map[string]string{"RCPT": "552 5.2.2 Mailbox full"}, workflows.OutcomePermanent, ""},
		"554 with 5.1.1 only in the text": {map[string]string{"RCPT": "554 5.1.1 Unknown"}, workflows.OutcomePermanent, ""},
		"no status code at all":           {map[string]string{"RCPT": "550 Mailbox unavailable"}, workflows.OutcomePermanent, ""},
		"4xx at RCPT":                     {map[string]string{"RCPT": "450 4.1.1 Try later"}, workflows.OutcomeRetry, ""},
		"5.1.1 at DATA":                   {map[string]string{"DATA": "550 5.1.1 No such user"}, workflows.OutcomePermanent, ""},
		"5.1.1 after the message":         {map[string]string{".": "550 5.1.1 No such user"}, workflows.OutcomePermanent, ""},
		"5.1.8 at MAIL FROM":              {map[string]string{"MAIL": "553 5.1.8 Sender domain unknown"}, workflows.OutcomeRetry, ""},
	} {
		t.Run(name, func(t *testing.T) {
			port := smtpScriptedServer(t, c.replies)
			res := smtpNew(t, provider.SMTPConfig{Port: port}).Send(context.Background(), smtpMessage("n-rcpt-dead", 1))
			require.Equal(t, c.outcome, res.Outcome, res.Error)
			require.Equal(t, c.suppress, res.Suppress, res.Error)
		})
	}
}

func TestSMTPSinkBounceAddressIsSuppressed(t *testing.T) {
	mail, port := testenv.MailServer(t, sink.MailConfig{})
	s := smtpNew(t, provider.SMTPConfig{Port: port})
	m := smtpMessage("n-bounce", 1)
	m.Recipient = "bounce.ada@example.com"

	res := s.Send(context.Background(), m)

	require.Equal(t, workflows.OutcomePermanent, res.Outcome)
	require.Equal(t, 550, res.StatusCode)
	require.False(t, res.ProviderFault)
	require.Equal(t, provider.SuppressRefused, res.Suppress)
	require.Contains(t, res.Error, "user unknown")
	require.NotContains(t, res.Error, "bounce.ada@example.com", "the recipient is scrubbed")
	require.Empty(t, mail.Messages())

	// A delivered message and a refused DATA say nothing about the address.
	ok := s.Send(context.Background(), smtpMessage("n-ok", 1))
	require.Equal(t, workflows.OutcomeDelivered, ok.Outcome, ok.Error)
	require.Empty(t, ok.Suppress)
	mail.FailNext(1, 550, "5.1.1 mailbox unavailable")
	data := s.Send(context.Background(), smtpMessage("n-data", 1))
	require.Equal(t, workflows.OutcomePermanent, data.Outcome)
	require.Empty(t, data.Suppress)
}
