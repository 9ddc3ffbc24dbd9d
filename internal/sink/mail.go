package sink

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// MailConfig says what the mail sink demands of a client. The zero value
// takes mail from anyone, without TLS or AUTH.
type MailConfig struct {
	// Username and Password, when Username is set, make AUTH PLAIN required
	// before MAIL FROM.
	Username, Password string
	// TLSConfig, when set, offers STARTTLS; AUTH is then allowed only after it.
	TLSConfig *tls.Config
}

// MailMessage is one message the mail sink accepted.
type MailMessage struct {
	// From and To are the envelope's MAIL FROM and RCPT TO.
	From string
	To   []string
	// Data is the raw message as it arrived.
	Data []byte
	// Header is parsed from Data; nil when Data is not a message.
	Header mail.Header
	// Body is the body after the header, a quoted-printable or base64
	// transfer encoding undone.
	Body       string
	ReceivedAt time.Time
}

// Mail is a real SMTP server (on github.com/emersion/go-smtp) that records
// every message it accepts, and can be told to refuse the next DATA
// commands with a given reply. Messages it refuses are not recorded. It
// refuses at RCPT TO, as a server without that mailbox does, every address
// whose local part starts with "bounce" (BounceLocalPart): the dead address
// tests and make run send to.
type Mail struct {
	cfg MailConfig
	srv *smtp.Server

	mu       sync.Mutex
	messages []MailMessage
	failLeft int
	failCode int
	failText string
	// refused answers RCPT TO of these addresses (lower case) with their reply.
	refused   map[string]*smtp.SMTPError
	arrived   chan string
	listeners []net.Listener
	closed    bool
}

// errAuthRequired answers a transaction begun before AUTH, with the code
// a client recognises as a refusal of its (missing) credentials.
var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

// NewMail returns a mail sink requiring what cfg says; Serve starts it.
func NewMail(cfg MailConfig) *Mail {
	m := &Mail{cfg: cfg}
	srv := smtp.NewServer(smtp.BackendFunc(m.newSession))
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 100
	srv.TLSConfig = cfg.TLSConfig
	srv.AllowInsecureAuth = cfg.TLSConfig == nil
	// A client hanging up mid-session is routine for a sink; go-smtp would
	// log each one to stderr.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	m.srv = srv
	return m
}

// Serve accepts SMTP connections on l until Close; it returns nil after
// Close (also when Close came first), else the listener's error.
func (m *Mail) Serve(l net.Listener) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = l.Close()
		return nil
	}
	// Kept here too: a Close between this and go-smtp registering l must
	// still end the Accept below.
	m.listeners = append(m.listeners, l)
	m.mu.Unlock()
	err := m.srv.Serve(l)
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

// Close stops every Serve and drops open connections. Calling it again does nothing.
func (m *Mail) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	listeners := m.listeners
	m.mu.Unlock()
	err := m.srv.Close()
	for _, l := range listeners {
		_ = l.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Messages returns every message accepted since the last Reset, oldest
// first. The messages are shared with the sink; do not modify them.
func (m *Mail) Messages() []MailMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]MailMessage(nil), m.messages...)
}

// ByMessageID returns every accepted message whose Message-ID header is id
// (angle brackets included), oldest first.
func (m *Mail) ByMessageID(id string) []MailMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []MailMessage
	for _, msg := range m.messages {
		if msg.Header != nil && strings.TrimSpace(msg.Header.Get("Message-ID")) == id {
			out = append(out, msg)
		}
	}
	return out
}

// Reset forgets every message, any pending FailNext and every refused
// recipient.
func (m *Mail) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.messages = nil
	m.failLeft = 0
	m.refused = nil
}

// FailNext answers the next n DATA commands (after the message was sent)
// with code (e.g. 451 or 550) and text, instead of accepting them.
func (m *Mail) FailNext(n int, code int, text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failLeft, m.failCode, m.failText = n, code, text
}

// RefuseRecipient answers RCPT TO of addr (any case) with code and text
// from now on, as a server refusing a mailbox does: the message never gets
// to DATA. Reset forgets it.
func (m *Mail) RefuseRecipient(addr string, code int, text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		m.refused = map[string]*smtp.SMTPError{}
	}
	m.refused[strings.ToLower(addr)] = &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: text}
}

// BounceLocalPart starts the local part of every address the mail sink
// refuses at RCPT TO with "550 5.1.1 <addr>: user unknown": a mailbox that
// does not exist, which a sender must stop sending to.
const BounceLocalPart = "bounce"

// refusal is the reply RCPT TO of addr gets, nil to take it: the one
// RefuseRecipient set, else a 5.1.1 for a bounce address.
func (m *Mail) refusal(addr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err, ok := m.refused[strings.ToLower(addr)]; ok {
		return err
	}
	if isBounceAddress(addr) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + addr + ">: user unknown"}
	}
	return nil
}

// isBounceAddress reports whether addr's local part starts with
// BounceLocalPart, in any case.
func isBounceAddress(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	return strings.HasPrefix(strings.ToLower(addr[:at]), BounceLocalPart)
}

