package sink_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

const mailArrivalWait = 5 * time.Second

func mailServe(t *testing.T, cfg sink.MailConfig) (*sink.Mail, string) {
	t.Helper()
	m, port := testenv.MailServer(t, cfg)
	return m, "127.0.0.1:" + strconv.Itoa(port)
}

const mailRaw = "From: Dispatch <noreply@example.com>\r\n" +
	"To: user@example.com\r\n" +
	"Subject: =?UTF-8?q?Caf=C3=A9_is_open?=\r\n" +
	"Message-ID: <n-1@example.com>\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Caf=C3=A9 opens at nine.\r\n"

// send runs one transaction; auth, when not nil, authenticates first and
// tlsConfig, when not nil, starts TLS first.
func mailSend(addr string, tlsConfig *tls.Config, auth sasl.Client, data string) error {
	var (
		c   *smtp.Client
		err error
	)
	if tlsConfig != nil {
		c, err = smtp.DialStartTLS(addr, tlsConfig)
	} else {
		c, err = smtp.Dial(addr)
	}
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.SendMail("noreply@example.com", []string{"user@example.com"}, strings.NewReader(data)); err != nil {
		return err
	}
	return c.Quit()
}

func mailReplyCode(t *testing.T, err error) int {
	t.Helper()
	var smtpErr *smtp.SMTPError
	require.True(t, errors.As(err, &smtpErr), "not an SMTP reply: %v", err)
	return smtpErr.Code
}

func mailArrival(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(mailArrivalWait):
		t.Fatal("no message arrived")
		return ""
	}
}

func TestMailRecordsWhatArrives(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{})
	arrivals := m.Arrivals(1)

	require.NoError(t, mailSend(addr, nil, nil, mailRaw))

	require.Equal(t, "<n-1@example.com>", mailArrival(t, arrivals))
	msgs := m.Messages()
	require.Len(t, msgs, 1)
	msg := msgs[0]
	require.Equal(t, "noreply@example.com", msg.From)
	require.Equal(t, []string{"user@example.com"}, msg.To)
	require.Equal(t, mailRaw, string(msg.Data))
	require.Equal(t, "Dispatch <noreply@example.com>", msg.Header.Get("From"))
	require.Equal(t, "Café opens at nine.\r\n", msg.Body)
	require.False(t, msg.ReceivedAt.IsZero())
	require.Len(t, m.ByMessageID("<n-1@example.com>"), 1)
	require.Empty(t, m.ByMessageID("<other@example.com>"))

	m.Reset()
	require.Empty(t, m.Messages())
}

func TestMailFailNextRefusesThatManyThenAccepts(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{})
	arrivals := m.Arrivals(4)
	m.FailNext(2, 451, "greylisted")

	err := mailSend(addr, nil, nil, mailRaw)
	require.Equal(t, 451, mailReplyCode(t, err))
	require.Contains(t, err.Error(), "greylisted")
	require.Equal(t, 451, mailReplyCode(t, mailSend(addr, nil, nil, mailRaw)))
	require.NoError(t, mailSend(addr, nil, nil, mailRaw))

	require.Equal(t, "<n-1@example.com>", mailArrival(t, arrivals))
	require.Len(t, m.Messages(), 1, "refused messages are not recorded")

	m.FailNext(1, 550, "no such user")
	require.Equal(t, 550, mailReplyCode(t, mailSend(addr, nil, nil, mailRaw)))
}

func TestMailRequiresAuthWhenConfigured(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{Username: "dispatch", Password: "pw"})

	require.Equal(t, 530, mailReplyCode(t, mailSend(addr, nil, nil, mailRaw)))
	require.Equal(t, 535, mailReplyCode(t, mailSend(addr, nil, sasl.NewPlainClient("", "dispatch", "wrong"), mailRaw)))
	require.NoError(t, mailSend(addr, nil, sasl.NewPlainClient("", "dispatch", "pw"), mailRaw))
	require.Len(t, m.Messages(), 1)
}

func TestMailRequiresStartTLSBeforeAuth(t *testing.T) {
	serverTLS, clientTLS := mailTestCert(t)
	m, addr := mailServe(t, sink.MailConfig{Username: "dispatch", Password: "pw", TLSConfig: serverTLS})

	c, err := smtp.Dial(addr)
	require.NoError(t, err)
	require.NoError(t, c.Hello("localhost"))
	ok, _ := c.Extension("STARTTLS")
	require.True(t, ok, "STARTTLS is offered")
	require.Equal(t, 523, mailReplyCode(t, c.Auth(sasl.NewPlainClient("", "dispatch", "pw"))))
	require.NoError(t, c.Close())

	require.NoError(t, mailSend(addr, clientTLS, sasl.NewPlainClient("", "dispatch", "pw"), mailRaw))
	require.Len(t, m.Messages(), 1)
}

