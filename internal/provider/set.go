package provider

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// DefaultName is the provider that serves every channel without a
// providers file, and any channel the file gives no route: the webhook at
// WEBHOOK_SITE_URL.
const DefaultName = "default"

// Provider is one declared provider, ready to send.
type Provider struct {
	Name string
	Kind string
	// Target says where it sends: a URL's scheme and host, or an SMTP
	// server's host and port, never credentials, a path or a query.
	Target       string
	Timeout      time.Duration
	RatePerSec   int
	AwaitReceipt time.Duration
	OnNoReceipt  string
	Breaker      breaker.Settings
	Sender       Sender
	// ReceiptKey authenticates a webhook provider's receipts (its secret);
	// ReceiptToken a twilio provider's (its auth token). Never shown.
	ReceiptKey   []byte
	ReceiptToken string
	// EventKey verifies a sendgrid provider's Event Webhook batches (its
	// eventPublicKey); nil: it takes none.
	EventKey *ecdsa.PublicKey
}

// Set is the providers and the routes. Without a providers file it holds
// the default provider alone and has no breakers (Explicit is false):
// delivery is exactly what it is without this feature.
type Set struct {
	Explicit  bool
	providers map[string]*Provider
	order     []string
	routes    map[string][]*Provider
	// maxTimeout is the longest provider timeout (MaxTimeout).
	maxTimeout time.Duration
}

// Defaults are the settings a provider takes from the environment.
type Defaults struct {
	// WebhookURL serves every channel without a route (WEBHOOK_SITE_URL).
	WebhookURL string
	// Timeout bounds a send when a provider names none (WEBHOOK_TIMEOUT).
	Timeout time.Duration
	// SigningKey signs the default provider's deliveries, and a webhook
	// provider's that has no secret (WEBHOOK_SIGNING_SECRET); nil: unsigned.
	SigningKey []byte
	// ReceiptsURL is the public base URL of the API's receipts endpoint
	// (RECEIPTS_BASE_URL + "/v1/receipts/"); a twilio provider's status
	// callbacks go there.
	ReceiptsURL string
	// IdleConns per provider host.
	IdleConns int
}

// NewSet builds the providers of f (nil: no providers file).
func NewSet(f *File, d Defaults) (*Set, error) {
	s := &Set{providers: map[string]*Provider{}, routes: map[string][]*Provider{}}
	hook, err := NewWebhook(d.WebhookURL, NewHTTPClient(d.Timeout, d.IdleConns), d.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("WEBHOOK_SIGNING_SECRET: %w", err)
	}
	def := &Provider{
		Name: DefaultName, Kind: KindWebhook, Target: redactURL(d.WebhookURL), Timeout: d.Timeout,
		Sender: hook, ReceiptKey: d.SigningKey,
	}
	if f == nil {
		s.add(def)
		for _, ch := range notification.Channels {
			s.routes[string(ch)] = []*Provider{def}
		}
		return s, nil
	}
	s.Explicit = true
	for _, spec := range f.Providers {
		p, err := build(spec, f.Breaker, d)
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", spec.Name, err)
		}
		s.add(p)
	}
	for _, ch := range notification.Channels {
		names, ok := f.Routes[string(ch)]
		if !ok {
			if taken := s.providers[DefaultName]; taken != nil && taken != def {
				return nil, fmt.Errorf("channel %s has no route, and a provider named %q hides WEBHOOK_SITE_URL's", ch, DefaultName)
			}
			if s.providers[DefaultName] == nil {
				def.Breaker = breakerSettings(nil, f.Breaker)
				s.add(def)
			}
			s.routes[string(ch)] = []*Provider{def}
			continue
		}
		for _, name := range names {
			s.routes[string(ch)] = append(s.routes[string(ch)], s.providers[name])
		}
	}
	return s, nil
}

func (s *Set) add(p *Provider) {
	s.providers[p.Name] = p
	s.order = append(s.order, p.Name)
	s.maxTimeout = max(s.maxTimeout, p.Timeout)
}

