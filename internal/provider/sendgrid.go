package provider

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	netmail "net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// SendGridDefaultURL is the v3 API's base.
const SendGridDefaultURL = "https://api.sendgrid.com"

// SendGridDefaultTimeout bounds a send when SendGridConfig.Timeout is zero.
const SendGridDefaultTimeout = 10 * time.Second

// sendgridReplyLimit is far above any Mail Send answer (an error list of a
// few hundred bytes); past it the reply is not SendGrid's.
const sendgridReplyLimit = 64 << 10

// The custom_args every message carries: SendGrid copies them into each
// event of the Event Webhook, which is how an event finds its notification
// and the attempt it reports on. Neither holds anything of the recipient
// (SendGrid keeps custom args as data that is not personal). The attempt
// is not "attempt": SendGrid's deferred events carry their own field of
// that name (its count of tries), which would hide ours.
const (
	SendGridArgNotification = "dispatch_id"
	SendGridArgAttempt      = "dispatch_attempt"
)

// SendGridConfig is a sendgrid provider's settings.
type SendGridConfig struct {
	// BaseURL is the API base, default SendGridDefaultURL; mail goes to
	// {BaseURL}/v3/mail/send.
	BaseURL string
	// APIKey is sent as a bearer token (Mail Send permission).
	APIKey string
	// From is the sender, e.g. "Dispatch <noreply@example.com>", an address
	// of a verified sender or domain.
	From string
	// MessageIDDomain is the right side of Message-ID; default: the domain of From.
	MessageIDDomain string
	// Timeout bounds one send, default SendGridDefaultTimeout.
	Timeout time.Duration
	// HTTP is the client, optional; default a client with Timeout. Redirects
	// are never followed, whichever client is used.
	HTTP *http.Client
}

// SendGrid sends email through SendGrid's v3 Mail Send API. It is safe for
// concurrent use.
type SendGrid struct {
	cfg      SendGridConfig
	endpoint string
	from     sendgridAddress
	domain   string
	auth     string
	http     *http.Client
}

var _ Sender = (*SendGrid)(nil)

// NewSendGrid validates cfg and returns its sender: APIKey and From (an
// address) are required; BaseURL, when set, must be an absolute http(s) URL
// without credentials, query or fragment.
func NewSendGrid(cfg SendGridConfig) (*SendGrid, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = SendGridDefaultURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("sendgrid: baseURL %q is not an absolute http(s) URL", cfg.BaseURL)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, errors.New("sendgrid: baseURL must carry no credentials, query or fragment (the key goes in apiKey)")
	}
	if strings.TrimSpace(cfg.APIKey) == "" || strings.ContainsAny(cfg.APIKey, " \t\r\n") {
		return nil, errors.New("sendgrid: apiKey is required and must be one token")
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("sendgrid: from %q is not an address: %w", cfg.From, err)
	}
	domain := cfg.MessageIDDomain
	if domain == "" {
		domain = from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	}
	if !smtpDotAtom(domain) {
		return nil, fmt.Errorf("sendgrid: %q cannot be the domain of a Message-ID", domain)
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("sendgrid: timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = SendGridDefaultTimeout
	}
	var client http.Client
	if cfg.HTTP != nil {
		client = *cfg.HTTP
	} else {
		client.Timeout = cfg.Timeout
	}
	// A followed redirect would carry the message (and, with some clients,
	// the key) somewhere we did not configure; a 3xx is a failed attempt.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &SendGrid{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.BaseURL, "/") + "/v3/mail/send",
		from:     sendgridAddress{Email: from.Address, Name: from.Name},
		domain:   domain,
		auth:     "Bearer " + cfg.APIKey,
		http:     &client,
	}, nil
}

// Base is the API base the sender calls (for the provider's Target).
func (s *SendGrid) Base() string { return s.cfg.BaseURL }

// sendgridMail is the Mail Send request body (the fields we use).
type sendgridMail struct {
	Personalizations []sendgridPersonalization `json:"personalizations"`
	From             sendgridAddress           `json:"from"`
	Subject          string                    `json:"subject"`
	Content          []sendgridContent         `json:"content"`
	Headers          map[string]string         `json:"headers,omitempty"`
	CustomArgs       map[string]string         `json:"custom_args"`
}

type sendgridPersonalization struct {
	To []sendgridAddress `json:"to"`
}

type sendgridAddress struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

