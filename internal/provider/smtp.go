package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	netmail "net/mail"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Defaults of an smtp provider.
const (
	// DefaultSMTPTimeout bounds a whole send (connect, STARTTLS, AUTH, the
	// transaction) when SMTPConfig.Timeout is zero.
	DefaultSMTPTimeout = 15 * time.Second
	smtpSubmissionPort = 587
	smtpPort           = 25
)

// Headers every email carries, so a mailbox (or the sink) can tell which
// notification and which attempt a message is.
const (
	SMTPHeaderNotificationID = "X-Dispatch-Notification-Id"
	SMTPHeaderAttempt        = "X-Dispatch-Attempt"
)

// SMTPConfig is an smtp provider's settings (from the providers file).
type SMTPConfig struct {
	Host string
	// Port defaults to 587 when StartTLS, else 25.
	Port int
	// From is the envelope and header From, e.g. "Dispatch <noreply@example.com>".
	From string
	// Username and Password, when Username is set, authenticate with AUTH.
	// Over STARTTLS the strongest mechanism the server offers is used (PLAIN
	// and LOGIN included); without TLS only PLAIN or LOGIN, and go-mail sends
	// those only to localhost, 127.0.0.1 or ::1, never in the clear elsewhere.
	Username, Password string
	// StartTLS requires STARTTLS (a server not offering it is a failed
	// send); false sends without TLS, for local servers.
	StartTLS bool
	// Timeout bounds one whole send; zero means DefaultSMTPTimeout.
	Timeout time.Duration
	// MessageIDDomain is the right side of Message-ID; default: the domain of From.
	MessageIDDomain string
	// TLSConfig, when set, is used for STARTTLS (tests pass one trusting
	// their self-signed certificate). Its ServerName defaults to Host.
	TLSConfig *tls.Config
}

// SMTP sends notifications as plain-text emails through one SMTP server.
// It is safe for concurrent use: every Send dials its own connection, since
// go-mail's Client holds one connection's state and a send per connection
// keeps one attempt's failure from leaking into the next.
type SMTP struct {
	cfg    SMTPConfig
	from   *netmail.Address
	domain string
}

var _ Sender = (*SMTP)(nil)

// NewSMTP validates cfg and returns its sender: Host must be set, Port a
// port (or zero for the default), From an address, MessageIDDomain (or the
// domain of From) usable in a Message-ID.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if strings.TrimSpace(cfg.Host) == "" || strings.ContainsAny(cfg.Host, " \t\r\n/") {
		return nil, fmt.Errorf("smtp: host %q is not a host name", cfg.Host)
	}
	if cfg.Port == 0 {
		cfg.Port = smtpPort
		if cfg.StartTLS {
			cfg.Port = smtpSubmissionPort
		}
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("smtp: %d is not a port", cfg.Port)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("smtp: timeout %s is negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp: from %q is not an address: %w", cfg.From, err)
	}
	domain := cfg.MessageIDDomain
	if domain == "" {
		domain = from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	}
	if !smtpDotAtom(domain) {
		return nil, fmt.Errorf("smtp: %q cannot be the domain of a Message-ID", domain)
	}
	if cfg.TLSConfig != nil {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
		if cfg.TLSConfig.ServerName == "" {
			cfg.TLSConfig.ServerName = cfg.Host
		}
	}
	return &SMTP{cfg: cfg, from: from, domain: domain}, nil
}

// MessageID is the Message-ID of a notification's email: the same on every
// attempt, so a retry that reaches a mailbox twice is recognisable.
func MessageID(notificationID, domain string) string {
	return "<" + notificationID + "@" + domain + ">"
}

// Send delivers m as one email over a new connection. It never returns an
// error: see smtpClassify for how an SMTP reply or a failure to get one becomes
// a Result. ctx (and the configured timeout) abort the exchange at any step,
// not only the dial. What it returns never names the recipient (go-mail
// appends "affected recipient(s)", and a server refusing a mailbox repeats
// it).
func (s *SMTP) Send(ctx context.Context, m Message) Result {
	return ScrubRecipient(s.send(ctx, m), m.Recipient)
}

