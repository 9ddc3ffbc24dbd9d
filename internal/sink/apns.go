package sink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Device tokens the fake APNs answers as Apple answers a dead or refusing
// device, by their prefix: APNsDeadPrefix 410 Unregistered, APNsBadPrefix
// 400 BadDeviceToken, APNsBusyPrefix 429 TooManyRequests, APNsDownPrefix
// 503 ServiceUnavailable, and APNsExpireOncePrefix 403
// ExpiredProviderToken to its first request (and to any later one that
// carries the very token refused), then 200.
const (
	APNsDeadPrefix       = "dead"
	APNsBadPrefix        = "bad"
	APNsBusyPrefix       = "busy"
	APNsDownPrefix       = "down"
	APNsExpireOncePrefix = "expire-once"
)

// apnsPayloadLimit is Apple's limit on a notification's payload.
const apnsPayloadLimit = 4096

// APNsFakeConfig says what the fake APNs accepts.
type APNsFakeConfig struct {
	// PublicKey verifies the provider tokens (ES256); required.
	PublicKey *ecdsa.PublicKey
	// TeamID and KeyID, when set, are the only iss and kid accepted.
	TeamID, KeyID string
	// Topic, when set, is the only apns-topic accepted.
	Topic string
	// RetryAfter, when set, goes with 429 and 503 answers as a Retry-After
	// header (whole seconds); Apple sends none, other gateways do.
	RetryAfter time.Duration
}

// APNsPush is one request the fake APNs got, and what it answered.
type APNsPush struct {
	// Proto is the request's protocol ("HTTP/2.0").
	Proto      string `json:"proto"`
	Token      string `json:"token"`
	Topic      string `json:"topic"`
	PushType   string `json:"pushType"`
	APNsID     string `json:"apnsId"`
	CollapseID string `json:"collapseId,omitempty"`
	// Payload is the body as sent.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Title, Body and DispatchID are read from the payload.
	Title      string `json:"title"`
	Body       string `json:"body"`
	DispatchID string `json:"dispatchId"`
	// KeyID and TeamID are the provider token's kid and iss, JWT the
	// token itself.
	KeyID  string `json:"keyId"`
	TeamID string `json:"teamId"`
	JWT    string `json:"-"`
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// APNsFake is a local APNs provider API (POST /3/device/{token}) for the
// tests and the local sink: it verifies the provider token and answers per
// device token (the APNs*Prefix constants). Serve it over TLS with HTTP/2
// (StartAPNs), as Apple does.
type APNsFake struct {
	cfg APNsFakeConfig

	mu      sync.Mutex
	pushes  []APNsPush
	refused map[string]string // device token → the provider token refused once
}

// NewAPNsFake returns a fake accepting tokens signed by cfg.PublicKey's key.
func NewAPNsFake(cfg APNsFakeConfig) *APNsFake {
	return &APNsFake{cfg: cfg, refused: map[string]string{}}
}

// Pushes returns a copy of every request the fake got, in order.
func (f *APNsFake) Pushes() []APNsPush {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]APNsPush(nil), f.pushes...)
}

// Handler serves the recorded pushes as JSON (the sink's GET /_sink/apns).
func (f *APNsFake) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.Pushes())
	})
}