type sendgridContent struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// sendgridParts is the message's content as Mail Send takes it. SendGrid
// wants text/plain first and text/html after it; an HTML part (from a
// template) is appended here when messages carry one, and SendGrid then
// sends multipart/alternative.
func sendgridParts(m Message) []sendgridContent {
	parts := []sendgridContent{{Type: "text/plain", Value: m.Content}}
	if m.HTML != "" {
		parts = append(parts, sendgridContent{Type: "text/html", Value: m.HTML})
	}
	return parts
}

// sendgridReservedHeaders are the header fields SendGrid refuses in
// headers, and those the sender writes itself.
var sendgridReservedHeaders = map[string]bool{
	"x-sg-id": true, "x-sg-eid": true, "received": true, "dkim-signature": true, "content-type": true,
	"content-transfer-encoding": true, "to": true, "from": true, "subject": true, "reply-to": true, "cc": true, "bcc": true,
	"message-id": true, strings.ToLower(SMTPHeaderNotificationID): true, strings.ToLower(SMTPHeaderAttempt): true,
}

// body is the Mail Send JSON of m: its Message-ID is the smtp sender's (the
// notification id, the same on every attempt, so a mailbox can tell a
// retry that arrived twice), and its custom_args name the notification and
// the attempt for the Event Webhook.
func (s *SendGrid) body(m Message) ([]byte, error) {
	if !smtpDotAtom(m.NotificationID) {
		return nil, fmt.Errorf("notification id %q cannot be the left side of a Message-ID", m.NotificationID)
	}
	if _, err := netmail.ParseAddress(m.Recipient); err != nil {
		return nil, fmt.Errorf("invalid recipient: %w", err)
	}
	headers := map[string]string{
		"Message-ID":             MessageID(m.NotificationID, s.domain),
		SMTPHeaderNotificationID: m.NotificationID,
		SMTPHeaderAttempt:        strconv.Itoa(m.Attempt),
	}
	for name, value := range m.Headers {
		if sendgridReservedHeaders[strings.ToLower(name)] {
			return nil, fmt.Errorf("extra header %s would replace one the sender or SendGrid writes", name)
		}
		headers[name] = value
	}
	if err := smtpCheckHeaders(m.Headers); err != nil {
		return nil, err
	}
	return json.Marshal(sendgridMail{
		Personalizations: []sendgridPersonalization{{To: []sendgridAddress{{Email: m.Recipient}}}},
		From:             s.from,
		Subject:          m.Subject,
		Content:          sendgridParts(m),
		Headers:          headers,
		CustomArgs:       map[string]string{SendGridArgNotification: m.NotificationID, SendGridArgAttempt: strconv.Itoa(m.Attempt)},
	})
}