func (s *SMTP) send(ctx context.Context, m Message) Result {
	if err := ctx.Err(); err != nil {
		return s.aborted(ctx)
	}
	if !smtpDotAtom(m.NotificationID) {
		return Result{Outcome: workflows.OutcomePermanent, Error: fmt.Sprintf("smtp: notification id %q cannot be the left side of a Message-ID", m.NotificationID)}
	}
	messageID := MessageID(m.NotificationID, s.domain)
	msg := gomail.NewMsg()
	msg.FromMailAddress(s.from)
	if err := msg.To(m.Recipient); err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: s.redact("smtp: invalid recipient: " + err.Error())}
	}
	msg.Subject(m.Subject)
	msg.SetBodyString(gomail.TypeTextPlain, m.Content)
	if m.HTML != "" {
		// multipart/alternative: the text first, the HTML the client prefers after it.
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	msg.SetGenHeader(gomail.HeaderMessageID, messageID)
	msg.SetGenHeader(SMTPHeaderNotificationID, m.NotificationID)
	msg.SetGenHeader(SMTPHeaderAttempt, strconv.Itoa(m.Attempt))
	if err := smtpCheckHeaders(m.Headers); err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: "smtp: " + err.Error()}
	}
	for name, value := range m.Headers {
		msg.SetGenHeader(gomail.Header(name), value)
	}

	sendCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// go-mail watches ctx only while dialing; closing the connection when
	// ctx ends is what aborts a server that stalls mid-transaction.
	var conn net.Conn
	stop := func() bool { return false }
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn = c
		stop = context.AfterFunc(sendCtx, func() { _ = c.Close() })
		return c, nil
	}
	client, err := gomail.NewClient(s.cfg.Host, s.options(dial)...)
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: s.redact("smtp: " + err.Error())}
	}
	err = client.DialAndSendWithContext(sendCtx, msg)
	stop()
	if conn != nil {
		// go-mail leaves the connection open when EHLO, STARTTLS or AUTH fails.
		_ = conn.Close()
	}

	if msg.IsDelivered() {
		// The server took the message (250 after DATA); a later failure
		// (RSET, QUIT) does not undo that.
		return Result{Outcome: workflows.OutcomeDelivered, StatusCode: 250, MessageID: messageID, Excerpt: Excerpt([]byte(msg.ServerResponse()))}
	}
	if err == nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, MessageID: messageID, Error: "smtp: the server did not confirm the message"}
	}
	if ctx.Err() != nil {
		r := s.aborted(ctx)
		r.MessageID = messageID
		return r
	}
	if sendCtx.Err() != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, MessageID: messageID,
			Error: fmt.Sprintf("timeout: the SMTP exchange took longer than %s", s.cfg.Timeout)}
	}
	r := smtpClassify(err)
	r.MessageID = messageID
	r.Error = s.redact(r.Error)
	return r
}

func (s *SMTP) options(dial gomail.DialContextFunc) []gomail.Option {
	opts := []gomail.Option{
		gomail.WithPort(s.cfg.Port),
		gomail.WithTimeout(s.cfg.Timeout),
		gomail.WithDialContextFunc(dial),
	}
	if !s.cfg.StartTLS {
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	} else {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
		if s.cfg.TLSConfig != nil {
			opts = append(opts, gomail.WithTLSConfig(s.cfg.TLSConfig))
		}
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
		if s.cfg.StartTLS {
			opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover))
		} else {
			// Auto-discovery offers no PLAIN or LOGIN without TLS; these two
			// refuse, inside go-mail, any server but a loopback one.
			opts = append(opts, gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthPlain, gomail.SMTPAuthLogin))
		}
	}
	return opts
}

// aborted is the Result of a send whose ctx ended.
func (s *SMTP) aborted(ctx context.Context) Result {
	cause := context.Cause(ctx)
	prefix := "cancelled: "
	if errors.Is(cause, context.DeadlineExceeded) {
		prefix = "timeout: "
	}
	return Result{Outcome: workflows.OutcomeRetry, ProviderFault: errors.Is(cause, context.DeadlineExceeded), Error: s.redact(prefix + cause.Error())}
}

// redact keeps the password out of anything returned, whatever a server
// chose to echo.
func (s *SMTP) redact(text string) string {
	if s.cfg.Password == "" {
		return text
	}
	return strings.ReplaceAll(text, s.cfg.Password, "[redacted]")
}

// SMTP reply codes that refuse our credentials rather than the message.
var smtpAuthCodes = map[int]bool{
	530: true, // authentication required
	534: true, // mechanism too weak
	535: true, // credentials invalid
	538: true, // encryption required for the mechanism
}

