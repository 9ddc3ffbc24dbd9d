package provider

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"

	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// FCMDefaultURL is the FCM HTTP v1 API's base.
const FCMDefaultURL = "https://fcm.googleapis.com"

// FCMScope is the OAuth2 scope that lets a service account send messages.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCMDefaultTimeout bounds a send (the token exchange included) when
// FCMConfig.Timeout is zero.
const FCMDefaultTimeout = 10 * time.Second

// Data keys every FCM message carries, as strings: the app drops a
// notification it has shown already by FCMDataID, the same on every attempt.
const (
	FCMDataID      = "dispatchId"
	FCMDataAttempt = "dispatchAttempt"
)

// fcmReplyLimit is far above any messages:send answer (a few hundred
// bytes); past it the reply is not FCM's.
const fcmReplyLimit = 64 << 10

// FCMConfig is an fcm provider's settings.
type FCMConfig struct {
	// CredentialsJSON is the service account's JSON key (the file the
	// provider's credentialsFile names): its client_email and private_key
	// sign the JWT-bearer grant that buys an access token.
	CredentialsJSON []byte
	// ProjectID is the Firebase project messages are sent in; default the
	// key's project_id.
	ProjectID string
	// BaseURL is the API base, default FCMDefaultURL; messages go to
	// {BaseURL}/v1/projects/{ProjectID}/messages:send.
	BaseURL string
	// TokenURL is where the grant is exchanged; default the key's token_uri,
	// else Google's.
	TokenURL string
	// Timeout bounds one send, default FCMDefaultTimeout.
	Timeout time.Duration
	// HTTP is the client, optional; default a client with Timeout.
	// Redirects are never followed, whichever client is used.
	HTTP *http.Client
}

// FCM sends push notifications through the FCM HTTP v1 API with an OAuth2
// access token bought with the service account's key. The token is cached
// and bought again shortly before it expires, or at once when FCM refuses
// it. It is safe for concurrent use.
//
// golang.org/x/oauth2 (google, jwt) signs the grant and exchanges it: it is
// Google's own client for its token endpoint, a dependency already in the
// module graph, and small beside the Firebase Admin SDK, whose messaging
// client would bring the whole Google Cloud client stack for one POST.
type FCM struct {
	cfg      FCMConfig
	endpoint string
	http     *http.Client
	jwt      *jwt.Config

	mu    sync.Mutex
	token *oauth2.Token
	// exchanges counts the tokens bought (for tests and the benchmark).
	exchanges int

	// secrets are the forms of the private key a reply or an error could
	// carry; they and the current access token are scrubbed from every
	// Error and Excerpt.
	secrets []string
}

var _ Sender = (*FCM)(nil)

// serviceAccount is what NewFCM reads of a service account's JSON key
// beyond what google.JWTConfigFromJSON takes.
type serviceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
}

// NewFCM validates cfg and returns its sender: the key must be a service
// account's with a client_email and an RSA private_key; the project is
// required (given or the key's); BaseURL and TokenURL, when set, must be
// absolute http(s) URLs without credentials, query or fragment. No error
// quotes the key.
func NewFCM(cfg FCMConfig) (*FCM, error) {
	var sa serviceAccount
	if err := json.Unmarshal(cfg.CredentialsJSON, &sa); err != nil {
		// A *json.SyntaxError names an offset, never the text around it.
		return nil, fmt.Errorf("fcm: credentialsFile is not a service account's JSON key: %w", err)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("fcm: credentialsFile: type is %q, not service_account", sa.Type)
	}
	if sa.ClientEmail == "" {
		return nil, errors.New("fcm: credentialsFile has no client_email")
	}
	if err := checkRSAKey(sa.PrivateKey); err != nil {
		return nil, fmt.Errorf("fcm: credentialsFile: private_key %w", err)
	}
	conf, err := google.JWTConfigFromJSON(cfg.CredentialsJSON, FCMScope)
	if err != nil {
		return nil, errors.New("fcm: credentialsFile is not a service account's JSON key")
	}
	if cfg.ProjectID == "" {
		cfg.ProjectID = sa.ProjectID
	}
	if cfg.ProjectID == "" || strings.ContainsAny(cfg.ProjectID, "/?#%") {
		return nil, errors.New("fcm: projectId is required (or the key's project_id), a Firebase project id")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = FCMDefaultURL
	}
	if err := checkBaseURL("baseURL", cfg.BaseURL); err != nil {
		return nil, err
	}
	if cfg.TokenURL != "" {
		if err := checkBaseURL("tokenURL", cfg.TokenURL); err != nil {
			return nil, err
		}
		conf.TokenURL = cfg.TokenURL
	}
	cfg.TokenURL = conf.TokenURL
	if cfg.Timeout < 0 {
		return nil, errors.New("fcm: timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = FCMDefaultTimeout
	}
	var client http.Client
	if cfg.HTTP != nil {
		client = *cfg.HTTP
	} else {
		client.Timeout = cfg.Timeout
	}
	// A followed redirect would carry the bearer token, or the grant,
	// somewhere we did not configure.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	f := &FCM{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.BaseURL, "/") + "/v1/projects/" + cfg.ProjectID + "/messages:send",
		http:     &client,
		jwt:      conf,
	}
	f.secrets = keyForms(sa.PrivateKey)
	return f, nil
}

