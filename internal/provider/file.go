package provider

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// File is a providers file (PROVIDERS_FILE): the providers, each channel's
// route in failover order, and the breaker defaults.
type File struct {
	Providers []Spec              `yaml:"providers"`
	Routes    map[string][]string `yaml:"routes"`
	Breaker   BreakerSpec         `yaml:"breaker"`
}

// Spec declares one provider. Which settings apply depends on Kind.
// String settings may reference the environment as ${VAR}; a reference to
// an unset variable is an error. Credentials (secret, password, authToken)
// must be such references: the file never holds one.
type Spec struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Timeout bounds one send. Defaults to WEBHOOK_TIMEOUT.
	Timeout time.Duration `yaml:"timeout"`
	// RatePerSec, when set, limits sends to this provider across every
	// worker, on top of the channel's limit.
	RatePerSec int `yaml:"ratePerSec"`
	// AwaitReceipt, when set, makes a send the provider took SENT, and the
	// notification waits this long for the provider's receipt.
	AwaitReceipt time.Duration `yaml:"awaitReceipt"`
	// OnNoReceipt is what a notification becomes when no receipt came in
	// time: delivered (with receipt "none", the default) or failed.
	OnNoReceipt string `yaml:"onNoReceipt"`
	// Breaker overrides the file's breaker defaults for this provider.
	Breaker *BreakerSpec `yaml:"breaker"`

	// webhook: URL and Secret ("whsec_" + base64; signs sends and
	// authenticates receipts; defaults to WEBHOOK_SIGNING_SECRET).
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`

	// smtp
	Host            string `yaml:"host"`
	Port            int    `yaml:"port"`
	From            string `yaml:"from"`
	Username        string `yaml:"username"`
	Password        string `yaml:"password"`
	StartTLS        bool   `yaml:"starttls"`
	MessageIDDomain string `yaml:"messageIdDomain"`

	// twilio: URL (the API base), From, and these.
	AccountSID string `yaml:"accountSid"`
	AuthToken  string `yaml:"authToken"`

	// BaseURL overrides the API base of an HTTP API provider (fcm, apns,
	// sendgrid), for tests and local runs against a fake.
	BaseURL string `yaml:"baseURL"`

	// apns: token auth (TeamID, KeyID and the .p8 key at KeyFile), the
	// app's bundle id (Topic), production or sandbox (Environment), and
	// CAFile, a PEM bundle trusted beside the system's roots, for tests and
	// local runs against a fake APNs only.
	TeamID      string `yaml:"teamId"`
	KeyID       string `yaml:"keyId"`
	KeyFile     string `yaml:"keyFile"`
	Topic       string `yaml:"topic"`
	Environment string `yaml:"environment"`
	CAFile      string `yaml:"caFile"`

	// fcm: the service account's JSON key at CredentialsFile (it holds the
	// private key, so the file, not the setting, is the secret), the
	// Firebase project (ProjectID, default the key's project_id), and
	// TokenURL, where the OAuth2 grant is exchanged (default the key's
	// token_uri), for tests and local runs against a fake.
	CredentialsFile string `yaml:"credentialsFile"`
	ProjectID       string `yaml:"projectId"`
	TokenURL        string `yaml:"tokenURL"`

	// sendgrid: BaseURL, From, MessageIDDomain and these: the API key
	// (APIKey, a ${VAR} reference) and the Event Webhook's verification key
	// (EventPublicKey: base64 DER or PEM, as SendGrid shows it; may be a
	// ${VAR}), which authenticates its event batches as receipts.
	APIKey         string `yaml:"apiKey"`
	EventPublicKey string `yaml:"eventPublicKey"`

	line  int
	lines map[string]int
}

// BreakerSpec configures a provider's circuit breaker. Zero fields take
// the file's breaker section, then the defaults named on each field.
type BreakerSpec struct {
	// FailureThreshold consecutive failures open it. Defaults to 5.
	FailureThreshold int `yaml:"failureThreshold"`
	// FailureRatio, when set (0..1), also opens it when at least
	// MinRequests were made in the current Window and this share failed.
	FailureRatio float64 `yaml:"failureRatio"`
	// MinRequests in the window before FailureRatio applies. Defaults to 20.
	MinRequests int `yaml:"minRequests"`
	// Window is the span FailureRatio and the success ratio of
	// GET /v1/providers count over. Defaults to 60s.
	Window time.Duration `yaml:"window"`
	// OpenFor is how long it stays open before half-open probes. Defaults to 10s.
	OpenFor time.Duration `yaml:"openFor"`
	// HalfOpenProbes is how many sends a half-open breaker lets through at
	// once. Defaults to 1.
	HalfOpenProbes int `yaml:"halfOpenProbes"`

	lines map[string]int
}

var specKeys = map[string]bool{
	"name": true, "kind": true, "timeout": true, "ratePerSec": true, "awaitReceipt": true, "onNoReceipt": true,
	"breaker": true, "url": true, "secret": true, "host": true, "port": true, "from": true, "username": true,
	"password": true, "starttls": true, "messageIdDomain": true, "accountSid": true, "authToken": true,
	"baseURL": true, "teamId": true, "keyId": true, "keyFile": true, "topic": true, "environment": true, "caFile": true,
	"credentialsFile": true, "projectId": true, "tokenURL": true,
	"apiKey": true, "eventPublicKey": true,
}

var breakerKeys = map[string]bool{
	"failureThreshold": true, "failureRatio": true, "minRequests": true, "window": true, "openFor": true, "halfOpenProbes": true,
}

var fileKeys = map[string]bool{"providers": true, "routes": true, "breaker": true}

// lineError is an error at a line of the file, naming the field.
type lineError struct {
	line  int
	field string
	msg   string
}

func (e lineError) Error() string { return fmt.Sprintf("%d: %s: %s", e.line, e.field, e.msg) }

// keyLines checks a mapping node's keys against allowed and returns each
// key's line.
func keyLines(n *yaml.Node, allowed map[string]bool, field string) (map[string]int, error) {
	if n.Kind != yaml.MappingNode {
		return nil, lineError{n.Line, field, "must be a mapping"}
	}
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !allowed[k.Value] {
			return nil, lineError{k.Line, join(field, k.Value), "unknown field"}
		}
		if _, dup := lines[k.Value]; dup {
			return nil, lineError{k.Line, join(field, k.Value), "given twice"}
		}
		lines[k.Value] = k.Line
	}
	return lines, nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// UnmarshalYAML decodes a provider, keeping the line of each field.
func (s *Spec) UnmarshalYAML(n *yaml.Node) error {
	lines, err := keyLines(n, specKeys, "")
	if err != nil {
		return err
	}
	type plain Spec
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = Spec(p)
	s.line, s.lines = n.Line, lines
	return nil
}

// UnmarshalYAML decodes a breaker section, keeping the line of each field.
func (b *BreakerSpec) UnmarshalYAML(n *yaml.Node) error {
	lines, err := keyLines(n, breakerKeys, "")
	if err != nil {
		return err
	}
	type plain BreakerSpec
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*b = BreakerSpec(p)
	b.lines = lines
	return nil
}

func (s Spec) lineOf(field string) int {
	if l, ok := s.lines[field]; ok {
		return l
	}
	return s.line
}

// ReadFile reads and validates a providers file; lookup resolves ${VAR}
// references (os.LookupEnv when nil). Every error names the file, the line
// and the field: "providers.yaml:7: providers[0].url: is required".
func ReadFile(path string, lookup func(string) (string, bool)) (File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("providers file: %w", err)
	}
	f, err := Parse(raw, lookup)
	if err != nil {
		var le lineError
		if errors.As(err, &le) {
			return File{}, fmt.Errorf("%s:%w", path, err)
		}
		return File{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// yamlLine finds the line yaml.v3 names at the start of its own errors.
var yamlLine = regexp.MustCompile(`line (\d+): `)

// Parse decodes and validates a providers file's content (see ReadFile).
func Parse(raw []byte, lookup func(string) (string, bool)) (File, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return File{}, yamlError(err)
	}
	if len(root.Content) == 0 {
		return File{}, lineError{1, "providers", "the file is empty"}
	}
	doc := root.Content[0]
	lines, err := keyLines(doc, fileKeys, "")
	if err != nil {
		return File{}, err
	}
	var f File
	if err := doc.Decode(&f); err != nil {
		return File{}, yamlError(err)
	}
	return f, f.validate(lines, lookup)
}

func yamlError(err error) error {
	var le lineError
	if errors.As(err, &le) {
		return le
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		var line int
		_, _ = fmt.Sscan(m[1], &line)
		return lineError{line, "providers file", strings.TrimPrefix(msg, m[0])}
	}
	return errors.New(msg)
}

// credentialKeys are the settings that hold credentials: only ${VAR}
// references are taken there.
var credentialKeys = map[string]bool{"secret": true, "password": true, "authToken": true, "apiKey": true}

// providerName is what a provider may be called: the name is a path
// segment of its receipts URL, a metric label and part of Redis keys, so
// nothing there needs escaping.
var providerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// envRef is a ${VAR} reference.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand resolves the ${VAR} references of one setting.
func expand(v string, lookup func(string) (string, bool)) (string, error) {
	var missing []string
	out := envRef.ReplaceAllStringFunc(v, func(ref string) string {
		name := envRef.FindStringSubmatch(ref)[1]
		val, ok := lookup(name)
		if !ok {
			missing = append(missing, name)
		}
		return val
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("references %s, which is not set", strings.Join(missing, ", "))
	}
	return out, nil
}

func (f *File) validate(lines map[string]int, lookup func(string) (string, bool)) error {
	var errs []error
	at := func(line int, field, format string, args ...any) {
		errs = append(errs, lineError{line, field, fmt.Sprintf(format, args...)})
	}
	if len(f.Providers) == 0 {
		at(lines["providers"], "providers", "declares no provider")
	}
	f.Breaker.check("breaker", lines["breaker"], at)
	names := map[string]bool{}
	for i := range f.Providers {
		p := &f.Providers[i]
		field := fmt.Sprintf("providers[%d]", i)
		for _, s := range []struct {
			key string
			v   *string
		}{{"url", &p.URL}, {"secret", &p.Secret}, {"host", &p.Host}, {"from", &p.From}, {"username", &p.Username},
			{"password", &p.Password}, {"accountSid", &p.AccountSID}, {"authToken", &p.AuthToken}, {"messageIdDomain", &p.MessageIDDomain},
			{"baseURL", &p.BaseURL},
			{"teamId", &p.TeamID}, {"keyId", &p.KeyID}, {"keyFile", &p.KeyFile}, {"topic", &p.Topic}, {"environment", &p.Environment}, {"caFile", &p.CAFile},
			{"credentialsFile", &p.CredentialsFile}, {"projectId", &p.ProjectID}, {"tokenURL", &p.TokenURL},
			{"apiKey", &p.APIKey}, {"eventPublicKey", &p.EventPublicKey}} {
			if credentialKeys[s.key] && *s.v != "" && !envRef.MatchString(*s.v) {
				// A file is read, copied and committed; a secret in it leaks.
				at(p.lineOf(s.key), field+"."+s.key, "must reference the environment (${VAR}), not hold the credential itself")
			}
			v, err := expand(*s.v, lookup)
			if err != nil {
				at(p.lineOf(s.key), field+"."+s.key, "%v", err)
			}
			*s.v = v
		}
		switch {
		case p.Name == "":
			at(p.lineOf("name"), field+".name", "is required")
		case !providerName.MatchString(p.Name):
			at(p.lineOf("name"), field+".name", "%q is not a provider name: 1 to 63 letters, digits, '.', '_' or '-', "+
				"beginning with a letter or digit (it is a path segment of the provider's receipts URL, /v1/receipts/{name})", p.Name)
		case names[p.Name]:
			at(p.lineOf("name"), field+".name", "%q is declared twice", p.Name)
		}
		names[p.Name] = true
		require := func(key, v string) {
			if v == "" {
				at(p.lineOf(key), field+"."+key, "is required for kind %s", p.Kind)
			}
		}
		switch p.Kind {
		case KindWebhook:
			require("url", p.URL)
			checkURL(p.URL, p.lineOf("url"), field+".url", at)
			if p.Secret != "" && !strings.HasPrefix(p.Secret, "whsec_") {
				at(p.lineOf("secret"), field+".secret", `must start with "whsec_" (a Standard Webhooks secret)`)
			}
		case KindSMTP:
			require("host", p.Host)
			require("from", p.From)
			if p.AwaitReceipt > 0 {
				at(p.lineOf("awaitReceipt"), field+".awaitReceipt", "is not supported for kind smtp (SMTP has no receipts here)")
			}
			if p.Port < 0 || p.Port > 65535 {
				at(p.lineOf("port"), field+".port", "%d is not a port", p.Port)
			}
		case KindTwilio:
			require("accountSid", p.AccountSID)
			require("authToken", p.AuthToken)
			require("from", p.From)
			if p.URL != "" {
				checkURL(p.URL, p.lineOf("url"), field+".url", at)
			}
		case KindFCM:
			require("credentialsFile", p.CredentialsFile)
			checkURL(p.BaseURL, p.lineOf("baseURL"), field+".baseURL", at)
			checkURL(p.TokenURL, p.lineOf("tokenURL"), field+".tokenURL", at)
			if p.AwaitReceipt > 0 {
				at(p.lineOf("awaitReceipt"), field+".awaitReceipt", "is not supported for kind fcm (FCM sends no delivery receipts)")
			}
		case KindSendGrid:
			require("apiKey", p.APIKey)
			require("from", p.From)
			checkURL(p.BaseURL, p.lineOf("baseURL"), field+".baseURL", at)
			if p.EventPublicKey != "" {
				if _, err := ParseSendGridPublicKey(p.EventPublicKey); err != nil {
					at(p.lineOf("eventPublicKey"), field+".eventPublicKey", "%v", err)
				}
			}
			if p.AwaitReceipt > 0 && p.EventPublicKey == "" {
				at(p.lineOf("awaitReceipt"), field+".awaitReceipt", "needs eventPublicKey, which authenticates the Event Webhook's batches")
			}
		case KindAPNs:
			require("teamId", p.TeamID)
			require("keyId", p.KeyID)
			require("keyFile", p.KeyFile)
			require("topic", p.Topic)
			switch p.Environment {
			case "", APNsProduction, APNsSandbox:
			default:
				at(p.lineOf("environment"), field+".environment", "%q is not %s or %s", p.Environment, APNsProduction, APNsSandbox)
			}
			checkURL(p.BaseURL, p.lineOf("baseURL"), field+".baseURL", at)
			if p.AwaitReceipt > 0 {
				at(p.lineOf("awaitReceipt"), field+".awaitReceipt", "is not supported for kind apns (APNs sends no delivery receipts)")
			}
		case "":
			at(p.lineOf("kind"), field+".kind", "is required (webhook, smtp, twilio, apns, fcm or sendgrid)")
		default:
			at(p.lineOf("kind"), field+".kind", "%q is not webhook, smtp, twilio, apns, fcm or sendgrid", p.Kind)
		}
		if p.Timeout < 0 {
			at(p.lineOf("timeout"), field+".timeout", "must not be negative")
		}
		if p.RatePerSec < 0 {
			at(p.lineOf("ratePerSec"), field+".ratePerSec", "must not be negative")
		}
		if p.AwaitReceipt < 0 {
			at(p.lineOf("awaitReceipt"), field+".awaitReceipt", "must not be negative")
		}
		switch p.OnNoReceipt {
		case "", ReceiptDelivered, ReceiptFailed:
		default:
			at(p.lineOf("onNoReceipt"), field+".onNoReceipt", "%q is not delivered or failed", p.OnNoReceipt)
		}
		if p.Breaker != nil {
			p.Breaker.check(field+".breaker", p.lineOf("breaker"), at)
		}
	}
	routeLines := lines["routes"]
	channels := make([]string, 0, len(f.Routes))
	for ch := range f.Routes {
		channels = append(channels, ch)
	}
	sort.Strings(channels)
	for _, ch := range channels {
		field := "routes." + ch
		if !notification.ValidChannel(ch) {
			at(routeLines, field, "%q is not a channel (sms, email, push)", ch)
			continue
		}
		if len(f.Routes[ch]) == 0 {
			at(routeLines, field, "names no provider")
		}
		seen := map[string]bool{}
		for _, name := range f.Routes[ch] {
			if !names[name] {
				at(routeLines, field, "names %q, which is not a declared provider", name)
			}
			if seen[name] {
				at(routeLines, field, "names %q twice", name)
			}
			seen[name] = true
		}
	}
	return errors.Join(errs...)
}

func checkURL(raw string, line int, field string, at func(int, string, string, ...any)) {
	if raw == "" {
		return
	}
	if !strings.HasPrefix(raw, "http://") && !strings.HasPrefix(raw, "https://") {
		at(line, field, "must be an http:// or https:// URL")
	}
}

func (b BreakerSpec) check(field string, line int, at func(int, string, string, ...any)) {
	l := func(key string) int {
		if v, ok := b.lines[key]; ok {
			return v
		}
		return line
	}
	if b.FailureThreshold < 0 {
		at(l("failureThreshold"), field+".failureThreshold", "must not be negative")
	}
	if b.FailureRatio < 0 || b.FailureRatio > 1 {
		at(l("failureRatio"), field+".failureRatio", "%g is not between 0 and 1", b.FailureRatio)
	}
	if b.MinRequests < 0 || b.HalfOpenProbes < 0 || b.Window < 0 || b.OpenFor < 0 {
		at(line, field, "values must not be negative")
	}
}

// Receipt outcomes: what a provider reported about a message it took, and
// what OnNoReceipt can make of silence.
const (
	ReceiptDelivered = "delivered"
	ReceiptFailed    = "failed"
	// ReceiptNone is recorded when no receipt came in time and the
	// notification was taken as delivered.
	ReceiptNone = "none"
)
