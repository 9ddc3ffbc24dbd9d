package provider

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// APNs environments (APNsConfig.Environment) and their API bases.
const (
	APNsProduction    = "production"
	APNsSandbox       = "sandbox"
	APNsProductionURL = "https://api.push.apple.com"
	APNsSandboxURL    = "https://api.sandbox.push.apple.com"
)

// APNsTokenRenewAfter is the age at which the provider token (the JWT) is
// minted anew. Apple refuses a token older than an hour
// (ExpiredProviderToken) and one renewed more often than every 20 minutes
// (TooManyProviderTokenUpdates); 40 minutes is well inside both.
const APNsTokenRenewAfter = 40 * time.Minute

// APNsDefaultTimeout bounds a send when APNsConfig.Timeout is zero.
const APNsDefaultTimeout = 10 * time.Second

// apnsReplyLimit is far above any APNs answer (a reason and a timestamp).
const apnsReplyLimit = 16 << 10

// APNsConfig is an apns provider's settings.
type APNsConfig struct {
	// BaseURL overrides the API base that Environment picks (a fake's, in
	// tests). An http:// base is spoken to as HTTP/2 without TLS (prior
	// knowledge).
	BaseURL string
	// Environment is APNsProduction (default) or APNsSandbox.
	Environment string
	// TeamID is the JWT's issuer, KeyID its kid: the team and the key Apple
	// issued the .p8 key under.
	TeamID, KeyID string
	// Key is the .p8 key (PEM, PKCS#8, EC P-256); when nil it is read from
	// KeyFile.
	Key     []byte
	KeyFile string
	// Topic is the app's bundle id (apns-topic).
	Topic string
	// RootCAs, when set, is trusted instead of the system's roots; CAFile,
	// when set, is a PEM bundle trusted beside them. Both are for tests and
	// local runs against a fake APNs.
	RootCAs *x509.CertPool
	CAFile  string
	// Timeout bounds one send (the resend after a renewed token included),
	// default APNsDefaultTimeout.
	Timeout time.Duration
	// Now is the clock the token's age is read on, default time.Now.
	Now func() time.Time
}

// APNs sends push notifications through Apple's HTTP/2 provider API with
// token authentication. The token is minted once and reused by every send
// until it is APNsTokenRenewAfter old, or APNs says it expired. It is safe
// for concurrent use.
type APNs struct {
	cfg    APNsConfig
	base   string
	key    *ecdsa.PrivateKey
	client *http.Client

	mu     sync.Mutex
	token  string
	issued time.Time
	minted atomic.Int64
}

var _ Sender = (*APNs)(nil)

