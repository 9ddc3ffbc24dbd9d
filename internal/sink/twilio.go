package sink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

// TwilioFakeConfig says how the fake Twilio answers.
type TwilioFakeConfig struct {
	// AccountSID and AuthToken are the credentials it accepts (HTTP basic
	// auth) and signs its callbacks with.
	AccountSID, AuthToken string
	// FailCode, when set, answers every send with this Twilio error code
	// and FailStatus (default 400).
	FailCode   int
	FailStatus int
	// RetryAfter, when set, goes with failed answers as a Retry-After header
	// (whole seconds).
	RetryAfter time.Duration
	// Final is the last status posted to a message's StatusCallback after a
	// successful send, following queued and sent: "delivered" (default),
	// "undelivered" or "failed", the last two with ErrorCode 30003. The
	// callbacks are signed with X-Twilio-Signature.
	Final string
	// CallbackDelay is waited before the final callback.
	CallbackDelay time.Duration
	// NoCallback posts no status callbacks.
	NoCallback bool
}

// TwilioMessage is one message the fake accepted.
type TwilioMessage struct {
	SID, To, From, Body, StatusCallback string
	// Status is the last status posted (or "queued" before any).
	Status    string
	Callbacks []TwilioCallbackResult
}

// TwilioCallbackResult is one status callback the fake posted: the status
// it reported, and the receiver's HTTP status or the error that stood
// instead of an answer.
type TwilioCallbackResult struct {
	Status     string
	HTTPStatus int
	Err        string
}

// TwilioFake is a local Twilio: the Messages API under
// /2010-04-01/Accounts/{AccountSid}/Messages.json, with signed status
// callbacks, for the tests and the local sink (no real provider is
// reachable from our machines).
type TwilioFake struct {
	mu       sync.Mutex
	cfg      TwilioFakeConfig
	messages []*TwilioMessage
	arrived  chan string
	client   *http.Client
	// ctx ends the callbacks still pending when the fake is closed.
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
}

// twilioAPIVersion is the only Messages API version there is.
const twilioAPIVersion = "2010-04-01"

// twilioBodyLimit is the Messages API's limit on a body, in characters.
const twilioBodyLimit = 1600

// NewTwilioFake returns a fake answering per cfg. Close it to stop the
// callbacks still pending.
func NewTwilioFake(cfg TwilioFakeConfig) *TwilioFake {
	ctx, cancel := context.WithCancel(context.Background())
	return &TwilioFake{
		cfg:    twilioFakeDefaults(cfg),
		client: &http.Client{Timeout: 5 * time.Second},
		ctx:    ctx,
		cancel: cancel,
	}
}

func twilioFakeDefaults(cfg TwilioFakeConfig) TwilioFakeConfig {
	if cfg.FailCode != 0 && cfg.FailStatus == 0 {
		cfg.FailStatus = http.StatusBadRequest
	}
	if cfg.Final == "" {
		cfg.Final = "delivered"
	}
	return cfg
}

// SetConfig changes how the fake answers from now on; callbacks already
// scheduled keep the settings they started with.
func (f *TwilioFake) SetConfig(cfg TwilioFakeConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = twilioFakeDefaults(cfg)
}

// Close stops the pending callbacks and waits for them to end.
func (f *TwilioFake) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
}

// Messages returns a copy of every message accepted, in order.
func (f *TwilioFake) Messages() []TwilioMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]TwilioMessage, len(f.messages))
	for i, m := range f.messages {
		out[i] = *m
		out[i].Callbacks = append([]TwilioCallbackResult(nil), m.Callbacks...)
	}
	return out
}

// Arrivals returns a channel that receives the SID of each accepted
// message. Sends never block; an arrival is dropped when the channel is
// full.
func (f *TwilioFake) Arrivals(buffer int) <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.arrived = make(chan string, buffer)
	return f.arrived
}