func TestMailHandlerListsAndResets(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{})
	arrivals := m.Arrivals(1)
	require.NoError(t, mailSend(addr, nil, nil, mailRaw))
	mailArrival(t, arrivals)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/_sink/mail")
	require.NoError(t, err)
	var list []struct {
		From       string    `json:"from"`
		To         []string  `json:"to"`
		Subject    string    `json:"subject"`
		MessageID  string    `json:"messageId"`
		ReceivedAt time.Time `json:"receivedAt"`
		Body       string    `json:"body"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, list, 1)
	require.Equal(t, "noreply@example.com", list[0].From)
	require.Equal(t, []string{"user@example.com"}, list[0].To)
	require.Equal(t, "Café is open", list[0].Subject)
	require.Equal(t, "<n-1@example.com>", list[0].MessageID)
	require.Equal(t, "Café opens at nine.\r\n", list[0].Body)
	require.False(t, list[0].ReceivedAt.IsZero())

	req, err := http.NewRequest(http.MethodDelete, srv.URL+"/_sink/mail", nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Empty(t, m.Messages())

	resp, err = http.Post(srv.URL+"/_sink/mail", "text/plain", nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestMailServeReturnsNilAfterClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := sink.NewMail(sink.MailConfig{})
	require.NoError(t, m.Close())
	require.NoError(t, m.Serve(l), "Serve after Close returns at once")
	require.NoError(t, m.Close(), "a second Close does nothing")
	_, err = net.DialTimeout("tcp", l.Addr().String(), time.Second)
	require.Error(t, err, "the listener is closed")
}

func mailTestCert(t *testing.T) (server, client *tls.Config) {
	server, client = testenv.SelfSignedTLS(t)
	client.ServerName = "127.0.0.1"
	return server, client
}

func TestMailRefusesBounceAddressesAtRcpt(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{})
	c, err := smtp.Dial(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Hello("localhost"))
	require.NoError(t, c.Mail("noreply@example.com", nil))

	for _, dead := range []string{"bounce@example.com", "Bounce.Ada+x@example.com", "bounced-1@example.org"} {
		err := c.Rcpt(dead, nil)
		var smtpErr *smtp.SMTPError
		require.True(t, errors.As(err, &smtpErr), "%s: not an SMTP reply: %v", dead, err)
		require.Equal(t, 550, smtpErr.Code, dead)
		require.Equal(t, smtp.EnhancedCode{5, 1, 1}, smtpErr.EnhancedCode, dead)
		require.Equal(t, "<"+dead+">: user unknown", smtpErr.Message, dead)
	}
	// Only the local part counts, and only its start.
	for _, alive := range []string{"user@bounce.example.com", "no-bounce@example.com"} {
		require.NoError(t, c.Rcpt(alive, nil), alive)
	}
	require.NoError(t, c.Reset())
	require.Empty(t, m.Messages())
}

func TestMailHandlerListsHeaders(t *testing.T) {
	m, addr := mailServe(t, sink.MailConfig{})
	arrivals := m.Arrivals(1)
	raw := strings.Replace(mailRaw, "\r\n\r\n",
		"\r\nList-Unsubscribe: <https://dispatch.example.com/u/abc>,\r\n <mailto:unsub@example.com?subject=unsubscribe-abc>\r\n"+
			"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1)
	require.NoError(t, mailSend(addr, nil, nil, raw))
	mailArrival(t, arrivals)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/_sink/mail")
	require.NoError(t, err)
	var list []struct {
		Headers map[string][]string `json:"headers"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.NoError(t, resp.Body.Close())
	require.Len(t, list, 1)
	h := list[0].Headers
	require.Equal(t, []string{"<https://dispatch.example.com/u/abc>, <mailto:unsub@example.com?subject=unsubscribe-abc>"}, h["List-Unsubscribe"], "a folded field is listed unfolded")
	require.Equal(t, []string{"List-Unsubscribe=One-Click"}, h["List-Unsubscribe-Post"])
	require.Equal(t, []string{"<n-1@example.com>"}, h["Message-Id"])
}
