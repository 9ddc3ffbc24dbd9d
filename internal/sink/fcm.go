package sink

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

// FCMFakeConfig says how the fake FCM answers.
type FCMFakeConfig struct {
	// ProjectID is the one project it sends in; another answers 403.
	ProjectID string
	// ClientEmail, when set, is the only issuer of a grant it takes.
	ClientEmail string
	// PublicKey verifies the grants' RS256 signatures: the public half of
	// the service account's key. Without it every grant is refused.
	PublicKey *rsa.PublicKey
	// TokenLifetime is the access tokens' expires_in, default an hour.
	TokenLifetime time.Duration
	// RefuseGrants answers every grant 400 invalid_grant, as Google does
	// for a deleted or disabled key.
	RefuseGrants bool
	// RetryAfter goes with the busy and down answers, default 10s.
	RetryAfter time.Duration
}

// Registration tokens the fake answers as FCM answers a dead or unlucky
// one, by prefix; any other token is taken.
const (
	// FCMDeadPrefix: 404 UNREGISTERED (the app was uninstalled).
	FCMDeadPrefix = "dead"
	// FCMBadPrefix: 400 INVALID_ARGUMENT, not a valid registration token.
	FCMBadPrefix = "bad"
	// FCMBusyPrefix: 429 QUOTA_EXCEEDED with Retry-After.
	FCMBusyPrefix = "busy"
	// FCMDownPrefix: 503 UNAVAILABLE with Retry-After.
	FCMDownPrefix = "down"
	// FCMOopsPrefix: 500 INTERNAL.
	FCMOopsPrefix = "oops"
	// FCMMismatchPrefix: 403 SENDER_ID_MISMATCH (another project's token).
	FCMMismatchPrefix = "mismatch"
	// FCMThirdPartyPrefix: 401 THIRD_PARTY_AUTH_ERROR (the project's APNs
	// credentials refused).
	FCMThirdPartyPrefix = "thirdparty"
)

// fcmPayloadLimit is FCM's limit on a message's notification and data.
const fcmPayloadLimit = 4096

// FCMSend is one messages:send request the fake answered.
type FCMSend struct {
	Project     string            `json:"project"`
	Token       string            `json:"token"`
	Title       string            `json:"title,omitempty"`
	Body        string            `json:"body,omitempty"`
	Data        map[string]string `json:"data,omitempty"`
	CollapseKey string            `json:"collapseKey,omitempty"`
	ThreadID    string            `json:"threadId,omitempty"`
	// Status is the HTTP status it answered, Name the message's name on a
	// 200.
	Status int    `json:"status"`
	Name   string `json:"name,omitempty"`
}

// FCMFake is a local FCM HTTP v1 API with its OAuth2 token endpoint: POST
// {base}/token takes a JWT-bearer grant signed with the service account's
// key and answers an access token; POST
// {base}/v1/projects/{project}/messages:send takes a message with one of
// them. It records what it got, for the tests and the local sink (no real
// provider is reachable from our machines).
type FCMFake struct {
	mu        sync.Mutex
	cfg       FCMFakeConfig
	tokens    map[string]time.Time
	exchanges int
	refused   int
	sends     []FCMSend
}

// NewFCMFake returns a fake answering per cfg.
func NewFCMFake(cfg FCMFakeConfig) *FCMFake {
	return &FCMFake{cfg: fcmFakeDefaults(cfg), tokens: map[string]time.Time{}}
}

func fcmFakeDefaults(cfg FCMFakeConfig) FCMFakeConfig {
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = time.Hour
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 10 * time.Second
	}
	return cfg
}

// SetConfig changes how the fake answers from now on; tokens it issued
// stay valid.
func (f *FCMFake) SetConfig(cfg FCMFakeConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = fcmFakeDefaults(cfg)
}

// Exchanges is how many access tokens it issued, Refused how many grants
// it refused.
func (f *FCMFake) Exchanges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exchanges
}

// Refused is how many grants it refused.
func (f *FCMFake) Refused() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

// Sends returns a copy of every messages:send request it answered with a
// valid access token, in order.
func (f *FCMFake) Sends() []FCMSend {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FCMSend, len(f.sends))
	copy(out, f.sends)
	return out
}