// fcmCredentialsLimit is far above a service account's JSON key (about
// 2.3 KiB).
const fcmCredentialsLimit = 64 << 10

// ReadFCMCredentials reads the service account's JSON key at path (the
// provider's credentialsFile). Its errors name the path, never the content.
func ReadFCMCredentials(path string) ([]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentialsFile: %w", err)
	}
	defer func() { _ = file.Close() }()
	raw, err := io.ReadAll(io.LimitReader(file, fcmCredentialsLimit+1))
	if err != nil {
		return nil, fmt.Errorf("credentialsFile: %w", err)
	}
	if len(raw) > fcmCredentialsLimit {
		return nil, fmt.Errorf("credentialsFile: %s is larger than a service account's key", path)
	}
	return raw, nil
}

// checkRSAKey reports whether pemKey is a PEM RSA private key (PKCS #8, as
// Google issues them, or PKCS #1); its errors never quote the key.
func checkRSAKey(pemKey string) error {
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil {
		return errors.New("is not a PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("is not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New("is neither a PKCS #8 nor a PKCS #1 RSA private key")
	}
	return nil
}

// keyForms are the key, and each of its PEM lines long enough to be
// recognised, as they could show up in text.
func keyForms(pemKey string) []string {
	forms := []string{strings.TrimSpace(pemKey)}
	for _, line := range strings.Split(pemKey, "\n") {
		if line = strings.TrimSpace(line); len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			forms = append(forms, line)
		}
	}
	return forms
}

func checkBaseURL(setting, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("fcm: %s %q is not an absolute http(s) URL", setting, raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("fcm: %s must carry no credentials, query or fragment", setting)
	}
	return nil
}

// Target is the API's scheme and host.
func (f *FCM) Target() string { return Origin(f.cfg.BaseURL) }

// Exchanges is how many access tokens the sender bought.
func (f *FCM) Exchanges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exchanges
}

// accessToken returns the cached access token, buying one when there is
// none or it expires within oauth2's margin. The exchange runs under ctx
// (the send's deadline and cancel), which oauth2.ReuseTokenSource would not
// honour; sends waiting for it wait on the lock.
func (f *FCM) accessToken(ctx context.Context) (*oauth2.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token.Valid() {
		return f.token, nil
	}
	tok, err := f.jwt.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, f.http)).Token()
	if err != nil {
		return nil, err
	}
	if tok.AccessToken == "" {
		return nil, errors.New("the token endpoint answered without an access_token")
	}
	if tok.Expiry.IsZero() {
		// An answer without expires_in: buy another within the half hour
		// rather than keep a token FCM will refuse some day.
		tok.Expiry = time.Now().Add(30 * time.Minute)
	}
	f.token = tok
	f.exchanges++
	return tok, nil
}

// forget drops tok from the cache when it is still the cached one: FCM
// refused it (revoked, or the key's permissions changed), so the next send
// buys another instead of being refused until it expires.
func (f *FCM) forget(tok *oauth2.Token) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token == tok {
		f.token = nil
	}
}

