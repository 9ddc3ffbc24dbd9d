// Package sink is a local provider: it receives webhooks, remembers what
// arrived per webhook-id, and can be told to fail (a share of requests, the
// first N attempts of each id, with a given status) or to hang. Beside it
// are an SMTP server that records the mail it is sent (mail.go) and a fake
// of Twilio's Messages API that posts status callbacks (twilio.go), and of
// the FCM HTTP v1 API with its OAuth2 token endpoint (fcm.go), and a fake
// APNs over TLS and HTTP/2 that checks the provider token (apns.go). make run,
// the tests and the benchmarks deliver to them, since no real provider is
// reachable from our machines.
package sink

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Config says how the sink answers. The zero value accepts everything.
type Config struct {
	// FailRate is the share (0..1) of requests answered with FailStatus.
	FailRate float64 `json:"failRate"`
	// FailFirst answers the first N requests of each webhook-id with FailStatus.
	FailFirst int `json:"failFirst"`
	// FailStatus is the status of failed answers. Default 503.
	FailStatus int `json:"failStatus"`
	// HangFirst holds the first N requests of each webhook-id open until the
	// caller gives up (a provider that never answers).
	HangFirst int `json:"hangFirst"`
	// Hang holds every request open until the caller gives up (a provider
	// that stopped answering), while set.
	Hang bool `json:"hang"`
	// Latency delays every answer.
	Latency time.Duration `json:"latency"`
	// RetryAfter, when set, goes with failed answers as a Retry-After header
	// (whole seconds).
	RetryAfter time.Duration `json:"retryAfter"`
	// Reply, when set, is the body of every 2xx answer instead of the JSON
	// acknowledgement (any bytes: a binary reply, NUL bytes), with
	// ReplyContentType.
	Reply            []byte `json:"reply,omitempty"`
	ReplyContentType string `json:"replyContentType,omitempty"`
	// RedirectTo, when set, answers every request with RedirectStatus
	// (default 307) and this Location instead of taking it.
	RedirectTo     string `json:"redirectTo,omitempty"`
	RedirectStatus int    `json:"redirectStatus,omitempty"`
	// StallAfterStatus answers 200 at once, then holds the rest of the reply
	// until the caller gives up: the provider took the notification, and
	// the caller learns it just as its call may be aborted.
	StallAfterStatus bool `json:"stallAfterStatus,omitempty"`
	// Receipts, when set, makes the sink report on every webhook it took,
	// as a provider with delivery receipts does.
	Receipts *Receipts `json:"receipts,omitempty"`
}

// Receipts says how the sink sends receipts: a signed POST of
// {"webhookId","messageId","status","reason"} to URL + the request's path
// (its first segment names the provider: /sms-primary → {URL}sms-primary);
// messageId is the request's X-Dispatch-Message-Id, the message the receipt
// reports on.
type Receipts struct {
	// URL is the receipts endpoint's base, e.g. http://127.0.0.1:8080/v1/receipts/.
	URL string `json:"url"`
	// Secret signs each receipt (Standard Webhooks, "whsec_" + base64).
	Secret string `json:"secret"`
	// Status is what the receipt reports: delivered (default) or failed.
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Delay is how long after the answer the receipt is sent.
	Delay time.Duration `json:"delay,omitempty"`
	// Unnamed sends receipts without messageId, as providers did before
	// receipts named their message.
	Unnamed bool `json:"unnamed,omitempty"`
}

// Record is what arrived for one webhook-id.
type Record struct {
	ID string `json:"id"`
	// Requests counts every request, answered or not.
	Requests int `json:"requests"`
	// Delivered counts requests answered 2xx.
	Delivered int             `json:"delivered"`
	FirstAt   time.Time       `json:"firstAt"`
	LastAt    time.Time       `json:"lastAt"`
	Body      json.RawMessage `json:"body"`
	Headers   http.Header     `json:"headers"`
	// Paths counts the requests by path (by provider, when each plays one).
	Paths map[string]int `json:"paths"`
	// Receipts counts the receipts sent and the answers they got.
	Receipts []int `json:"receipts,omitempty"`
}

