package sink

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

// SendGridFakeConfig says how the fake SendGrid answers.
type SendGridFakeConfig struct {
	// APIKey is the bearer key it accepts.
	APIKey string
	// EventsURL, when set, is where it posts its signed Event Webhook
	// batches (the API's /v1/receipts/{provider}).
	EventsURL string
	// BatchWindow is how long events wait to go out together, from the
	// first one queued; default 1s.
	BatchWindow time.Duration
	// Hold keeps the events until Flush.
	Hold bool
	// FailStatus, when set, answers every send with this status (and
	// RetryAfter, in whole seconds, when set).
	FailStatus int
	RetryAfter time.Duration
}

// Addresses the fake treats as SendGrid would treat dead or busy ones, by
// their local part's prefix: "invalid…" is refused at send (400, not a
// valid address), "busy…" is rate limited (429), "bounce…" is taken and
// then hard-bounces (a bounce event); any other address is delivered.
const (
	SendGridInvalidPrefix = "invalid"
	SendGridBusyPrefix    = "busy"
	SendGridBouncePrefix  = "bounce"
)

// SendGridMessage is one message the fake took.
type SendGridMessage struct {
	MessageID  string            `json:"messageId"`
	To         string            `json:"to"`
	From       string            `json:"from"`
	Subject    string            `json:"subject"`
	Text       string            `json:"text"`
	HTML       string            `json:"html,omitempty"`
	Headers    map[string]string `json:"headers"`
	CustomArgs map[string]string `json:"customArgs"`
}

// SendGridBatch is one event batch the fake posted: how many events, and
// the receiver's HTTP status or the error that stood instead of an answer.
type SendGridBatch struct {
	Events     int    `json:"events"`
	HTTPStatus int    `json:"httpStatus"`
	Err        string `json:"error,omitempty"`
}

// SendGridFake is a local SendGrid: v3 Mail Send at /v3/mail/send, and an
// Event Webhook that posts signed batches of events (processed, then
// delivered or bounce) about the messages it took, for the tests and the
// local sink (no real provider is reachable from our machines).
type SendGridFake struct {
	key    *ecdsa.PrivateKey
	client *http.Client

	mu       sync.Mutex
	cfg      SendGridFakeConfig
	messages []SendGridMessage
	batches  []SendGridBatch
	pending  []map[string]any
	timer    *time.Timer
	closed   bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewSendGridFake returns a fake answering per cfg, signing its events
// with key (nil: a new P-256 key). Close it to stop the batches pending.
func NewSendGridFake(cfg SendGridFakeConfig, key *ecdsa.PrivateKey) (*SendGridFake, error) {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &SendGridFake{key: key, cfg: sendgridFakeDefaults(cfg), client: &http.Client{Timeout: 5 * time.Second}, ctx: ctx, cancel: cancel}, nil
}

func sendgridFakeDefaults(cfg SendGridFakeConfig) SendGridFakeConfig {
	if cfg.BatchWindow <= 0 {
		cfg.BatchWindow = time.Second
	}
	return cfg
}

// LoadSendGridKey reads the fake's signing key from path (PEM, SEC 1), or
// makes one and writes it there (0600) when the file does not exist, so a
// local run keeps the key its providers file was given.
func LoadSendGridKey(path string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		return key, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// PublicKey is the Event Webhook's verification key as SendGrid shows it
// (base64 DER): a sendgrid provider's eventPublicKey.
func (f *SendGridFake) PublicKey() string {
	der, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	return base64.StdEncoding.EncodeToString(der)
}

// Sign returns the timestamp and signature headers' values for body,
// signed now.
func (f *SendGridFake) Sign(body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(time.Now().Unix(), 10)
	signature, _ = provider.SendGridSignature(f.key, timestamp, body)
	return timestamp, signature
}

// SetConfig changes how the fake answers from now on.
func (f *SendGridFake) SetConfig(cfg SendGridFakeConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = sendgridFakeDefaults(cfg)
}

// Messages returns a copy of every message taken, in order.
func (f *SendGridFake) Messages() []SendGridMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.messages)
}