func build(spec Spec, defaults BreakerSpec, d Defaults) (*Provider, error) {
	p := &Provider{
		Name: spec.Name, Kind: spec.Kind, Timeout: spec.Timeout, RatePerSec: spec.RatePerSec,
		AwaitReceipt: spec.AwaitReceipt, OnNoReceipt: spec.OnNoReceipt, Breaker: breakerSettings(spec.Breaker, defaults),
	}
	if p.Timeout == 0 {
		p.Timeout = d.Timeout
	}
	if p.OnNoReceipt == "" {
		p.OnNoReceipt = ReceiptDelivered
	}
	switch spec.Kind {
	case KindWebhook:
		key := d.SigningKey
		if spec.Secret != "" {
			var err error
			if key, err = config.DecodeSigningSecret(spec.Secret); err != nil {
				return nil, fmt.Errorf("secret: %w", err)
			}
		}
		if p.AwaitReceipt > 0 && key == nil {
			return nil, errors.New("awaitReceipt needs a secret (or WEBHOOK_SIGNING_SECRET) to authenticate the receipts")
		}
		hook, err := NewWebhook(spec.URL, NewHTTPClient(p.Timeout, d.IdleConns), key)
		if err != nil {
			return nil, err
		}
		p.Target, p.ReceiptKey, p.Sender = redactURL(spec.URL), key, hook
	case KindSMTP:
		port := spec.Port
		smtp, err := NewSMTP(SMTPConfig{
			Host: spec.Host, Port: port, From: spec.From, Username: spec.Username, Password: spec.Password,
			StartTLS: spec.StartTLS, Timeout: p.Timeout, MessageIDDomain: spec.MessageIDDomain,
		})
		if err != nil {
			return nil, err
		}
		if _, err := mail.ParseAddress(spec.From); err != nil {
			return nil, fmt.Errorf("from: %w", err)
		}
		p.Target, p.Sender = fmt.Sprintf("smtp://%s:%d", spec.Host, port), smtp
	case KindTwilio:
		callback := ""
		if p.AwaitReceipt > 0 {
			if d.ReceiptsURL == "" {
				return nil, errors.New("awaitReceipt needs RECEIPTS_BASE_URL, where Twilio sends its status callbacks")
			}
			callback = d.ReceiptsURL + url.PathEscape(spec.Name)
		}
		tw, err := NewTwilio(TwilioConfig{
			URL: spec.URL, AccountSID: spec.AccountSID, AuthToken: spec.AuthToken, From: spec.From,
			StatusCallback: callback, Timeout: p.Timeout,
		})
		if err != nil {
			return nil, err
		}
		base := spec.URL
		if base == "" {
			base = "https://api.twilio.com"
		}
		p.Target, p.Sender, p.ReceiptToken = redactURL(base), tw, spec.AuthToken
	case KindAPNs:
		apns, err := NewAPNs(APNsConfig{
			BaseURL: spec.BaseURL, Environment: spec.Environment, TeamID: spec.TeamID, KeyID: spec.KeyID,
			KeyFile: spec.KeyFile, Topic: spec.Topic, CAFile: spec.CAFile, Timeout: p.Timeout,
		})
		if err != nil {
			return nil, err
		}
		p.Target, p.Sender = redactURL(apns.base), apns
	case KindFCM:
		key, err := ReadFCMCredentials(spec.CredentialsFile)
		if err != nil {
			return nil, err
		}
		fcm, err := NewFCM(FCMConfig{
			CredentialsJSON: key, ProjectID: spec.ProjectID, BaseURL: spec.BaseURL, TokenURL: spec.TokenURL,
			Timeout: p.Timeout, HTTP: NewHTTPClient(p.Timeout, d.IdleConns),
		})
		if err != nil {
			return nil, err
		}
		p.Target, p.Sender = fcm.Target(), fcm
	case KindSendGrid:
		sg, err := NewSendGrid(SendGridConfig{
			BaseURL: spec.BaseURL, APIKey: spec.APIKey, From: spec.From, MessageIDDomain: spec.MessageIDDomain,
			Timeout: p.Timeout, HTTP: NewHTTPClient(p.Timeout, d.IdleConns),
		})
		if err != nil {
			return nil, err
		}
		if spec.EventPublicKey != "" {
			if p.EventKey, err = ParseSendGridPublicKey(spec.EventPublicKey); err != nil {
				return nil, fmt.Errorf("eventPublicKey: %w", err)
			}
		}
		p.Target, p.Sender = redactURL(sg.Base()), sg
	}
	return p, nil
}

