package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// Webhook is the webhook kind: a Standard Webhooks sender. Every attempt
// of a notification carries the same webhook-id (its id), so a receiver
// can drop duplicates, and its own message id (notification.MessageID, in
// the X-Dispatch-Message-Id header and the payload's messageId), which a
// receipt names; it is signed when the provider has a secret.
type Webhook struct {
	url    string
	http   *http.Client
	signer *standardwebhooks.Webhook // nil: deliveries are not signed
}

// NewWebhook returns the sender POSTing to url through client, signing
// with key (nil: unsigned).
func NewWebhook(url string, client *http.Client, key []byte) (*Webhook, error) {
	w := &Webhook{url: url, http: client}
	if key != nil {
		signer, err := standardwebhooks.NewWebhookRaw(key)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		w.signer = signer
	}
	return w, nil
}

// MessageIDHeader carries a webhook delivery's message id.
const MessageIDHeader = "X-Dispatch-Message-Id"

// excerptLimit bounds the reply kept with an attempt.
const excerptLimit = 512

// Send POSTs m.Payload and classifies the answer: 2xx delivered; 3xx (a
// redirect, never followed), 408, 425, 429 and 5xx retry; 401, 403 and 407
// are our credentials refused, retried elsewhere; any other status
// permanent. Connection errors and timeouts retry.
//
// What it returns names the provider by its URL's scheme and host alone,
// and never the recipient.
func (w *Webhook) Send(ctx context.Context, m Message) (res Result) {
	ctx, span := startCall(ctx, "webhook", w.url)
	defer func() { endCall(span, res) }()
	return ScrubRecipient(w.send(ctx, m), m.Recipient)
}

func (w *Webhook) send(ctx context.Context, m Message) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(m.Payload))
	if err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: "building request: " + HideURL(err.Error(), w.url)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dispatch-engine")
	req.Header.Set("webhook-id", m.NotificationID)
	injectTrace(req)
	// The attempt's own id, which a receipt names: kept with the attempt
	// whatever the answer (a provider may have taken a call that timed out).
	messageID := notification.MessageID(m.NotificationID, m.Attempt)
	req.Header.Set(MessageIDHeader, messageID)
	ts := time.Now()
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	if w.signer != nil {
		sig, err := w.signer.Sign(m.NotificationID, ts, m.Payload)
		if err != nil {
			return Result{Outcome: workflows.OutcomePermanent, Error: "signing: " + err.Error()}
		}
		req.Header.Set("webhook-signature", sig)
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, Error: NetError(err, w.url), ProviderFault: true, MessageID: messageID}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, excerptLimit))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	res := Result{StatusCode: resp.StatusCode, Outcome: Classify(resp.StatusCode), Excerpt: Excerpt(raw), MessageID: messageID}
	if res.Outcome != workflows.OutcomeDelivered {
		res.Error = fmt.Sprintf("provider answered %d", resp.StatusCode)
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			res.Error += " (a redirect; not followed)"
		}
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		res.ProviderFault = ProviderFault(resp.StatusCode)
	}
	return res
}

// Classify maps a provider's HTTP status to an outcome: 2xx delivered; 3xx
// (a redirect, never followed), 408, 425, 429 and 5xx retry; any other
// status permanent.
func Classify(code int) workflows.Outcome {
	switch {
	case code >= 200 && code < 300:
		return workflows.OutcomeDelivered
	case code >= 300 && code < 400, code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return workflows.OutcomeRetry
	default:
		return workflows.OutcomePermanent
	}
}

// ProviderFault reports whether an HTTP status is the provider's fault
// rather than the message's: every retryable status, and 401, 403 and 407
// (our credentials refused: another provider may well take the message).
// The other 4xx say the message is bad and count for nothing.
func ProviderFault(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired:
		return true
	}
	return Classify(code) == workflows.OutcomeRetry
}

// maxRetryAfter bounds what a provider can ask for.
const maxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After header, in seconds or as an HTTP date;
// it returns zero when absent or unreadable, and never more than a day.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// NetError names a failed call to endpoint's cause for the attempt log,
// endpoint cut to its scheme and host (HideURL).
func NetError(err error, endpoint string) string {
	var netErr net.Error
	text := HideURL(err.Error(), endpoint)
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled: " + text
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout: " + text
	default:
		return "network: " + text
	}
}

// Excerpt is the part of a provider's reply kept with the attempt: at most
// excerptLimit bytes, cut on a character boundary, as text a database column
// holds (a binary or UTF-16 reply, NUL bytes included, is stored safely).
func Excerpt(raw []byte) string {
	s := store.SafeText(string(raw))
	if len(s) <= excerptLimit {
		return s
	}
	cut := excerptLimit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// NewHTTPClient is the client that calls providers: each call bounded by
// timeout, up to idleConns kept-alive connections, and redirects never
// followed (Standard Webhooks: a 3xx is a failed attempt, and following one
// would send the body and its signature elsewhere, or turn the POST into a
// GET whose 2xx from another host looks like a delivery).
func NewHTTPClient(timeout time.Duration, idleConns int) *http.Client {
	return &http.Client{
		Timeout:       timeout,
		Transport:     &http.Transport{MaxIdleConnsPerHost: idleConns, IdleConnTimeout: 90 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