// fcmRequest is the messages:send body.
type fcmRequest struct {
	Message fcmMessage `json:"message"`
}

type fcmMessage struct {
	Token        string            `json:"token"`
	Notification *fcmNotification  `json:"notification,omitempty"`
	Data         map[string]string `json:"data"`
	Android      *fcmAndroid       `json:"android,omitempty"`
	APNs         *fcmAPNs          `json:"apns,omitempty"`
}

type fcmNotification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type fcmAndroid struct {
	CollapseKey string `json:"collapse_key,omitempty"`
}

type fcmAPNs struct {
	Headers map[string]string `json:"headers,omitempty"`
	Payload *fcmAPNsPayload   `json:"payload,omitempty"`
}

type fcmAPNsPayload struct {
	APS fcmAPS `json:"aps"`
}

type fcmAPS struct {
	ThreadID string `json:"thread-id,omitempty"`
}

// PushExtras are the optional parts of a push notification a caller gives
// in its metadata: collapseKey (a newer message with the same key replaces
// an undelivered one), threadId (iOS groups notifications by it) and data,
// string pairs handed to the app.
type PushExtras struct {
	CollapseKey string            `json:"collapseKey"`
	ThreadID    string            `json:"threadId"`
	Data        map[string]string `json:"data"`
}

// pushExtras reads PushExtras from the webhook payload's metadata (the
// Message carries the notification's metadata only there). Metadata that
// does not have their shape (a number for collapseKey, a nested data
// value) is ignored: it was the caller's own, not meant for the device.
func pushExtras(payload []byte) PushExtras {
	var p struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	var x PushExtras
	if len(payload) == 0 || json.Unmarshal(payload, &p) != nil || len(p.Metadata) == 0 {
		return x
	}
	var loose struct {
		CollapseKey any             `json:"collapseKey"`
		ThreadID    any             `json:"threadId"`
		Data        json.RawMessage `json:"data"`
	}
	if json.Unmarshal(p.Metadata, &loose) != nil {
		return x
	}
	x.CollapseKey, _ = loose.CollapseKey.(string)
	x.ThreadID, _ = loose.ThreadID.(string)
	if len(loose.Data) > 0 {
		_ = json.Unmarshal(loose.Data, &x.Data) // not all strings: none taken
	}
	return x
}

// fcmReservedKey reports whether FCM refuses key in data: "from",
// "notification", "message_type", and anything starting "google" or
// "gcm". Such a key from the metadata is dropped rather than have FCM
// refuse the whole message.
func fcmReservedKey(key string) bool {
	k := strings.ToLower(key)
	return k == "from" || k == "notification" || k == "message_type" ||
		strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm")
}

func (f *FCM) body(m Message) ([]byte, error) {
	x := pushExtras(m.Payload)
	data := make(map[string]string, len(x.Data)+2)
	for k, v := range x.Data {
		if !fcmReservedKey(k) {
			data[k] = v
		}
	}
	data[FCMDataID] = m.NotificationID
	data[FCMDataAttempt] = strconv.Itoa(m.Attempt)
	msg := fcmMessage{Token: m.Recipient, Data: data}
	if m.Subject != "" || m.Content != "" {
		msg.Notification = &fcmNotification{Title: m.Subject, Body: m.Content}
	}
	if x.CollapseKey != "" {
		msg.Android = &fcmAndroid{CollapseKey: x.CollapseKey}
		msg.APNs = &fcmAPNs{Headers: map[string]string{"apns-collapse-id": x.CollapseKey}}
	}
	if x.ThreadID != "" {
		if msg.APNs == nil {
			msg.APNs = &fcmAPNs{}
		}
		msg.APNs.Payload = &fcmAPNsPayload{APS: fcmAPS{ThreadID: x.ThreadID}}
	}
	return json.Marshal(fcmRequest{Message: msg})
}