// ServeHTTP is the Messages API: POST
// /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded To, From
// (or MessagingServiceSid), Body and StatusCallback, HTTP basic auth
// AccountSid:AuthToken. It answers 201 with the message's JSON, 401 with
// code 20003 on bad credentials, 404 with code 20404 for another account,
// and 400 with Twilio's code for a missing or invalid parameter, 21610 for
// a number ending in TwilioUnsubscribedSuffix and 21211 for one ending in
// TwilioInvalidSuffix.
func (f *TwilioFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	cfg := f.cfg
	f.mu.Unlock()

	rest, ok := strings.CutPrefix(r.URL.Path, "/"+twilioAPIVersion+"/Accounts/")
	account, ok2 := strings.CutSuffix(rest, "/Messages.json")
	if !ok || !ok2 || account == "" || strings.Contains(account, "/") {
		twilioFail(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
		return
	}
	user, pass, hasAuth := r.BasicAuth()
	if !hasAuth || user != cfg.AccountSID || pass != cfg.AuthToken {
		twilioFail(w, http.StatusUnauthorized, 20003, "Authenticate", 0)
		return
	}
	if account != cfg.AccountSID {
		twilioFail(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found", 0)
		return
	}
	if r.Method != http.MethodPost {
		twilioFail(w, http.StatusMethodNotAllowed, 20004, "Method not allowed", 0)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		twilioFail(w, http.StatusBadRequest, 20001, "Could not read the request: "+err.Error(), 0)
		return
	}
	if cfg.FailCode != 0 {
		twilioFail(w, cfg.FailStatus, cfg.FailCode, twilioFakeMessages[cfg.FailCode], cfg.RetryAfter)
		return
	}

	to, body := r.PostForm.Get("To"), r.PostForm.Get("Body")
	from, service := r.PostForm.Get("From"), r.PostForm.Get("MessagingServiceSid")
	callback := r.PostForm.Get("StatusCallback")
	switch {
	case to == "":
		twilioFail(w, http.StatusBadRequest, 21604, twilioFakeMessages[21604], 0)
		return
	case from == "" && service == "":
		twilioFail(w, http.StatusBadRequest, 21603, twilioFakeMessages[21603], 0)
		return
	case body == "":
		twilioFail(w, http.StatusBadRequest, 21602, twilioFakeMessages[21602], 0)
		return
	case !twilioE164(to):
		twilioFail(w, http.StatusBadRequest, 21211, twilioFakeMessages[21211], 0)
		return
	case utf8.RuneCountInString(body) > twilioBodyLimit:
		twilioFail(w, http.StatusBadRequest, 21617, twilioFakeMessages[21617], 0)
		return
	case strings.HasSuffix(to, TwilioUnsubscribedSuffix):
		twilioFail(w, http.StatusBadRequest, 21610, twilioFakeMessages[21610], 0)
		return
	case strings.HasSuffix(to, TwilioInvalidSuffix):
		twilioFail(w, http.StatusBadRequest, 21211, twilioFakeMessages[21211], 0)
		return
	}
	if callback != "" {
		if u, err := url.Parse(callback); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			twilioFail(w, http.StatusBadRequest, 21609, "Invalid StatusCallback URL", 0)
			return
		}
	}

	// A message sent through a Messaging Service starts accepted, until
	// the service picks its sender.
	status := "queued"
	if service != "" {
		status = "accepted"
	}
	msg := &TwilioMessage{SID: twilioSID("SM"), To: to, From: from, Body: body, StatusCallback: callback, Status: status}
	if from == "" {
		msg.From = service
	}
	f.mu.Lock()
	f.messages = append(f.messages, msg)
	ch := f.arrived
	f.mu.Unlock()
	if ch != nil {
		select {
		case ch <- msg.SID:
		default:
		}
	}

	now := time.Now().UTC().Format(time.RFC1123Z)
	uri := "/" + twilioAPIVersion + "/Accounts/" + cfg.AccountSID + "/Messages/" + msg.SID
	answer := map[string]any{
		"sid": msg.SID, "account_sid": cfg.AccountSID, "api_version": twilioAPIVersion,
		"to": to, "from": twilioNullable(from), "messaging_service_sid": twilioNullable(service), "body": body,
		"status": status, "direction": "outbound-api", "num_segments": "1", "num_media": "0",
		"date_created": now, "date_updated": now, "date_sent": nil,
		"price": nil, "price_unit": "USD", "error_code": nil, "error_message": nil,
		"uri":              uri + ".json",
		"subresource_uris": map[string]string{"media": uri + "/Media.json"},
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(answer)

	if callback != "" && !cfg.NoCallback {
		f.mu.Lock()
		if !f.closed {
			f.wg.Add(1)
			go f.postCallbacks(cfg, msg, service)
		}
		f.mu.Unlock()
	}
}

// postCallbacks reports queued, sent and the final status, in order, each
// once, as Twilio does without retrying a callback that failed.
func (f *TwilioFake) postCallbacks(cfg TwilioFakeConfig, msg *TwilioMessage, service string) {
	defer f.wg.Done()
	for _, status := range []string{"queued", "sent", cfg.Final} {
		if status == cfg.Final && cfg.CallbackDelay > 0 {
			t := time.NewTimer(cfg.CallbackDelay)
			select {
			case <-t.C:
			case <-f.ctx.Done():
				t.Stop()
				return
			}
		}
		if f.ctx.Err() != nil {
			return
		}
		form := url.Values{
			"MessageSid": {msg.SID}, "SmsSid": {msg.SID},
			"MessageStatus": {status}, "SmsStatus": {status},
			"AccountSid": {cfg.AccountSID}, "From": {msg.From}, "To": {msg.To},
			"ApiVersion": {twilioAPIVersion},
		}
		if service != "" {
			form.Set("MessagingServiceSid", service)
		}
		if status == "undelivered" || status == "failed" {
			form.Set("ErrorCode", "30003")
		}
		result := TwilioCallbackResult{Status: status}
		code, err := f.postCallback(msg.StatusCallback, form, cfg.AuthToken)
		result.HTTPStatus = code
		if err != nil {
			result.Err = err.Error()
		}
		f.mu.Lock()
		msg.Status = status
		msg.Callbacks = append(msg.Callbacks, result)
		f.mu.Unlock()
	}
}

func (f *TwilioFake) postCallback(target string, form url.Values, token string) (int, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("X-Twilio-Signature", provider.TwilioSignature(token, target, form))
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Numbers the fake refuses as Twilio refuses a dead one: one ending in
// TwilioUnsubscribedSuffix answered STOP (21610), one ending in
// TwilioInvalidSuffix is not a valid number (21211).
const (
	TwilioUnsubscribedSuffix = "0000"
	TwilioInvalidSuffix      = "9999"
)

// twilioFakeMessages are the messages Twilio gives with its codes.
var twilioFakeMessages = map[int]string{
	20003: "Authenticate",
	20005: "Account not active",
	20429: "Too Many Requests",
	21211: "Invalid 'To' Phone Number",
	21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
	21602: "Message body is required.",
	21603: "A 'From' phone number is required.",
	21604: "A 'To' phone number is required.",
	21610: "Attempt to send to unsubscribed recipient",
	21612: "The 'To' phone number is not currently reachable via SMS",
	21614: "'To' number is not a valid mobile number",
	21617: "The concatenated message body exceeds the 1600 character limit.",
}

// twilioFail writes Twilio's error JSON.
func twilioFail(w http.ResponseWriter, status, code int, message string, retryAfter time.Duration) {
	if message == "" {
		message = fmt.Sprintf("Error %d", code)
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter.Seconds())))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code": code, "message": message, "status": status,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
	})
}

// twilioE164 reports whether s is +, a non-zero digit, and 7 to 14 more
// digits: what Twilio accepts as a phone number.
func twilioE164(s string) bool {
	digits, ok := strings.CutPrefix(s, "+")
	if !ok || len(digits) < 8 || len(digits) > 15 || digits[0] == '0' {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// twilioSID is prefix and 32 random hex digits, the shape of Twilio's SIDs.
func twilioSID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func twilioNullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