// ServeHTTP answers one push as APNs does: 200 with apns-id, or a status
// with {"reason": …}.
func (f *APNsFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := APNsPush{
		Proto: r.Proto, Topic: r.Header.Get("apns-topic"), PushType: r.Header.Get("apns-push-type"),
		APNsID: r.Header.Get("apns-id"), CollapseID: r.Header.Get("apns-collapse-id"),
	}
	p.Status, p.Reason = f.answer(r, &p)
	f.mu.Lock()
	f.pushes = append(f.pushes, p)
	f.mu.Unlock()

	w.Header().Set("apns-id", p.APNsID)
	if p.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	if f.cfg.RetryAfter > 0 && (p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable) {
		w.Header().Set("Retry-After", strconv.Itoa(int(f.cfg.RetryAfter.Seconds())))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(p.Status)
	answer := map[string]any{"reason": p.Reason}
	if p.Status == http.StatusGone {
		answer["timestamp"] = time.Now().UnixMilli()
	}
	_ = json.NewEncoder(w).Encode(answer)
}

func (f *APNsFake) answer(r *http.Request, p *APNsPush) (int, string) {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || token == "" || strings.Contains(token, "/") {
		return http.StatusNotFound, "BadPath"
	}
	p.Token = token
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	if p.APNsID == "" {
		p.APNsID = uuid.NewString()
	} else if _, err := uuid.Parse(p.APNsID); err != nil {
		return http.StatusBadRequest, "BadMessageId"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, apnsPayloadLimit+1))
	if err != nil {
		return http.StatusBadRequest, "BadPayload"
	}
	if status, reason := f.checkToken(r, p); status != 0 {
		return status, reason
	}
	switch {
	case p.Topic == "":
		return http.StatusBadRequest, "MissingTopic"
	case f.cfg.Topic != "" && p.Topic != f.cfg.Topic:
		return http.StatusBadRequest, "TopicDisallowed"
	case len(body) == 0:
		return http.StatusBadRequest, "PayloadEmpty"
	case len(body) > apnsPayloadLimit:
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge"
	}
	var payload struct {
		APS struct {
			Alert struct {
				Title string `json:"title"`
				Body  string `json:"body"`
			} `json:"alert"`
		} `json:"aps"`
		DispatchID string `json:"dispatchId"`
	}
	if json.Unmarshal(body, &payload) != nil {
		return http.StatusBadRequest, "BadPayload"
	}
	p.Payload = json.RawMessage(body)
	p.Title, p.Body, p.DispatchID = payload.APS.Alert.Title, payload.APS.Alert.Body, payload.DispatchID

	switch {
	case strings.HasPrefix(token, APNsDeadPrefix):
		return http.StatusGone, "Unregistered"
	case strings.HasPrefix(token, APNsBadPrefix):
		return http.StatusBadRequest, "BadDeviceToken"
	case strings.HasPrefix(token, APNsBusyPrefix):
		return http.StatusTooManyRequests, "TooManyRequests"
	case strings.HasPrefix(token, APNsDownPrefix):
		return http.StatusServiceUnavailable, "ServiceUnavailable"
	case strings.HasPrefix(token, APNsExpireOncePrefix):
		f.mu.Lock()
		defer f.mu.Unlock()
		refused, seen := f.refused[token]
		if !seen || refused == p.JWT {
			f.refused[token] = p.JWT
			return http.StatusForbidden, "ExpiredProviderToken"
		}
	}
	return http.StatusOK, ""
}

// checkToken verifies the bearer provider token as APNs does: an ES256
// JWT by the configured key, with kid, iss and an iat less than an hour
// old.
func (f *APNsFake) checkToken(r *http.Request, p *APNsPush) (int, string) {
	raw, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	if !ok || raw == "" {
		return http.StatusForbidden, "MissingProviderToken"
	}
	p.JWT = raw
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		return f.cfg.PublicKey, nil
	}, jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}))
	if err != nil || !parsed.Valid || f.cfg.PublicKey == nil {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	p.KeyID, _ = parsed.Header["kid"].(string)
	p.TeamID, _ = claims["iss"].(string)
	iat, err := claims.GetIssuedAt()
	switch {
	case p.KeyID == "" || (f.cfg.KeyID != "" && p.KeyID != f.cfg.KeyID):
		return http.StatusForbidden, "InvalidProviderToken"
	case p.TeamID == "" || (f.cfg.TeamID != "" && p.TeamID != f.cfg.TeamID):
		return http.StatusForbidden, "InvalidProviderToken"
	case err != nil || iat == nil:
		return http.StatusForbidden, "InvalidProviderToken"
	case time.Since(iat.Time) > time.Hour:
		return http.StatusForbidden, "ExpiredProviderToken"
	}
	return 0, ""
}

// GenerateAPNsKey makes a key pair as Apple issues one: the private key as
// a .p8 (PEM, PKCS#8, EC P-256), and its public key for the fake.
func GenerateAPNsKey() (p8 []byte, public *ecdsa.PublicKey, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), &key.PublicKey, nil
}

// APNsPublicKey reads the public key of a .p8 key.
func APNsPublicKey(p8 []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(p8)
	if block == nil {
		return nil, errors.New("not a PEM .p8 key")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS#8 private key")
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an EC key")
	}
	return &key.PublicKey, nil
}

// APNsServer is a fake APNs served over TLS with HTTP/2, its certificate
// issued by a CA made when it started.
type APNsServer struct {
	// URL is its base, https://host:port.
	URL string
	// CA is the PEM certificate of the CA that issued its certificate: the
	// sender trusts it through caFile (or RootCAs in tests).
	CA  []byte
	srv *http.Server
	l   net.Listener
}

// StartAPNs serves h on addr ("127.0.0.1:0" for any port) over TLS with
// HTTP/2 only, with a certificate for 127.0.0.1, ::1 and localhost from a
// new CA. Close stops it.
func StartAPNs(addr string, h http.Handler) (*APNsServer, error) {
	caPEM, cert, err := newTestCA()
	if err != nil {
		return nil, fmt.Errorf("apns fake: making its CA: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		// Go's server speaks HTTP/2 when TLS negotiates h2; APNs speaks
		// nothing else.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	return &APNsServer{URL: "https://" + l.Addr().String(), CA: caPEM, srv: srv, l: l}, nil
}

// Close stops the server.
func (s *APNsServer) Close() error { return s.srv.Close() }

// newTestCA makes a CA and a server certificate it issued for the
// loopback addresses; it returns the CA's PEM and the server's key pair.
func newTestCA() ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dispatch-engine fake APNs CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}, nil
}