// NewAPNs validates cfg, reads the key and returns the sender. Its errors
// name the setting at fault, never the key's content.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	switch cfg.Environment {
	case "", APNsProduction:
		cfg.Environment = APNsProduction
	case APNsSandbox:
	default:
		return nil, fmt.Errorf("apns: environment %q is not %s or %s", cfg.Environment, APNsProduction, APNsSandbox)
	}
	base := cfg.BaseURL
	if base == "" {
		base = map[string]string{APNsProduction: APNsProductionURL, APNsSandbox: APNsSandboxURL}[cfg.Environment]
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("apns: baseURL %q is not an absolute http(s) URL", base)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("apns: baseURL must carry no credentials, query or fragment")
	}
	if cfg.TeamID == "" || cfg.KeyID == "" || cfg.Topic == "" {
		return nil, errors.New("apns: teamId, keyId and topic are required")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("apns: timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = APNsDefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pemKey := cfg.Key
	if pemKey == nil {
		if cfg.KeyFile == "" {
			return nil, errors.New("apns: keyFile is required")
		}
		if pemKey, err = os.ReadFile(cfg.KeyFile); err != nil {
			return nil, fmt.Errorf("apns: keyFile: %w", err)
		}
	}
	key, err := ParseAPNsKey(pemKey)
	if err != nil {
		return nil, fmt.Errorf("apns: keyFile: %w", err)
	}
	roots := cfg.RootCAs
	if cfg.CAFile != "" {
		pemCA, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("apns: caFile: %w", err)
		}
		if roots == nil {
			if roots, err = x509.SystemCertPool(); err != nil {
				roots = x509.NewCertPool()
			}
		}
		if !roots.AppendCertsFromPEM(pemCA) {
			return nil, errors.New("apns: caFile: no PEM certificate in it")
		}
	}
	// HTTP/2 only, as APNs speaks nothing else: net/http's own HTTP/2
	// (x/net's http2.Transport is deprecated for it).
	var protocols http.Protocols
	if u.Scheme == "http" {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP2(true)
	}
	transport := &http.Transport{
		Protocols:       &protocols,
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		// Apple asks providers to keep their connections open and not to
		// reconnect for every push; pings find a connection that died.
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second},
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &APNs{
		cfg:  cfg,
		base: strings.TrimRight(base, "/"),
		key:  key,
		client: &http.Client{
			Transport: transport,
			// A redirect would carry the token elsewhere; a 3xx is a
			// failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// ParseAPNsKey reads a .p8 key: a PEM "PRIVATE KEY" block holding a PKCS#8
// EC P-256 key. Its errors never quote the key.
func ParseAPNsKey(pemKey []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return nil, errors.New("not a PEM .p8 key")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS#8 private key")
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an EC P-256 key (APNs signs with ES256)")
	}
	return key, nil
}

// Tokens is how many provider tokens were minted so far.
func (a *APNs) Tokens() int64 { return a.minted.Load() }

// bearer returns the cached token, minting one when there is none or it
// is APNsTokenRenewAfter old, or when refused is the cached one (APNs
// refused it). A token another send already renewed is not renewed again,
// so a burst of refusals mints once.
func (a *APNs) bearer(refused string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	if a.token != "" && a.token != refused && now.Sub(a.issued) < APNsTokenRenewAfter && !now.Before(a.issued) {
		return a.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": a.cfg.TeamID, "iat": now.Unix()})
	t.Header["kid"] = a.cfg.KeyID
	signed, err := t.SignedString(a.key)
	if err != nil {
		return "", fmt.Errorf("signing the provider token: %w", err)
	}
	a.token, a.issued = signed, now
	a.minted.Add(1)
	return signed, nil
}

// apnsAPS is the aps dictionary of a push: the alert, and the thread the
// device groups it in.
type apnsAPS struct {
	Alert struct {
		Title string `json:"title,omitempty"`
		Body  string `json:"body"`
	} `json:"alert"`
	ThreadID string `json:"thread-id,omitempty"`
}

// apnsCollapseIDLimit is the longest apns-collapse-id APNs takes (bytes).
const apnsCollapseIDLimit = 64

// apnsPayload is the body of a push: aps, our notification id as
// dispatchId, which the app can dedupe on (it is also the apns-id), and
// the metadata's data pairs beside them (aps and dispatchId are ours).
func apnsPayload(m Message, x PushExtras) ([]byte, error) {
	var aps apnsAPS
	aps.Alert.Title, aps.Alert.Body, aps.ThreadID = m.Subject, m.Content, x.ThreadID
	body := make(map[string]any, len(x.Data)+2)
	for k, v := range x.Data {
		body[k] = v
	}
	body["aps"], body["dispatchId"] = aps, m.NotificationID
	return json.Marshal(body)
}

// APNsID is the apns-id of a notification: its id when that is a UUID (as
// every notification's is), else a UUID derived from it. Every attempt
// carries the same one.
func APNsID(notificationID string) string {
	if id, err := uuid.Parse(notificationID); err == nil {
		return id.String()
	}
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("dispatch:"+notificationID)).String()
}

// Send posts one alert push to {base}/3/device/{token} and classifies the
// answer: 200 delivered (MessageID is the apns-id APNs answered); 410
// Unregistered and 400 BadDeviceToken permanent and the token suppressed;
// any other 400 (and 413) permanent; 429 and 5xx retried after
// Retry-After; 403 ExpiredProviderToken or InvalidProviderToken renew the
// token and resend once, and when that is refused too, as for any other
// 403 or a 404/405 (our settings), the provider is at fault. What it
// returns names APNs by its scheme and host alone, never the device token,
// the provider token or the key.
func (a *APNs) Send(ctx context.Context, m Message) (res Result) {
	ctx, span := startCall(ctx, KindAPNs, a.base)
	defer func() { endCall(span, res) }()
	return ScrubRecipient(a.send(ctx, m), m.Recipient)
}

func (a *APNs) send(ctx context.Context, m Message) Result {
	// collapseKey, threadId and data come from the notification's
	// metadata, as for fcm (pushExtras).
	x := pushExtras(m.Payload)
	body, err := apnsPayload(m, x)
	if err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: "encoding the payload: " + err.Error()}
	}
	collapseID := x.CollapseKey
	if len(collapseID) > apnsCollapseIDLimit {
		// APNs would refuse the whole push (BadCollapseId); it goes
		// without, as a push without a collapse key does.
		collapseID = ""
	}
	endpoint := a.base + "/3/device/" + url.PathEscape(m.Recipient)
	cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()

	token, err := a.bearer("")
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: err.Error()}
	}
	res, reason := a.post(cctx, endpoint, token, m.NotificationID, collapseID, body)
	if reason == "ExpiredProviderToken" || reason == "InvalidProviderToken" {
		refused := token
		if token, err = a.bearer(refused); err != nil {
			return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: err.Error()}
		}
		res, _ = a.post(cctx, endpoint, token, m.NotificationID, collapseID, body)
		res.Error = a.scrub(res.Error, endpoint, refused, token)
		res.Excerpt = a.scrub(res.Excerpt, endpoint, refused, token)
		return res
	}
	res.Error = a.scrub(res.Error, endpoint, token)
	res.Excerpt = a.scrub(res.Excerpt, endpoint, token)
	return res
}