// fcmAPIError is the JSON of an FCM error answer (google.rpc.Status).
type fcmAPIError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// code is FCM's errorCode (the FcmError detail), else the status.
func (e fcmAPIError) code() string {
	for _, d := range e.Error.Details {
		if strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return e.Error.Status
}

// aboutToken reports whether an INVALID_ARGUMENT is the registration
// token's (not a registration token, or a field violation of
// message.token) rather than the message's (too big, a bad data key).
func (e fcmAPIError) aboutToken() bool {
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return strings.Contains(strings.ToLower(e.Error.Message), "registration token")
}

// Send posts one message to one registration token (m.Recipient) and
// classifies the answer:
//   - 2xx with the message's name: delivered, MessageID the name;
//   - UNREGISTERED (404), and an INVALID_ARGUMENT about the token:
//     permanent, and the token is suppressed (unregistered);
//   - any other INVALID_ARGUMENT, SENDER_ID_MISMATCH (the token belongs to
//     another sender) and other 4xx: permanent;
//   - QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500) and other
//     5xx: retry after Retry-After, the provider's fault;
//   - 401 and 403 (our token refused, THIRD_PARTY_AUTH_ERROR: the APNs or
//     web push credentials in the Firebase project, PERMISSION_DENIED),
//     another 404 (no such project), a redirect, no answer, and a failed
//     token exchange: retry, the provider's fault.
//
// A cancelled ctx retries and is nobody's fault. What it returns names the
// API by its scheme and host alone, and never holds the recipient, the
// key, the grant or the access token.
func (f *FCM) Send(ctx context.Context, m Message) (res Result) {
	ctx, span := startCall(ctx, KindFCM, f.endpoint)
	defer func() { endCall(span, res) }()
	return ScrubRecipient(f.send(ctx, m), m.Recipient)
}

func (f *FCM) send(ctx context.Context, m Message) Result {
	body, err := f.body(m)
	if err != nil {
		return Result{Outcome: workflows.OutcomePermanent, Error: "fcm: encoding the message: " + err.Error()}
	}
	cctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()

	tok, err := f.accessToken(cctx)
	if err != nil {
		return f.exchangeFailed(ctx, cctx, err)
	}
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, f.endpoint, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: f.scrub("fcm: building the request: "+err.Error(), tok)}
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dispatch-engine")
	injectTrace(req)

	resp, err := f.http.Do(req)
	if err != nil {
		return f.noAnswer(ctx, err, tok)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, fcmReplyLimit))
	res := Result{StatusCode: resp.StatusCode, Excerpt: Excerpt([]byte(f.scrub(string(raw), tok)))}

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var sent struct {
			Name string `json:"name"`
		}
		if readErr == nil && json.Unmarshal(raw, &sent) == nil && sent.Name != "" {
			res.Outcome, res.MessageID = workflows.OutcomeDelivered, sent.Name
			return res
		}
		// Without the message's name the answer is not messages:send's (a
		// proxy, a wrong baseURL): better a possible duplicate, which the
		// app drops by dispatchId, than a delivery nobody made.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		res.Error = fmt.Sprintf("fcm answered %d without a message name", resp.StatusCode)
		if readErr != nil {
			res.Error = f.scrub(fmt.Sprintf("fcm answered %d but its reply broke off: %v", resp.StatusCode, readErr), tok)
		}
		return res
	}

	var apiErr fcmAPIError
	_ = json.Unmarshal(raw, &apiErr)
	code := apiErr.code()
	res.Error = Excerpt([]byte(f.scrub(fcmErrorText(resp, code, apiErr.Error.Message), tok)))
	retryAfter := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	switch status := resp.StatusCode; {
	case code == "UNREGISTERED":
		res.Outcome, res.Suppress = workflows.OutcomePermanent, SuppressUnregistered
	case code == "INVALID_ARGUMENT" || (status == http.StatusBadRequest && code == ""):
		res.Outcome = workflows.OutcomePermanent
		if apiErr.aboutToken() {
			res.Suppress = SuppressUnregistered
		}
	case code == "SENDER_ID_MISMATCH":
		// The token was issued for another Firebase project: no retry with
		// our credentials can reach it, yet it is not dead (that project
		// may still send to it), so it is not suppressed.
		res.Outcome = workflows.OutcomePermanent
	case status == http.StatusUnauthorized, status == http.StatusForbidden, code == "THIRD_PARTY_AUTH_ERROR":
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
		if status == http.StatusUnauthorized && code != "THIRD_PARTY_AUTH_ERROR" {
			f.forget(tok)
		}
	case status == http.StatusTooManyRequests, status >= 500, code == "QUOTA_EXCEEDED", code == "UNAVAILABLE", code == "INTERNAL":
		res.Outcome, res.ProviderFault, res.RetryAfter = workflows.OutcomeRetry, true, retryAfter
	case status == http.StatusNotFound, status >= 300 && status < 400:
		// messages:send exists for every project we may send in: a 404 that
		// is not UNREGISTERED is our projectId or baseURL, the same for
		// every message.
		res.Outcome, res.ProviderFault = workflows.OutcomeRetry, true
	default:
		res.Outcome, res.ProviderFault = Classify(status), ProviderFault(status)
		if res.Outcome == workflows.OutcomeRetry {
			res.RetryAfter = retryAfter
		}
	}
	return res
}