// smtpClassify maps a failed send to a Result:
//   - a 4xx reply to RCPT TO, but 421 (closing) and 454 (relay or
//     authentication, temporarily): retry, not a provider fault: it is
//     about the recipient's mailbox (greylisting, a full or busy mailbox),
//     and another provider would hear the same;
//   - any other 4xx reply: retry, provider fault (busy, closing);
//   - a 5xx refusing our credentials (530, 534, 535, 538) at any step, any
//     5xx before the transaction (the greeting, EHLO, STARTTLS, AUTH: a
//     554 "service not available") and a 5xx to MAIL FROM (our sender,
//     the same for every message): retry, provider fault;
//   - a 5xx to RCPT TO or to the message (DATA): permanent, not a provider
//     fault (a bad recipient, a refused message); one to RCPT TO that
//     refuses the address itself (smtpRefusesAddress) also says Suppress
//     "refused", so the address is not tried again;
//   - no reply (refused connection, DNS, TLS or no STARTTLS offered, a
//     dropped connection): retry, provider fault, Error "network: ..." or
//     "timeout: ..."; go-mail refusing to authenticate (no AUTH offered, no
//     mechanism it will use): retry, provider fault, Error "smtp: ...".
func smtpClassify(err error) Result {
	var sendErr *gomail.SendError
	if errors.As(err, &sendErr) {
		code := sendErr.ErrorCode()
		text := "smtp: " + sendErr.Error()
		switch {
		case code == 0:
			return smtpNoReply(err)
		case code >= 400 && code < 500 && code != 421 && code != 454 && sendErr.Reason == gomail.ErrSMTPRcptTo:
			return Result{Outcome: workflows.OutcomeRetry, StatusCode: code, Error: text}
		case code >= 400 && code < 500, smtpAuthCodes[code], sendErr.Reason == gomail.ErrSMTPMailFrom:
			return Result{Outcome: workflows.OutcomeRetry, StatusCode: code, ProviderFault: true, Error: text}
		case sendErr.Reason == gomail.ErrSMTPRcptTo && smtpRefusesAddress(code, sendErr.EnhancedStatusCode(), text):
			return Result{Outcome: workflows.OutcomePermanent, StatusCode: code, Error: text, Suppress: SuppressRefused}
		default:
			return Result{Outcome: workflows.OutcomePermanent, StatusCode: code, Error: text}
		}
	}
	// Anything else failed while connecting: the greeting, EHLO, STARTTLS or AUTH.
	var reply *textproto.Error
	if errors.As(err, &reply) {
		return Result{Outcome: workflows.OutcomeRetry, StatusCode: reply.Code, ProviderFault: true, Error: "smtp: " + err.Error()}
	}
	return smtpNoReply(err)
}

// smtpAddressStatus is an RFC 3463 addressing status (5.1.x: bad
// destination mailbox, system or syntax, mailbox moved) as a server's text
// carries it.
var smtpAddressStatus = regexp.MustCompile(`\b5\.1\.\d{1,3}\b`)

// smtpRefusesAddress reports whether a permanent refusal at RCPT TO says
// the address itself is dead, rather than refusing this message (policy,
// spam, a full mailbox): its enhanced status code is 5.1.x, or, from a
// server that does not announce ENHANCEDSTATUSCODES (or gives a generic
// 5.0.0 before its real one), a 550, 551 or 553 whose text says 5.1.x.
func smtpRefusesAddress(code int, enhanced, text string) bool {
	if code < 500 || code > 599 {
		return false
	}
	if strings.HasPrefix(enhanced, "5.1.") {
		return true
	}
	return (code == 550 || code == 551 || code == 553) && smtpAddressStatus.MatchString(text)
}

// smtpReservedHeaders are the header fields the sender writes itself; a
// Message's Headers may not replace them.
var smtpReservedHeaders = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "sender": true, "subject": true, "date": true,
	"message-id": true, "mime-version": true, "content-type": true, "content-transfer-encoding": true,
	strings.ToLower(SMTPHeaderNotificationID): true, strings.ToLower(SMTPHeaderAttempt): true,
}

// smtpCheckHeaders refuses extra header fields that would break the
// message: a name that is not an RFC 5322 field name (printable ASCII but
// the colon) or that the sender writes itself, a value with a CR, LF or
// NUL, which would end the field and start another (header injection).
func smtpCheckHeaders(headers map[string]string) error {
	for name, value := range headers {
		if name == "" {
			return errors.New("an extra header has no name")
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; c < 33 || c > 126 || c == ':' {
				return fmt.Errorf("extra header %q is not a header field name", name)
			}
		}
		if smtpReservedHeaders[strings.ToLower(name)] {
			return fmt.Errorf("extra header %s would replace the one the sender writes", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return fmt.Errorf("extra header %s has a line break in its value", name)
		}
	}
	return nil
}

// smtpNoReply classifies a failure that came with no SMTP reply code.
func smtpNoReply(err error) Result {
	r := Result{Outcome: workflows.OutcomeRetry, ProviderFault: true}
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		r.Error = "timeout: " + err.Error()
	case smtpNetworkError(err):
		r.Error = "network: " + err.Error()
	default:
		// go-mail's own refusals: no AUTH offered, no mechanism it will
		// use, a password it will not send in the clear.
		r.Error = "smtp: " + err.Error()
	}
	return r
}

func smtpNetworkError(err error) bool {
	var (
		netErr     net.Error
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
		alertErr   tls.AlertError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
	)
	var sendErr *gomail.SendError
	return errors.As(err, &netErr) || errors.As(err, &verifyErr) || errors.As(err, &recordErr) ||
		errors.As(err, &alertErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) ||
		errors.As(err, &invalidErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, gomail.ErrNoActiveConnection) ||
		// a SendError hides its cause; with no reply code it lost the connection.
		errors.As(err, &sendErr) ||
		// crypto/tls's plain errors, and go-mail's "does not support STARTTLS".
		strings.Contains(err.Error(), "tls: ") || strings.Contains(err.Error(), "STARTTLS")
}

// smtpDotAtom reports whether s is an RFC 5322 dot-atom-text, what either
// side of a Message-ID may be without quoting.
func smtpDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}