// Handler lists what the fake got: the tokens it issued, the grants it
// refused and every messages:send it answered (GET /_sink/fcm).
func (f *FCMFake) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		out := map[string]any{"exchanges": f.exchanges, "refused": f.refused, "sends": append([]FCMSend{}, f.sends...)}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// RevokeTokens forgets every access token issued, as when a key's
// permissions change: the next send with one is answered 401.
func (f *FCMFake) RevokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

// ServeHTTP routes the token endpoint (a path ending /token) and
// messages:send.
func (f *FCMFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method != http.MethodPost:
		fcmFail(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "", "Method not allowed.", 0)
	case strings.HasSuffix(r.URL.Path, "/token"):
		f.token(w, r)
	case strings.Contains(r.URL.Path, "/v1/projects/") && strings.HasSuffix(r.URL.Path, "/messages:send"):
		f.send(w, r)
	default:
		fcmFail(w, http.StatusNotFound, "NOT_FOUND", "", "The requested URL "+r.URL.Path+" was not found on this server.", 0)
	}
}

// token is Google's token endpoint for the JWT-bearer grant (RFC 7523):
// the assertion must be an RS256 JWT signed by the configured key, issued
// by ClientEmail, for this very URL, asking the firebase.messaging scope,
// current and at most an hour long.
func (f *FCMFake) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	cfg := f.cfg
	f.mu.Unlock()
	refuse := func(code, description string) {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		refuse("invalid_request", "Could not read the request.")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		refuse("unsupported_grant_type", "Invalid grant_type: "+r.PostForm.Get("grant_type"))
		return
	}
	if cfg.RefuseGrants || cfg.PublicKey == nil {
		refuse("invalid_grant", "Invalid JWT Signature.")
		return
	}
	var claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), &claims,
		func(*jwt.Token) (any, error) { return cfg.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithAudience(fcmSelfURL(r)), jwt.WithLeeway(time.Minute))
	switch {
	case err != nil:
		refuse("invalid_grant", "Invalid JWT: "+err.Error())
		return
	case cfg.ClientEmail != "" && claims.Issuer != cfg.ClientEmail:
		refuse("invalid_grant", "Invalid JWT: the issuer is not the service account.")
		return
	case !slices.Contains(strings.Fields(claims.Scope), provider.FCMScope):
		refuse("invalid_scope", "The firebase.messaging scope was not asked.")
		return
	case claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > time.Hour+time.Minute:
		refuse("invalid_grant", "Invalid JWT: the grant is longer than an hour.")
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	access := "ya29.fake-" + hex.EncodeToString(b)
	f.mu.Lock()
	f.tokens[access] = time.Now().Add(cfg.TokenLifetime)
	f.exchanges++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": access, "expires_in": int(cfg.TokenLifetime.Seconds()), "token_type": "Bearer",
	})
}

// fcmSelfURL is the URL the client called, its path as sent (before a
// StripPrefix): the audience its grant must name.
func fcmSelfURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path, _, _ := strings.Cut(r.RequestURI, "?")
	if path == "" {
		path = r.URL.Path
	}
	return scheme + "://" + r.Host + path
}