// Batches returns the event batches posted, in order.
func (f *SendGridFake) Batches() []SendGridBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// Pending is how many events wait to be posted.
func (f *SendGridFake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// Close stops the batches pending and waits for one being posted.
func (f *SendGridFake) Close() {
	f.mu.Lock()
	f.closed = true
	if f.timer != nil && f.timer.Stop() {
		f.wg.Done() // its Flush will not run
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
}

// sendgridRequest is the part of a Mail Send body the fake reads.
type sendgridRequest struct {
	Personalizations []struct {
		To []struct {
			Email string `json:"email"`
		} `json:"to"`
	} `json:"personalizations"`
	From struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	} `json:"from"`
	Subject string `json:"subject"`
	Content []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"content"`
	Headers    map[string]string `json:"headers"`
	CustomArgs map[string]string `json:"custom_args"`
}

// ServeHTTP is Mail Send: POST /v3/mail/send with a bearer key and JSON. It
// answers 202 with X-Message-Id, 401 for another key, 400 with SendGrid's
// error list for a bad body or an "invalid…" recipient, 429 with
// Retry-After for a "busy…" one.
func (f *SendGridFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	cfg := f.cfg
	f.mu.Unlock()
	switch {
	case r.URL.Path != "/v3/mail/send":
		sendgridFail(w, http.StatusNotFound, "", "not found", 0)
		return
	case r.Header.Get("Authorization") != "Bearer "+cfg.APIKey || cfg.APIKey == "":
		sendgridFail(w, http.StatusUnauthorized, "", "The provided authorization grant is invalid, expired, or revoked", 0)
		return
	case r.Method != http.MethodPost:
		sendgridFail(w, http.StatusMethodNotAllowed, "", "method not allowed", 0)
		return
	case cfg.FailStatus != 0:
		sendgridFail(w, cfg.FailStatus, "", http.StatusText(cfg.FailStatus), cfg.RetryAfter)
		return
	}
	var req sendgridRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		sendgridFail(w, http.StatusBadRequest, "", "Bad Request: "+err.Error(), 0)
		return
	}
	if len(req.Personalizations) != 1 || len(req.Personalizations[0].To) != 1 {
		sendgridFail(w, http.StatusBadRequest, "personalizations", "the fake takes one personalization with one recipient", 0)
		return
	}
	to := req.Personalizations[0].To[0].Email
	local, _, _ := strings.Cut(to, "@")
	switch _, err := mail.ParseAddress(to); {
	case err != nil || strings.HasPrefix(local, SendGridInvalidPrefix):
		sendgridFail(w, http.StatusBadRequest, "personalizations.0.to.0.email", "Does not contain a valid address.", 0)
		return
	case strings.HasPrefix(local, SendGridBusyPrefix):
		retry := cfg.RetryAfter
		if retry == 0 {
			retry = time.Second
		}
		sendgridFail(w, http.StatusTooManyRequests, "", "too many requests", retry)
		return
	case req.From.Email == "":
		sendgridFail(w, http.StatusBadRequest, "from.email", "The from email does not contain a valid address.", 0)
		return
	case req.Subject == "":
		sendgridFail(w, http.StatusBadRequest, "subject", "The subject is required.", 0)
		return
	case len(req.Content) == 0 || req.Content[0].Type != "text/plain" || req.Content[0].Value == "":
		sendgridFail(w, http.StatusBadRequest, "content.0.type", "The content value must be a string at least one character in length, text/plain first.", 0)
		return
	}
	msg := SendGridMessage{MessageID: sendgridID(), To: to, From: req.From.Email, Subject: req.Subject,
		Headers: req.Headers, CustomArgs: req.CustomArgs}
	for _, c := range req.Content {
		switch c.Type {
		case "text/plain":
			msg.Text = c.Value
		case "text/html":
			msg.HTML = c.Value
		}
	}
	f.mu.Lock()
	f.messages = append(f.messages, msg)
	if cfg.EventsURL != "" && !f.closed {
		f.queue(cfg, msg)
	}
	f.mu.Unlock()
	w.Header().Set("X-Message-Id", msg.MessageID)
	w.WriteHeader(http.StatusAccepted)
}

// queue adds msg's events (processed, then delivered or a hard bounce) and
// arms the batch timer; f.mu is held.
func (f *SendGridFake) queue(cfg SendGridFakeConfig, msg SendGridMessage) {
	now := time.Now().Unix()
	event := func(name string, at int64) map[string]any {
		e := map[string]any{"email": msg.To, "timestamp": at, "event": name, "sg_event_id": sendgridID(),
			"sg_message_id": msg.MessageID + ".filter0001.1.0", "smtp-id": msg.Headers["Message-ID"]}
		for k, v := range msg.CustomArgs {
			e[k] = v
		}
		return e
	}
	f.pending = append(f.pending, event("processed", now))
	local, _, _ := strings.Cut(msg.To, "@")
	if strings.HasPrefix(local, SendGridBouncePrefix) {
		e := event("bounce", now+1)
		e["type"], e["status"], e["reason"] = "bounce", "5.1.1", "550 5.1.1 The email account that you tried to reach does not exist: "+msg.To
		e["bounce_classification"] = "Invalid Address"
		f.pending = append(f.pending, e)
	} else {
		e := event("delivered", now+1)
		e["response"] = "250 OK"
		f.pending = append(f.pending, e)
	}
	if !cfg.Hold && f.timer == nil {
		f.wg.Add(1)
		f.timer = time.AfterFunc(cfg.BatchWindow, func() {
			defer f.wg.Done()
			_, _ = f.Flush()
		})
	}
}

// Flush posts the events pending as one signed batch, newest first (a
// batch is not in order), and answers the receiver's status. It posts
// nothing, and answers 0, when none is pending.
func (f *SendGridFake) Flush() (int, error) {
	f.mu.Lock()
	events, target := f.pending, f.cfg.EventsURL
	f.pending, f.timer = nil, nil
	f.mu.Unlock()
	if len(events) == 0 || target == "" {
		return 0, nil
	}
	slices.Reverse(events)
	body, err := json.Marshal(events)
	if err != nil {
		return 0, err
	}
	code, err := f.post(target, body)
	result := SendGridBatch{Events: len(events), HTTPStatus: code}
	if err != nil {
		result.Err = err.Error()
	}
	f.mu.Lock()
	f.batches = append(f.batches, result)
	f.mu.Unlock()
	return code, err
}

func (f *SendGridFake) post(target string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts, sig := f.Sign(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "SendGrid Event API")
	req.Header.Set(provider.SendGridTimestampHeader, ts)
	req.Header.Set(provider.SendGridSignatureHeader, sig)
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Handler lists what the fake took and posted: GET answers
// {"messages": [...], "batches": [...], "pending": n, "publicKey": "..."}.
func (f *SendGridFake) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"messages": f.Messages(), "batches": f.Batches(), "pending": f.Pending(), "publicKey": f.PublicKey(),
		})
	})
}

// sendgridFail writes SendGrid's error list.
func sendgridFail(w http.ResponseWriter, status int, field, message string, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(retryAfter).Unix(), 10))
	}
	var f any
	if field != "" {
		f = field
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"message": message, "field": f, "help": nil}}})
}

// sendgridID is 22 random URL-safe characters, the shape of SendGrid's ids.
func sendgridID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
