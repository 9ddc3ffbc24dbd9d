package provider

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// TwilioDefaultURL is the Twilio REST API's base.
const TwilioDefaultURL = "https://api.twilio.com"

// TwilioDefaultTimeout bounds a send when TwilioConfig.Timeout is zero.
const TwilioDefaultTimeout = 10 * time.Second

// twilioReplyLimit is far above any Messages API answer (about 1 KiB);
// past it the reply is not Twilio's.
const twilioReplyLimit = 64 << 10

// TwilioConfig is a twilio provider's settings.
type TwilioConfig struct {
	// URL is the API base, default TwilioDefaultURL; the Messages API is
	// {URL}/2010-04-01/Accounts/{AccountSID}/Messages.json.
	URL        string
	AccountSID string
	AuthToken  string
	// From is the sender: a phone number, short code or alphanumeric
	// sender id, or a Messaging Service SID (MG…), which is sent as
	// MessagingServiceSid instead of From.
	From string
	// StatusCallback is the URL Twilio posts delivery status to (the API's
	// /v1/receipts/{provider}); empty: none asked.
	StatusCallback string
	// Timeout bounds one send, default TwilioDefaultTimeout.
	Timeout time.Duration
	// HTTP is the client, optional; default a client with Timeout. Redirects
	// are never followed, whichever client is used.
	HTTP *http.Client
}

// Twilio sends SMS through Twilio's Messages API. It is safe for concurrent
// use.
type Twilio struct {
	cfg      TwilioConfig
	endpoint string
	// fromParam is "From", or "MessagingServiceSid" when cfg.From is one.
	fromParam string
	http      *http.Client
	// secrets are the forms of the token a reply could echo; they are
	// scrubbed from every Error and Excerpt.
	secrets []string
}

var _ Sender = (*Twilio)(nil)

// NewTwilio validates cfg and returns its sender: AccountSID, AuthToken and
// From are required; URL and StatusCallback, when set, must be absolute
// http(s) URLs, URL without credentials, query or fragment.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	if cfg.URL == "" {
		cfg.URL = TwilioDefaultURL
	}
	base, err := url.Parse(cfg.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("twilio: url %q is not an absolute http(s) URL", cfg.URL)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, errors.New("twilio: url must carry no credentials, query or fragment (the account and token go in their own settings)")
	}
	if cfg.AccountSID == "" || !twilioSIDChars(cfg.AccountSID) {
		return nil, errors.New("twilio: accountSid is required and must be letters and digits")
	}
	if cfg.AuthToken == "" {
		return nil, errors.New("twilio: authToken is required")
	}
	if strings.TrimSpace(cfg.From) == "" {
		return nil, errors.New("twilio: from is required")
	}
	if cfg.StatusCallback != "" {
		cb, err := url.Parse(cfg.StatusCallback)
		if err != nil || (cb.Scheme != "http" && cb.Scheme != "https") || cb.Host == "" {
			return nil, fmt.Errorf("twilio: statusCallback %q is not an absolute http(s) URL", cfg.StatusCallback)
		}
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("twilio: timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = TwilioDefaultTimeout
	}

	var client http.Client
	if cfg.HTTP != nil {
		client = *cfg.HTTP
	} else {
		client.Timeout = cfg.Timeout
	}
	// A followed redirect would resend the form, and with it the body of the
	// message, somewhere we did not configure; a 3xx is a failed attempt.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	fromParam := "From"
	if twilioIsMessagingService(cfg.From) {
		fromParam = "MessagingServiceSid"
	}
	basic := base64.StdEncoding.EncodeToString([]byte(cfg.AccountSID + ":" + cfg.AuthToken))
	return &Twilio{
		cfg:       cfg,
		endpoint:  strings.TrimRight(cfg.URL, "/") + "/2010-04-01/Accounts/" + cfg.AccountSID + "/Messages.json",
		fromParam: fromParam,
		http:      &client,
		secrets:   []string{basic, cfg.AuthToken},
	}, nil
}

// twilioAPIError is the JSON of a Twilio error answer.
type twilioAPIError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

// twilioProviderFaults are the error codes that say our account or its
// settings are wrong, not the message: every message would fail the same
// way, so they count against the provider and the next attempt goes to the
// next provider on the route.
var twilioProviderFaults = map[int]string{
	20003: "Authentication failed",
	20005: "Account not active",
	20404: "Resource not found",
	20429: "Too Many Requests",
	21212: "Invalid 'From' Phone Number",
	21606: "The 'From' phone number is not a valid, message-capable Twilio phone number",
	21660: "Mismatch between the 'From' number and the account",
}

// twilioMessageFaults are the error codes that say this message cannot be
// sent as it is (its recipient, its body); retrying it cannot help. Any
// other 4xx is treated the same way; the list decides an answer whose HTTP
// status alone would point at the provider (a 403 for a region).
var twilioMessageFaults = map[int]string{
	21211: "Invalid 'To' Phone Number",
	21408: "Permission to send an SMS has not been enabled for the region",
	21602: "Message body is required",
	21604: "A 'To' phone number is required",
	21608: "The 'To' number is not verified for this trial account",
	21610: "Attempt to send to unsubscribed recipient",
	21612: "The 'To' phone number is not currently reachable via SMS",
	21614: "'To' number is not a valid mobile number",
	21617: "The concatenated message body exceeds the 1600 character limit",
}