// fcmErrorText is "fcm {status} {code}: {message}", or the HTTP status
// (and where a redirect pointed) when the answer is not FCM's JSON.
func fcmErrorText(resp *http.Response, code, message string) string {
	switch {
	case code != "":
		msg := strings.TrimSpace(message)
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return fmt.Sprintf("fcm %d %s: %s", resp.StatusCode, code, msg)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Sprintf("fcm answered %d (redirect to %q, not followed)", resp.StatusCode, resp.Header.Get("Location"))
	default:
		return fmt.Sprintf("fcm answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
}

// exchangeFailed classifies a token exchange that bought no token: our
// credentials refused (invalid_grant: a deleted or disabled key) or the
// token endpoint down or slow are alike the provider's fault, and retried,
// perhaps elsewhere; a cancel is nobody's. Nothing was sent.
func (f *FCM) exchangeFailed(ctx, cctx context.Context, err error) Result {
	res := Result{Outcome: workflows.OutcomeRetry, ProviderFault: true}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		var answer struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(re.Body, &answer)
		what := http.StatusText(re.Response.StatusCode)
		if answer.Error != "" {
			what = answer.Error
		}
		if answer.Description != "" {
			what += ": " + answer.Description
		}
		res.StatusCode = re.Response.StatusCode
		res.Error = Excerpt([]byte(f.scrub(fmt.Sprintf("fcm token exchange answered %d %s", re.Response.StatusCode, what), nil)))
		res.Excerpt = Excerpt([]byte(f.scrub(string(re.Body), nil)))
		res.RetryAfter = ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		return res
	}
	// oauth2 quotes the transport's error with %v: its kind is read from
	// the contexts.
	prefix := "network"
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		prefix, res.ProviderFault = "cancelled", false
	case ctx.Err() != nil, cctx.Err() != nil:
		prefix = "timeout"
	}
	res.Error = Excerpt([]byte(prefix + ": fcm token exchange: " + f.scrub(err.Error(), nil)))
	return res
}

// noAnswer classifies a send that got no HTTP answer: a cancel is the
// caller's decision, so it is not held against the provider; a timeout or
// a network error is.
func (f *FCM) noAnswer(ctx context.Context, err error, tok *oauth2.Token) Result {
	res := Result{Outcome: workflows.OutcomeRetry, ProviderFault: true, Error: f.scrub(NetError(err, f.endpoint), tok)}
	if errors.Is(ctx.Err(), context.Canceled) {
		res.ProviderFault = false
	}
	return res
}

// jwtShape is a JWT (a grant signed with the key, good for an hour's
// tokens) as a token endpoint could echo it.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// scrub removes the key, any grant, the access token and the endpoint's
// path (which names the project) from text that came from FCM, the token
// endpoint or the network.
func (f *FCM) scrub(s string, tok *oauth2.Token) string {
	if tok != nil && tok.AccessToken != "" {
		s = strings.ReplaceAll(s, tok.AccessToken, "[redacted]")
	}
	for _, secret := range f.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = jwtShape.ReplaceAllLiteralString(s, "[redacted]")
	return HideURL(HideURL(s, f.endpoint), f.cfg.TokenURL)
}