// fcmWireMessage is what the fake reads of a messages:send body.
type fcmWireMessage struct {
	Message struct {
		Token        string `json:"token"`
		Notification *struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"notification"`
		Data    map[string]string `json:"data"`
		Android *struct {
			CollapseKey string `json:"collapse_key"`
		} `json:"android"`
		APNs *struct {
			Headers map[string]string `json:"headers"`
			Payload *struct {
				APS struct {
					ThreadID string `json:"thread-id"`
				} `json:"aps"`
			} `json:"payload"`
		} `json:"apns"`
	} `json:"message"`
}

func (f *FCMFake) send(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	cfg := f.cfg
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	expiry, issued := f.tokens[bearer]
	f.mu.Unlock()
	if !issued || time.Now().After(expiry) {
		fcmFail(w, http.StatusUnauthorized, "UNAUTHENTICATED", "",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", 0)
		return
	}
	project := r.URL.Path[strings.Index(r.URL.Path, "/v1/projects/")+len("/v1/projects/") : len(r.URL.Path)-len("/messages:send")]
	if project != cfg.ProjectID {
		fcmFail(w, http.StatusForbidden, "PERMISSION_DENIED", "",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+project+"' (or it may not exist).", 0)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	var in fcmWireMessage
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fcmFail(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "Invalid JSON payload received. "+err.Error(), 0)
		return
	}
	m := in.Message
	rec := FCMSend{Project: project, Token: m.Token, Data: m.Data}
	if m.Notification != nil {
		rec.Title, rec.Body = m.Notification.Title, m.Notification.Body
	}
	if m.Android != nil {
		rec.CollapseKey = m.Android.CollapseKey
	}
	if m.APNs != nil && m.APNs.Payload != nil {
		rec.ThreadID = m.APNs.Payload.APS.ThreadID
	}
	size := len(rec.Title) + len(rec.Body)
	for k, v := range m.Data {
		size += len(k) + len(v)
	}

	status, name := http.StatusOK, ""
	retry := cfg.RetryAfter
	switch token := m.Token; {
	case token == "":
		status = fcmFailField(w, "message", "Recipient of the message is not set.")
	case size > fcmPayloadLimit:
		status = fcmFailField(w, "message", "Message is too big")
	case strings.HasPrefix(token, FCMDeadPrefix):
		status = fcmFail(w, http.StatusNotFound, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.", 0)
	case strings.HasPrefix(token, FCMBadPrefix):
		status = fcmFail(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", 0)
	case strings.HasPrefix(token, FCMBusyPrefix):
		status = fcmFail(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'.", retry)
	case strings.HasPrefix(token, FCMDownPrefix):
		status = fcmFail(w, http.StatusServiceUnavailable, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable.", retry)
	case strings.HasPrefix(token, FCMOopsPrefix):
		status = fcmFail(w, http.StatusInternalServerError, "INTERNAL", "INTERNAL", "Internal error encountered.", 0)
	case strings.HasPrefix(token, FCMMismatchPrefix):
		status = fcmFail(w, http.StatusForbidden, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch", 0)
	case strings.HasPrefix(token, FCMThirdPartyPrefix):
		status = fcmFail(w, http.StatusUnauthorized, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS or Web Push Service", 0)
	default:
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		name = "projects/" + project + "/messages/0:" + strconv.FormatInt(time.Now().UnixMicro(), 10) + "%" + hex.EncodeToString(b)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
	}
	rec.Status, rec.Name = status, name
	f.mu.Lock()
	f.sends = append(f.sends, rec)
	f.mu.Unlock()
}

// fcmFail writes FCM's error JSON (google.rpc.Status), with the FcmError
// detail when errorCode is set, and answers status.
func fcmFail(w http.ResponseWriter, status int, rpcStatus, errorCode, message string, retryAfter time.Duration) int {
	e := map[string]any{"code": status, "message": message, "status": rpcStatus}
	if errorCode != "" {
		e["details"] = []any{map[string]string{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode}}
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
	return status
}

// fcmFailField answers 400 INVALID_ARGUMENT about a field of the message
// (a google.rpc.BadRequest detail), not about its token.
func fcmFailField(w http.ResponseWriter, field, description string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": http.StatusBadRequest, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT",
		"details": []any{
			map[string]string{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
			map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []any{
				map[string]string{"field": field, "description": description},
			}},
		},
	}})
	return http.StatusBadRequest
}

// NewFCMServiceAccount makes a service account's JSON key for the fake: a
// fresh 2048-bit RSA key (PKCS #8, as Google issues them), project and
// token_uri as given, and returns it with its public half for
// FCMFakeConfig.PublicKey. The key is for tests and local runs only.
func NewFCMServiceAccount(projectID, tokenURL string) (key []byte, public *rsa.PublicKey, err error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 20)
	_, _ = rand.Read(id)
	key, err = json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     projectID,
		"private_key_id": hex.EncodeToString(id),
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "dispatch@" + projectID + ".iam.gserviceaccount.com",
		"client_id":      "100000000000000000001",
		"token_uri":      tokenURL,
	}, "", "  ")
	return key, &priv.PublicKey, err
}

// FCMServiceAccountIdentity reads a service account's JSON key (one
// NewFCMServiceAccount made) back: its project, client_email and the
// public half of its key, which is what the fake needs to take its grants.
func FCMServiceAccountIdentity(key []byte) (projectID, clientEmail string, public *rsa.PublicKey, err error) {
	var sa struct {
		ProjectID   string `json:"project_id"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(key, &sa); err != nil {
		return "", "", nil, fmt.Errorf("not a service account's JSON key: %w", err)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return "", "", nil, errors.New("its private_key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return "", "", nil, errors.New("its private_key is not a PKCS #8 key")
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return "", "", nil, errors.New("its private_key is not an RSA key")
	}
	return sa.ProjectID, sa.ClientEmail, &priv.PublicKey, nil
}