// twilioSuppress are the message faults that say the number itself must
// not be sent to again, with the suppression reason each becomes: the
// person answered STOP, or the number is not a (mobile) number. Others
// (a region not enabled, a phone switched off, a long body) are this
// message's or this moment's.
var twilioSuppress = map[int]string{
	21610: SuppressUnsubscribed,
	21211: SuppressInvalid,
	21614: SuppressInvalid,
}

// Send creates one Message. It never follows a redirect and never returns
// an error: the answer is classified as delivered (2xx with a sid),
// retry (the provider's fault: no answer, 3xx, 5xx, 429, refused
// credentials or account settings; a cancelled ctx, which is nobody's
// fault) or permanent (any other 4xx: the message's fault; an unsubscribed
// or invalid number also sets Suppress). What it returns
// names the API by its scheme and host alone, and never the recipient (a
// 21211 answer names the number it refused).
func (t *Twilio) Send(ctx context.Context, m Message) Result {
	return ScrubRecipient(t.send(ctx, m), m.Recipient)
}

func (t *Twilio) send(ctx context.Context, m Message) Result {
	form := url.Values{}
	form.Set("To", m.Recipient)
	form.Set(t.fromParam, t.cfg.From)
	form.Set("Body", m.Content)
	if t.cfg.StatusCallback != "" {
		// The notification's id and the attempt's number ride in the
		// callback URL (which the signature covers), so a callback that
		// comes before the attempt and its SID were recorded still finds
		// the attempt it reports on.
		cb := url.Values{TwilioCallbackParam: {m.NotificationID}}
		if m.Attempt > 0 {
			cb.Set(TwilioCallbackAttemptParam, strconv.Itoa(m.Attempt))
		}
		form.Set("StatusCallback", t.cfg.StatusCallback+"?"+cb.Encode())
	}

	cctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: t.scrub("network: " + err.Error())}
	}
	req.SetBasicAuth(t.cfg.AccountSID, t.cfg.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dispatch-engine")

	resp, err := t.http.Do(req)
	if err != nil {
		return t.noAnswer(ctx, cctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, twilioReplyLimit))
	res := Result{StatusCode: resp.StatusCode, Excerpt: Excerpt([]byte(t.scrub(string(body))))}

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var created struct {
			SID string `json:"sid"`
		}
		if readErr == nil && json.Unmarshal(body, &created) == nil && created.SID != "" {
			res.Outcome = workflows.OutcomeDelivered
			res.MessageID = created.SID
			return res
		}
		// The message may exist, but without its sid no receipt can ever
		// find it, and a reply without one is not the Messages API's
		// (a proxy, a wrong URL): better a possible duplicate than a
		// notification marked delivered that nobody sent.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		if readErr != nil {
			prefix := twilioNetPrefix(ctx, cctx, readErr)
			res.ProviderFault = prefix != "cancelled"
			res.Error = t.scrub(fmt.Sprintf("%s: twilio answered %d but its reply broke off: %v", prefix, resp.StatusCode, readErr))
		} else {
			res.Error = fmt.Sprintf("twilio answered %d without a message sid", resp.StatusCode)
		}
		return res
	}

	var apiErr twilioAPIError
	_ = json.Unmarshal(body, &apiErr)
	res.Error = Excerpt([]byte(t.scrub(twilioErrorText(resp, apiErr))))
	_, providerCode := twilioProviderFaults[apiErr.Code]
	_, messageCode := twilioMessageFaults[apiErr.Code]
	switch status := resp.StatusCode; {
	case status == http.StatusTooManyRequests || apiErr.Code == 20429:
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case status >= 300 && status < 400, status >= 500, providerCode:
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
	case messageCode:
		res.Outcome = workflows.OutcomePermanent
		res.Suppress = twilioSuppress[apiErr.Code]
	case status == http.StatusNotFound:
		// The Messages API is there for every account; a 404 is our URL or
		// account sid, the same for every message.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
	default:
		// As for any HTTP provider: 401, 403 and 407 are our credentials,
		// 408 and 425 the provider's; any other 4xx is the message's.
		res.Outcome, res.ProviderFault = Classify(status), ProviderFault(status)
		if res.ProviderFault {
			res.Outcome = workflows.OutcomeRetry
		}
	}
	return res
}

// noAnswer classifies a call that got no HTTP answer. A cancel is the
// caller's decision, so it is not held against the provider; a timeout,
// whether ours or the caller's deadline, is.
func (t *Twilio) noAnswer(ctx, cctx context.Context, err error) Result {
	prefix := twilioNetPrefix(ctx, cctx, err)
	return Result{
		Outcome:       workflows.OutcomeRetry,
		ProviderFault: prefix != "cancelled",
		Error:         t.scrub(prefix + ": " + err.Error()),
	}
}

func twilioNetPrefix(ctx, cctx context.Context, err error) string {
	var netErr net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return "cancelled"
	case ctx.Err() != nil, errors.Is(cctx.Err(), context.DeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	default:
		return "network"
	}
}