// Stats sums up everything received.
type Stats struct {
	Requests  int `json:"requests"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
	Hung      int `json:"hung"`
	UniqueIDs int `json:"uniqueIds"`
	// Duplicates counts ids answered 2xx more than once.
	Duplicates int `json:"duplicates"`
	// Mismatched counts requests whose body's id differs from their
	// webhook-id (a retry must carry the same webhook-id).
	Mismatched int `json:"mismatched"`
	// InFlight is the requests being handled now; MaxInFlight the most at once.
	InFlight    int `json:"inFlight"`
	MaxInFlight int `json:"maxInFlight"`
}

// arrival is one request's arrival.
type arrival struct {
	at      time.Time
	channel string
}

// Sink is the provider's HTTP handler.
type Sink struct {
	mu  sync.Mutex
	cfg Config
	// paths holds the configs of paths told apart (PUT /_sink/config/{path}),
	// so one sink plays several providers.
	paths   map[string]Config
	byPath  map[string]*Stats
	records map[string]*Record
	stats   Stats
	arrived chan string
	// arrivals is when each request arrived, in order, with its channel.
	arrivals []arrival
	log      func(format string, args ...any)
}

// New returns a Sink answering per cfg; logf, when not nil, logs each webhook.
func New(cfg Config, logf func(format string, args ...any)) *Sink {
	if cfg.FailStatus == 0 {
		cfg.FailStatus = http.StatusServiceUnavailable
	}
	return &Sink{cfg: cfg, records: map[string]*Record{}, paths: map[string]Config{}, byPath: map[string]*Stats{}, log: logf}
}

// ServeHTTP takes webhooks on any path; /_sink/ is the control API:
// GET /_sink/stats, GET /_sink/stats/{path}, GET /_sink/deliveries/{id},
// PUT /_sink/config, PUT /_sink/config/{path} (one path's answers: one sink
// plays several providers), DELETE /_sink/deliveries.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sink/") {
		s.control(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST a webhook", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	id := r.Header.Get("webhook-id")
	var payload struct {
		ID      string `json:"id"`
		Channel string `json:"channel"`
	}
	_ = json.Unmarshal(body, &payload)

	s.mu.Lock()
	s.stats.InFlight++
	s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.stats.InFlight)
	defer func() {
		s.mu.Lock()
		s.stats.InFlight--
		s.mu.Unlock()
	}()
	if payload.ID != id {
		s.stats.Mismatched++
	}
	cfg, own := s.paths[r.URL.Path]
	if !own {
		cfg = s.cfg
	}
	ps := s.byPath[r.URL.Path]
	if ps == nil {
		ps = &Stats{}
		s.byPath[r.URL.Path] = ps
	}
	ps.Requests++
	rec := s.records[id]
	if rec == nil {
		rec = &Record{ID: id, FirstAt: time.Now(), Paths: map[string]int{}}
		s.records[id] = rec
		s.stats.UniqueIDs++
	}
	rec.Paths[r.URL.Path]++
	rec.Requests++
	rec.LastAt = time.Now()
	s.arrivals = append(s.arrivals, arrival{at: rec.LastAt, channel: payload.Channel})
	rec.Body = json.RawMessage(body)
	rec.Headers = r.Header.Clone()
	n := rec.Requests
	s.stats.Requests++
	hang := cfg.Hang || n <= cfg.HangFirst
	fail := !hang && (n <= cfg.HangFirst+cfg.FailFirst || (cfg.FailRate > 0 && rand.Float64() < cfg.FailRate))
	if hang {
		s.stats.Hung++
	}
	s.mu.Unlock()
	s.notify(id)

	if hang {
		<-r.Context().Done()
		return
	}
	if cfg.Latency > 0 {
		select {
		case <-time.After(cfg.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if cfg.RedirectTo != "" {
		status := cfg.RedirectStatus
		if status == 0 {
			status = http.StatusTemporaryRedirect
		}
		s.mu.Lock()
		s.stats.Failed++
		s.mu.Unlock()
		s.logf("webhook %s attempt %d: redirecting (%d)", id, n, status)
		w.Header().Set("Location", cfg.RedirectTo)
		w.WriteHeader(status)
		return
	}
	if fail {
		s.mu.Lock()
		s.stats.Failed++
		ps.Failed++
		s.mu.Unlock()
		s.logf("webhook %s attempt %d: answering %d", id, n, cfg.FailStatus)
		if cfg.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(cfg.RetryAfter.Seconds())))
		}
		w.WriteHeader(cfg.FailStatus)
		_, _ = w.Write([]byte(`{"error":"sink told to fail"}`))
		return
	}
	s.mu.Lock()
	rec.Delivered++
	s.stats.Delivered++
	ps.Delivered++
	if rec.Delivered == 2 {
		s.stats.Duplicates++
	}
	s.mu.Unlock()
	s.logf("webhook %s attempt %d: delivered (%d bytes)", id, n, len(body))
	if cfg.Reply != nil {
		if cfg.ReplyContentType != "" {
			w.Header().Set("Content-Type", cfg.ReplyContentType)
		}
		_, _ = w.Write(cfg.Reply)
	} else {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"received"}`))
	}
	if cfg.Receipts != nil {
		go s.sendReceipt(*cfg.Receipts, r.URL.Path, id, r.Header.Get("X-Dispatch-Message-Id"))
	}
	if cfg.StallAfterStatus {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		<-r.Context().Done()
	}
}