// post makes one request and classifies its answer; reason is APNs's
// reason for a 403, so that Send can renew the token.
func (a *APNs) post(ctx context.Context, endpoint, token, notificationID, collapseID string, body []byte) (Result, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: "building request: " + HideURL(err.Error(), endpoint)}, ""
	}
	req.Header.Set("authorization", "bearer "+token)
	req.Header.Set("apns-topic", a.cfg.Topic)
	req.Header.Set("apns-push-type", "alert")
	req.Header.Set("apns-id", APNsID(notificationID))
	if collapseID != "" {
		req.Header.Set("apns-collapse-id", collapseID)
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("user-agent", "dispatch-engine")
	injectTrace(req)

	resp, err := a.client.Do(req)
	if err != nil {
		text := NetError(err, endpoint)
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: !strings.HasPrefix(text, "cancelled"), Error: text}, ""
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, apnsReplyLimit))
	res := Result{StatusCode: resp.StatusCode, Excerpt: Excerpt(raw)}
	if resp.StatusCode == http.StatusOK {
		res.Outcome = workflows.OutcomeDelivered
		res.MessageID = resp.Header.Get("apns-id")
		if res.MessageID == "" {
			res.MessageID = APNsID(notificationID)
		}
		return res, ""
	}
	var answer struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(raw, &answer)
	reason := answer.Reason
	res.Error = fmt.Sprintf("apns answered %d", resp.StatusCode)
	if reason != "" {
		res.Error += " " + reason
	}
	switch status := resp.StatusCode; {
	case status == http.StatusGone, status == http.StatusBadRequest && reason == "BadDeviceToken":
		// The token is dead (the app was removed) or not a token of this
		// app and environment: no push to it can ever arrive.
		res.Outcome, res.Suppress = workflows.OutcomePermanent, SuppressUnregistered
	case status == http.StatusTooManyRequests:
		// TooManyRequests is about this device token; anything else
		// (TooManyProviderTokenUpdates) is about us.
		res.Outcome = workflows.OutcomeRetry
		res.ProviderFault = reason != "TooManyRequests"
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case status >= 500, status >= 300 && status < 400:
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case status == http.StatusForbidden, status == http.StatusNotFound, status == http.StatusMethodNotAllowed,
		status == http.StatusUnauthorized, status == http.StatusRequestTimeout:
		// Our token, key, topic or URL: every push would fail alike.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
	default:
		// 400 (a bad topic for this token, a bad payload), 413: this push's.
		res.Outcome = workflows.OutcomePermanent
	}
	return res, reason
}

// scrub removes the endpoint's path (the device token) and the provider
// tokens from text that came from APNs or the network.
func (a *APNs) scrub(text, endpoint string, tokens ...string) string {
	for _, t := range tokens {
		if t != "" {
			text = strings.ReplaceAll(text, t, "[redacted]")
		}
	}
	return HideURL(text, endpoint)
}