func breakerSettings(own *BreakerSpec, defaults BreakerSpec) breaker.Settings {
	b := defaults
	if own != nil {
		pick := func(v, d int) int {
			if v != 0 {
				return v
			}
			return d
		}
		b.FailureThreshold = pick(own.FailureThreshold, b.FailureThreshold)
		b.MinRequests = pick(own.MinRequests, b.MinRequests)
		b.HalfOpenProbes = pick(own.HalfOpenProbes, b.HalfOpenProbes)
		if own.FailureRatio != 0 {
			b.FailureRatio = own.FailureRatio
		}
		if own.Window != 0 {
			b.Window = own.Window
		}
		if own.OpenFor != 0 {
			b.OpenFor = own.OpenFor
		}
	}
	return breaker.Settings{
		FailureThreshold: b.FailureThreshold, FailureRatio: b.FailureRatio, MinRequests: b.MinRequests,
		Window: b.Window, OpenFor: b.OpenFor, HalfOpenProbes: b.HalfOpenProbes,
	}
}

// redactURL is the part of a provider's URL shown to users: its scheme
// and host (Origin); credentials, path and query are not.
func redactURL(raw string) string { return Origin(raw) }

// Route is channel's providers in failover order.
func (s *Set) Route(channel string) []*Provider { return s.routes[channel] }

// Get returns the provider named name.
func (s *Set) Get(name string) (*Provider, bool) {
	p, ok := s.providers[name]
	return p, ok
}

// All returns every provider in the file's order.
func (s *Set) All() []*Provider {
	out := make([]*Provider, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.providers[name])
	}
	return out
}

// Channels returns the channels whose route includes provider name.
func (s *Set) Channels(name string) []string {
	var out []string
	for _, ch := range notification.Channels {
		for _, p := range s.routes[string(ch)] {
			if p.Name == name {
				out = append(out, string(ch))
			}
		}
	}
	return out
}

// BreakerSettings returns every provider's breaker settings, for
// breaker.New; empty without a providers file (no breakers).
func (s *Set) BreakerSettings() map[string]breaker.Settings {
	out := map[string]breaker.Settings{}
	if !s.Explicit {
		return out
	}
	for name, p := range s.providers {
		out[name] = p.Breaker
	}
	return out
}

// Rates returns the per-provider rate limits, keyed as the limiter's keys
// (ProviderLimitKey).
func (s *Set) Rates() map[string]int {
	out := map[string]int{}
	for name, p := range s.providers {
		if p.RatePerSec > 0 {
			out[ProviderLimitKey(name)] = p.RatePerSec
		}
	}
	return out
}

// ProviderLimitKey is the rate limiter's key of a provider's own limit.
func ProviderLimitKey(name string) string { return "provider:" + name }

// MaxTimeout is the longest send timeout of any provider: an attempt's
// deadline must leave room for it.
func (s *Set) MaxTimeout() time.Duration { return s.maxTimeout }

// FromConfig builds the process's providers: PROVIDERS_FILE's when set,
// else the default webhook provider at WEBHOOK_SITE_URL. idleConns bounds
// each provider's kept-alive connections.
func FromConfig(cfg config.Config, idleConns int) (*Set, error) {
	d := Defaults{
		WebhookURL:  cfg.WebhookSiteURL,
		Timeout:     cfg.WebhookTimeout,
		ReceiptsURL: strings.TrimRight(cfg.ReceiptsBaseURL, "/") + "/v1/receipts/",
		IdleConns:   idleConns,
	}
	if cfg.WebhookSigningSecret != "" {
		d.SigningKey, _ = config.DecodeSigningSecret(cfg.WebhookSigningSecret) // validated by config.Parse
	}
	if cfg.ProvidersFile == "" {
		return NewSet(nil, d)
	}
	f, err := ReadFile(cfg.ProvidersFile, nil)
	if err != nil {
		return nil, err
	}
	s, err := NewSet(&f, d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.ProvidersFile, err)
	}
	return s, nil
}