// twilioErrorText is "twilio {code}: {message}" when the answer carries a
// Twilio error, else the HTTP status (and where a redirect pointed); the
// caller scrubs and bounds it.
func twilioErrorText(resp *http.Response, e twilioAPIError) string {
	var s string
	switch {
	case e.Code != 0:
		msg := strings.TrimSpace(e.Message)
		if msg == "" {
			msg = twilioProviderFaults[e.Code] + twilioMessageFaults[e.Code]
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		s = fmt.Sprintf("twilio %d: %s", e.Code, msg)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		s = fmt.Sprintf("twilio answered %d (redirect to %q, not followed)", resp.StatusCode, resp.Header.Get("Location"))
	default:
		s = fmt.Sprintf("twilio answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return s
}

// scrub removes the token, and the endpoint's path (which names the
// account), from text that came from the provider or the network, so
// neither reaches the attempt log.
func (t *Twilio) scrub(s string) string {
	for _, secret := range t.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return HideURL(s, t.endpoint)
}

func twilioSIDChars(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return false
		}
	}
	return true
}

func twilioIsMessagingService(from string) bool {
	return len(from) == 34 && strings.HasPrefix(from, "MG") && twilioSIDChars(from)
}

// TwilioCallbackParam is the StatusCallback URL's query parameter naming
// the notification, TwilioCallbackAttemptParam the one naming the attempt
// (absent from the URLs of workers from before).
const (
	TwilioCallbackParam        = "notification"
	TwilioCallbackAttemptParam = "attempt"
)

// TwilioSignature computes X-Twilio-Signature for a form POST to fullURL:
// the base64 HMAC-SHA1, keyed by the auth token, of the URL exactly as
// Twilio called it followed by each parameter's name and value, sorted by
// name. A name given more than once contributes each distinct value once,
// in sorted order, as Twilio's helper libraries sign it.
func TwilioSignature(authToken, fullURL string, form url.Values) string {
	mac := hmac.New(sha1.New, []byte(authToken))
	_, _ = io.WriteString(mac, fullURL)
	for _, name := range slices.Sorted(maps.Keys(form)) {
		values := slices.Clone(form[name])
		slices.Sort(values)
		for _, v := range slices.Compact(values) {
			_, _ = io.WriteString(mac, name)
			_, _ = io.WriteString(mac, v)
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ValidTwilioSignature reports whether signature is the X-Twilio-Signature
// of a form POST to fullURL, comparing in constant time. Like Twilio's
// helper libraries it also accepts the signature over fullURL with its
// scheme's default port added or removed, since Twilio may sign either
// form of the URL it was given. An empty signature is never valid.
func ValidTwilioSignature(authToken, fullURL string, form url.Values, signature string) bool {
	if signature == "" || authToken == "" {
		return false
	}
	valid := false
	for _, u := range twilioURLForms(fullURL) {
		if subtle.ConstantTimeCompare([]byte(TwilioSignature(authToken, u, form)), []byte(signature)) == 1 {
			valid = true
		}
	}
	return valid
}

// twilioURLForms is fullURL, and it with the default port toggled.
func twilioURLForms(fullURL string) []string {
	forms := []string{fullURL}
	u, err := url.Parse(fullURL)
	if err != nil || u.Host == "" {
		return forms
	}
	defaultPort := map[string]string{"http": "80", "https": "443"}[u.Scheme]
	if defaultPort == "" {
		return forms
	}
	alt := *u
	switch u.Port() {
	case defaultPort:
		alt.Host = u.Hostname()
		if strings.Contains(alt.Host, ":") {
			alt.Host = "[" + alt.Host + "]"
		}
	case "":
		alt.Host = net.JoinHostPort(u.Hostname(), defaultPort)
	default:
		return forms
	}
	return append(forms, alt.String())
}

// TwilioReceipt maps a status callback's form to a receipt. final reports
// whether the status is final: delivered and read (reported as delivered),
// undelivered, failed and canceled (reported as failed). queued, accepted,
// scheduled, sending, sent and any status not listed are not final, and
// their status is empty. reason names Twilio's status and, when given, its
// ErrorCode ("undelivered, ErrorCode 30003"). messageSID is MessageSid, or
// the older SmsSid when only that is present.
func TwilioReceipt(form url.Values) (messageSID, status, reason string, final bool) {
	messageSID = form.Get("MessageSid")
	if messageSID == "" {
		messageSID = form.Get("SmsSid")
	}
	raw := form.Get("MessageStatus")
	if raw == "" {
		raw = form.Get("SmsStatus")
	}
	raw = strings.ToLower(strings.TrimSpace(raw))
	reason = raw
	if code := strings.TrimSpace(form.Get("ErrorCode")); code != "" && code != "0" {
		reason += ", ErrorCode " + code
	}
	switch raw {
	case "delivered", "read":
		return messageSID, ReceiptDelivered, reason, true
	case "undelivered", "failed", "canceled":
		return messageSID, ReceiptFailed, reason, true
	default:
		return messageSID, "", reason, false
	}
}