// sendgridErrors is the JSON of a Mail Send error answer.
type sendgridErrors struct {
	Errors []struct {
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"errors"`
}

// sendgridRecipientField is the field a 400 names when it refuses the
// recipient's address.
var sendgridRecipientField = regexp.MustCompile(`^personalizations\.\d+\.to(\.\d+\.email)?$`)

// invalidRecipient reports whether a 400 refuses the recipient's address
// itself (an address SendGrid cannot send to, whatever the message).
func (e sendgridErrors) invalidRecipient() bool {
	for _, x := range e.Errors {
		msg := strings.ToLower(x.Message)
		if sendgridRecipientField.MatchString(x.Field) &&
			(strings.Contains(msg, "valid") || strings.Contains(msg, "address")) {
			return true
		}
	}
	return false
}

func (e sendgridErrors) text(status int) string {
	var parts []string
	for _, x := range e.Errors {
		p := strings.TrimSpace(x.Message)
		if x.Field != "" {
			p = x.Field + ": " + p
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("sendgrid answered %d %s", status, http.StatusText(status))
	}
	return fmt.Sprintf("sendgrid answered %d: %s", status, strings.Join(parts, "; "))
}

// Send posts one message to Mail Send. It never follows a redirect and
// never returns an error: 2xx (202) is delivered, MessageID the answer's
// X-Message-Id; a 400 refusing the recipient's address is permanent and
// Suppress "invalid"; 401 and 403 (our key) are retried as the provider's
// fault; 429 and 5xx are retried as the provider's fault, honouring
// Retry-After (or X-RateLimit-Reset); any other 4xx is permanent. What it
// returns never holds the key or the recipient.
func (s *SendGrid) Send(ctx context.Context, m Message) Result {
	return ScrubRecipient(s.send(ctx, m), m.Recipient)
}

func (s *SendGrid) send(ctx context.Context, m Message) Result {
	body, err := s.body(m)
	if err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: s.scrub("sendgrid: " + err.Error())}
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: s.scrub("network: " + err.Error())}
	}
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dispatch-engine")

	resp, err := s.http.Do(req)
	if err != nil {
		prefix := twilioNetPrefix(ctx, cctx, err)
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: prefix != "cancelled", Error: s.scrub(prefix + ": " + err.Error())}
	}
	defer func() { _ = resp.Body.Close() }()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, sendgridReplyLimit))
	res := Result{StatusCode: resp.StatusCode, Excerpt: Excerpt([]byte(s.scrub(string(reply))))}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// The events find the message by its custom_args, so an answer
		// without X-Message-Id is still a message SendGrid took.
		res.Outcome, res.MessageID = workflows.OutcomeDelivered, resp.Header.Get("X-Message-Id")
		if res.MessageID == "" {
			res.MessageID = MessageID(m.NotificationID, s.domain)
		}
		return res
	}
	var apiErr sendgridErrors
	_ = json.Unmarshal(reply, &apiErr)
	res.Error = Excerpt([]byte(s.scrub(apiErr.text(resp.StatusCode))))
	switch status := resp.StatusCode; {
	case status == http.StatusTooManyRequests:
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if res.RetryAfter == 0 {
			res.RetryAfter = sendgridRateLimitReset(resp.Header.Get("X-RateLimit-Reset"), time.Now())
		}
	case status == http.StatusBadRequest && apiErr.invalidRecipient():
		res.Outcome, res.Suppress = workflows.OutcomePermanent, SuppressInvalid
	case status == http.StatusNotFound:
		// Mail Send is there for every account: a 404 is our base URL, the
		// same for every message.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
	default:
		// 401 and 403 are our key (revoked, without Mail Send permission,
		// an unverified sender), 3xx and 5xx the provider's; any other 4xx
		// is the message's.
		res.Outcome, res.ProviderFault = Classify(status), ProviderFault(status)
		if res.ProviderFault {
			res.Outcome = workflows.OutcomeRetry
			res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return res
}

// sendgridRateLimitReset is the wait until X-RateLimit-Reset (a Unix time
// in seconds), bounded as Retry-After is; zero when absent or past.
func sendgridRateLimitReset(v string, now time.Time) time.Duration {
	secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || secs <= now.Unix() {
		return 0
	}
	return min(time.Until(time.Unix(secs, 0)), maxRetryAfter)
}

// scrub removes the key from text that came from the provider or the
// network, and the endpoint's path, so neither reaches the attempt log.
func (s *SendGrid) scrub(text string) string {
	text = strings.ReplaceAll(text, s.cfg.APIKey, "[redacted]")
	return HideURL(text, s.endpoint)
}

// The Event Webhook's signature headers.
const (
	SendGridSignatureHeader = "X-Twilio-Email-Event-Webhook-Signature"
	SendGridTimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// SendGridEventTolerance is how far an event batch's timestamp may be from
// now: an older (or later) batch is refused as a replay.
const SendGridEventTolerance = 5 * time.Minute

// ParseSendGridPublicKey reads the Event Webhook's verification key: the
// base64 DER (SubjectPublicKeyInfo) SendGrid shows, or the same as PEM. It
// must be an ECDSA P-256 key.
func ParseSendGridPublicKey(s string) (*ecdsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, errors.New("is neither PEM nor base64 DER")
		}
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("is not a public key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok || ec.Curve.Params().Name != "P-256" {
		return nil, errors.New("is not an ECDSA P-256 key")
	}
	return ec, nil
}

// Why an event batch's signature does not verify.
var (
	ErrSendGridUnsigned  = errors.New("the batch carries no signature or timestamp")
	ErrSendGridStale     = errors.New("the batch's timestamp is not within 5 minutes of now")
	ErrSendGridSignature = errors.New("the signature does not verify under the provider's eventPublicKey")
)

// SendGridSignature signs an event batch as SendGrid does: the base64 DER
// ECDSA signature of SHA-256(timestamp + body). The fake SendGrid uses it.
func SendGridSignature(key *ecdsa.PrivateKey, timestamp string, body []byte) (string, error) {
	sig, err := ecdsa.SignASN1(nil, key, sendgridDigest(timestamp, body))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// VerifySendGridSignature checks an event batch's signature and timestamp
// (Unix seconds, within SendGridEventTolerance of now). body must be the
// request's raw bytes: the signature covers them exactly.
func VerifySendGridSignature(key *ecdsa.PublicKey, body []byte, signature, timestamp string, now time.Time) error {
	if key == nil || signature == "" || timestamp == "" {
		return ErrSendGridUnsigned
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil || !ecdsa.VerifyASN1(key, sendgridDigest(timestamp, body), sig) {
		return ErrSendGridSignature
	}
	// Checked after the signature (which covers it): a stale batch is a
	// replay of one SendGrid signed.
	secs, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrSendGridStale
	}
	if d := now.Sub(time.Unix(secs, 0)); d > SendGridEventTolerance || d < -SendGridEventTolerance {
		return ErrSendGridStale
	}
	return nil
}

func sendgridDigest(timestamp string, body []byte) []byte {
	h := sha256.New()
	_, _ = io.WriteString(h, timestamp)
	_, _ = h.Write(body)
	return h.Sum(nil)
}

// SendGridEvent is one event of an Event Webhook batch (the fields we
// read; custom_args arrive as top-level fields).
type SendGridEvent struct {
	Event     string `json:"event"`
	Email     string `json:"email"`
	Timestamp int64  `json:"timestamp"`
	// Type tells a bounce's kind: "bounce" (hard: the address is dead) or
	// "blocked" (soft: this message, this time).
	Type      string `json:"type"`
	Reason    string `json:"reason"`
	Status    string `json:"status"`
	MessageID string `json:"sg_message_id"`
	EventID   string `json:"sg_event_id"`
	// Notification and Attempt are our custom_args.
	Notification string `json:"dispatch_id"`
	Attempt      string `json:"dispatch_attempt"`
}

// SendGridAction is what an event means for its notification and its
// address.
type SendGridAction struct {
	// Receipt is the receipt the event is (ReceiptDelivered or
	// ReceiptFailed), "" when it is none.
	Receipt string
	// Reason goes with a failed receipt.
	Reason string
	// Suppress is the suppression reason for the address, "" for none.
	Suppress string
	// OptOut: the person opts out of the notification's category.
	OptOut bool
}

// Action maps the event: delivered is a delivered receipt; a hard bounce
// and a drop are a failed receipt and suppress the address ("bounced");
// a spam report says the person got it (delivered), suppresses the address
// ("complained") and opts them out of the category. A soft bounce
// (blocked) and deferred change nothing: SendGrid tries again. known is
// false for every other event (processed, open, click, ...), which is
// ignored.
func (e SendGridEvent) Action() (a SendGridAction, known bool) {
	switch e.Event {
	case "delivered":
		return SendGridAction{Receipt: ReceiptDelivered}, true
	case "bounce":
		if e.Type == "blocked" {
			return SendGridAction{}, true
		}
		return SendGridAction{Receipt: ReceiptFailed, Reason: e.reason(), Suppress: SuppressBounced}, true
	case "dropped":
		return SendGridAction{Receipt: ReceiptFailed, Reason: e.reason(), Suppress: SuppressBounced}, true
	case "deferred":
		return SendGridAction{}, true
	case "spamreport":
		return SendGridAction{Receipt: ReceiptDelivered, Suppress: SuppressComplained, OptOut: true}, true
	}
	return SendGridAction{}, false
}

// reason is "bounce: 5.1.1 ..." without the address (a server's text often
// repeats it), bounded as an excerpt.
func (e SendGridEvent) reason() string {
	r := e.Event
	if detail := strings.TrimSpace(strings.Join(strings.Fields(e.Status+" "+e.Reason), " ")); detail != "" {
		r += ": " + detail
	}
	return Excerpt([]byte(ScrubRecipient(Result{Error: r}, e.Email).Error))
}

// NotificationAttempt is the notification and the attempt the event names
// in its custom_args; attempt is zero when it names none.
func (e SendGridEvent) NotificationAttempt() (id string, attempt int) {
	attempt, err := strconv.Atoi(e.Attempt)
	if err != nil || attempt < 1 {
		attempt = 0
	}
	return e.Notification, attempt
}