// Arrivals returns a channel that receives the Message-ID header of every
// message accepted from now on. Sends never block; an arrival is dropped
// when the channel is full.
func (m *Mail) Arrivals(buffer int) <-chan string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.arrived = make(chan string, buffer)
	return m.arrived
}

// mailJSON is a message as the control endpoint shows it.
type mailJSON struct {
	From       string    `json:"from"`
	To         []string  `json:"to"`
	Subject    string    `json:"subject"`
	MessageID  string    `json:"messageId"`
	ReceivedAt time.Time `json:"receivedAt"`
	Body       string    `json:"body"`
	// Headers are every header field, by canonical name (List-Unsubscribe,
	// Message-Id), each with its values in order, unfolded.
	Headers map[string][]string `json:"headers"`
}

// Handler serves the mail sink's control endpoint: GET /_sink/mail lists
// the accepted messages as JSON (from, to, subject, messageId, receivedAt,
// body, headers), DELETE /_sink/mail forgets them.
func (m *Mail) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/_sink/mail" {
			http.Error(w, `{"error":"unknown control endpoint"}`, http.StatusNotFound)
			return
		}
		switch r.Method {
		case http.MethodGet:
			msgs := m.Messages()
			out := make([]mailJSON, 0, len(msgs))
			var dec mime.WordDecoder
			for _, msg := range msgs {
				j := mailJSON{From: msg.From, To: msg.To, ReceivedAt: msg.ReceivedAt, Body: msg.Body, Headers: map[string][]string{}}
				if msg.Header != nil {
					j.Headers = msg.Header
					j.MessageID = msg.Header.Get("Message-ID")
					j.Subject = msg.Header.Get("Subject")
					if s, err := dec.DecodeHeader(j.Subject); err == nil {
						j.Subject = s
					}
				}
				out = append(out, j)
			}
			_ = json.NewEncoder(w).Encode(out)
		case http.MethodDelete:
			m.Reset()
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "GET, DELETE")
			http.Error(w, `{"error":"GET or DELETE"}`, http.StatusMethodNotAllowed)
		}
	})
}

func (m *Mail) newSession(*smtp.Conn) (smtp.Session, error) {
	s := &mailSession{m: m}
	if m.cfg.Username != "" {
		return &mailAuthSession{mailSession: s}, nil
	}
	s.authed = true
	return s, nil
}

// takeFailure consumes one FailNext, if any is left.
func (m *Mail) takeFailure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failLeft <= 0 {
		return nil
	}
	m.failLeft--
	return &smtp.SMTPError{Code: m.failCode, EnhancedCode: smtp.EnhancedCodeNotSet, Message: m.failText}
}

func (m *Mail) accept(msg MailMessage) {
	id := ""
	if msg.Header != nil {
		id = strings.TrimSpace(msg.Header.Get("Message-ID"))
	}
	m.mu.Lock()
	m.messages = append(m.messages, msg)
	ch := m.arrived
	m.mu.Unlock()
	if ch != nil {
		select {
		case ch <- id:
		default:
		}
	}
}

// mailSession is one SMTP connection's transaction.
type mailSession struct {
	m      *Mail
	authed bool
	from   string
	to     []string
}

func (s *mailSession) Reset() {
	s.from, s.to = "", nil
}

func (s *mailSession) Logout() error { return nil }

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return errAuthRequired
	}
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.authed {
		return errAuthRequired
	}
	if err := s.m.refusal(to); err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	if !s.authed {
		return errAuthRequired
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.m.takeFailure(); err != nil {
		return err
	}
	msg := MailMessage{From: s.from, To: append([]string(nil), s.to...), Data: data, ReceivedAt: time.Now()}
	if parsed, err := mail.ReadMessage(bytes.NewReader(data)); err == nil {
		msg.Header = parsed.Header
		msg.Body = decodeBody(parsed.Header.Get("Content-Transfer-Encoding"), parsed.Body)
	}
	s.m.accept(msg)
	return nil
}

// mailAuthSession is a session that must authenticate with AUTH PLAIN.
type mailAuthSession struct {
	*mailSession
}

func (s *mailAuthSession) AuthMechanisms() []string {
	return []string{sasl.Plain}
}

func (s *mailAuthSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	cfg := s.m.cfg
	return sasl.NewPlainServer(func(identity, username, password string) error {
		userOK := subtle.ConstantTimeCompare([]byte(username), []byte(cfg.Username)) == 1
		passOK := subtle.ConstantTimeCompare([]byte(password), []byte(cfg.Password)) == 1
		if !userOK || !passOK || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

// decodeBody undoes a single-part body's transfer encoding; a body it
// cannot decode is returned as it arrived.
func decodeBody(encoding string, body io.Reader) string {
	raw, err := io.ReadAll(body)
	if err != nil {
		return ""
	}
	var decoded []byte
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		decoded, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
	case "base64":
		decoded, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, newlineStripper{bytes.NewReader(raw)}))
	default:
		return string(raw)
	}
	if err != nil {
		return string(raw)
	}
	return string(decoded)
}

// newlineStripper drops CR and LF, which base64 bodies wrap at 76 columns.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		out := 0
		for _, b := range p[:k] {
			if b != '\r' && b != '\n' {
				p[out] = b
				out++
			}
		}
		if out > 0 || err != nil {
			return out, err
		}
	}
}