// MaxInWindow is the most requests for channel ("" for any) that arrived
// within any window of the given length (a sliding window over every
// arrival since the last Reset): what a provider with a per-second limit
// would have seen at worst.
func (s *Sink) MaxInWindow(window time.Duration, channel string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var times []time.Time
	for _, a := range s.arrivals {
		if channel == "" || a.channel == channel {
			times = append(times, a.at)
		}
	}
	best, lo := 0, 0
	for hi, at := range times {
		for at.Sub(times[lo]) >= window {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// Arrivals returns a channel that receives the webhook-id of every request
// as it arrives (answered or not). Sends never block; an arrival is dropped
// when the channel is full.
func (s *Sink) Arrivals(buffer int) <-chan string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.arrived = make(chan string, buffer)
	return s.arrived
}

func (s *Sink) notify(id string) {
	s.mu.Lock()
	ch := s.arrived
	s.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- id:
	default:
	}
}

// Record returns what arrived for id.
func (s *Sink) Record(id string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[id]
	if !ok {
		return Record{}, false
	}
	return *rec, true
}

// PathStats returns the totals of requests to path.
func (s *Sink) PathStats(path string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.byPath[path]; ps != nil {
		return *ps
	}
	return Stats{}
}

// SetPathConfig makes requests to path answer per cfg (the others keep
// the sink's config).
func (s *Sink) SetPathConfig(path string, cfg Config) {
	if cfg.FailStatus == 0 {
		cfg.FailStatus = http.StatusServiceUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paths[path] = cfg
}

// Stats returns the totals.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// SetConfig changes how the sink answers from now on.
func (s *Sink) SetConfig(cfg Config) {
	if cfg.FailStatus == 0 {
		cfg.FailStatus = http.StatusServiceUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
}

// Reset forgets every record and total.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = map[string]*Record{}
	s.stats = Stats{}
	s.byPath = map[string]*Stats{}
	s.arrivals = nil
}

func (s *Sink) control(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	path := strings.TrimPrefix(r.URL.Path, "/_sink/")
	switch {
	case r.Method == http.MethodGet && path == "stats":
		_ = json.NewEncoder(w).Encode(s.Stats())
	case r.Method == http.MethodGet && path == "config":
		s.mu.Lock()
		cfg := s.cfg
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(cfg)
	case r.Method == http.MethodPut && path == "config":
		var cfg Config
		if err := json.NewDecoder(r.Body).Decode(&cfg); err != nil {
			http.Error(w, `{"error":"config must be JSON"}`, http.StatusBadRequest)
			return
		}
		s.SetConfig(cfg)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && strings.HasPrefix(path, "config/"):
		var cfg Config
		if err := json.NewDecoder(r.Body).Decode(&cfg); err != nil {
			http.Error(w, `{"error":"config must be JSON"}`, http.StatusBadRequest)
			return
		}
		s.SetPathConfig("/"+strings.TrimPrefix(path, "config/"), cfg)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "stats/"):
		_ = json.NewEncoder(w).Encode(s.PathStats("/" + strings.TrimPrefix(path, "stats/")))
	case r.Method == http.MethodDelete && path == "deliveries":
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "deliveries/"):
		rec, ok := s.Record(strings.TrimPrefix(path, "deliveries/"))
		if !ok {
			http.Error(w, `{"error":"nothing received for this id"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(rec)
	default:
		http.Error(w, `{"error":"unknown control endpoint"}`, http.StatusNotFound)
	}
}

func (s *Sink) logf(format string, args ...any) {
	if s.log != nil {
		s.log(format, args...)
	}
}

// sendReceipt reports on a webhook the sink took (message messageID of
// notification id), signed as Standard Webhooks under rc.Secret, to rc.URL +
// the first segment of path.
func (s *Sink) sendReceipt(rc Receipts, path, id, messageID string) {
	if rc.Delay > 0 {
		time.Sleep(rc.Delay) // the provider's own pace, not a test's wait
	}
	status := rc.Status
	if status == "" {
		status = "delivered"
	}
	receipt := map[string]string{"webhookId": id, "status": status, "reason": rc.Reason}
	if messageID != "" && !rc.Unnamed {
		receipt["messageId"] = messageID
	}
	body, _ := json.Marshal(receipt)
	code := 0
	defer func() {
		s.mu.Lock()
		if rec := s.records[id]; rec != nil {
			rec.Receipts = append(rec.Receipts, code)
		}
		s.mu.Unlock()
		s.logf("receipt for %s (%s): %d", id, status, code)
	}()
	wh, err := standardwebhooks.NewWebhook(rc.Secret)
	if err != nil {
		return
	}
	msgID := "rcpt_" + id + "_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	now := time.Now()
	sig, err := wh.Sign(msgID, now, body)
	if err != nil {
		return
	}
	provider, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	req, err := http.NewRequest(http.MethodPost, rc.URL+provider, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := receiptClient.Do(req)
	if err != nil {
		return
	}
	_ = resp.Body.Close()
	code = resp.StatusCode
}

var receiptClient = &http.Client{Timeout: 10 * time.Second}
