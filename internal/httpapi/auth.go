package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"dispatch-engine/internal/store"
)

// apiKeys holds the SHA-256 of each key of API_KEYS: comparing digests of
// equal length keeps the comparison's time independent of the key's length
// and content.
type apiKeys [][sha256.Size]byte

func newAPIKeys(keys []string) apiKeys {
	var out apiKeys
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, sha256.Sum256([]byte(k)))
		}
	}
	return out
}

// match reports whether key is one of the keys, in constant time: every key
// is compared, whatever matched before.
func (ks apiKeys) match(key string) bool {
	d := sha256.Sum256([]byte(key))
	found := 0
	for i := range ks {
		found |= subtle.ConstantTimeCompare(d[:], ks[i][:])
	}
	return found == 1
}

// Authentication failures; both answer 401.
var (
	errNoAPIKey      = errors.New("no API key: send Authorization: Bearer <key> or X-API-Key: <key>")
	errInvalidAPIKey = errors.New("the API key is not valid")
)

// tenantLocal is the fiber local holding the caller's store.Tenant.
const tenantLocal = "tenant"

// authenticate admits a request carrying an accepted API key, as
// "Authorization: Bearer <key>" or "X-API-Key: <key>" (when an
// Authorization header is present it is the one used), and records the
// key's tenant for the handlers: every resource they touch is the tenant's.
func (s *Server) authenticate(c *fiber.Ctx) error {
	t, err := s.authorized(c)
	if err != nil {
		return err
	}
	c.Locals(tenantLocal, t)
	return c.Next()
}

// tenant is the authenticated caller's tenant.
func tenant(c *fiber.Ctx) store.Tenant {
	t, _ := c.Locals(tenantLocal).(store.Tenant)
	return t
}

// authorized returns the tenant of the request's accepted key, or why it
// has none. A key of API_KEYS belongs to the default tenant; any other is
// looked up, by its hash, in api_keys on every request, so a revoked or
// expired key is refused at once by every API process.
func (s *Server) authorized(c *fiber.Ctx) (store.Tenant, error) {
	key, err := presentedKey(c)
	if err != nil {
		return store.Tenant{}, err
	}
	return s.tenantOfKey(c.UserContext(), key)
}

func (s *Server) tenantOfKey(ctx context.Context, key string) (store.Tenant, error) {
	if s.keys.match(key) {
		return s.tenants.defaultTenant(ctx, s.pool), nil
	}
	if s.pool == nil {
		return store.Tenant{}, errInvalidAPIKey
	}
	t, err := store.AuthenticateAPIKey(ctx, s.pool, store.HashAPIKey(key))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Tenant{}, errInvalidAPIKey
	case err != nil:
		return store.Tenant{}, err
	}
	s.tenants.known(key)
	return t, nil
}

func presentedKey(c *fiber.Ctx) (string, error) {
	return keyFrom(c.Get(fiber.HeaderAuthorization), c.Get("X-API-Key"))
}

// keyFrom reads the key from the Authorization and X-API-Key header values.
func keyFrom(authorization, xAPIKey string) (string, error) {
	if authorization != "" {
		scheme, key, ok := strings.Cut(strings.TrimSpace(authorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
			return "", errNoAPIKey
		}
		return strings.TrimSpace(key), nil
	}
	if key := strings.TrimSpace(xAPIKey); key != "" {
		return key, nil
	}
	return "", errNoAPIKey
}

// anonymousBodyLimit bounds the body the server reads from a request to
// /v1 without an accepted key (or to the probes): it is refused anyway.
const anonymousBodyLimit = 4 << 10

// bodyLimit is the most body bytes the server reads for a request with
// these headers, decided before any of the body is read (fasthttp's
// HeaderReceived): the route's own limit for a request carrying an
// accepted key, and anonymousBodyLimit otherwise, so an anonymous upload
// of the batch limit costs nothing but its headers.
func (s *Server) bodyLimit(h *fasthttp.RequestHeader) int {
	path, _, _ := strings.Cut(string(h.RequestURI()), "?")
	if !strings.HasPrefix(path, "/v1/") {
		return anonymousBodyLimit
	}
	if isReceiptPath(path) { // signed by its provider, not keyed
		return receiptBodyLimit
	}
	key, err := keyFrom(string(h.Peek(fiber.HeaderAuthorization)), string(h.Peek("X-API-Key")))
	if err != nil || !s.keyKnown(key) {
		return anonymousBodyLimit
	}
	return s.routeBodyLimit(path)
}

// keyKnown reports whether key was accepted lately, to size the body read
// before the request is authenticated (which reads the key's row again): a
// key revoked meanwhile has its body read, and is then refused.
func (s *Server) keyKnown(key string) bool {
	if s.keys.match(key) || s.tenants.isKnown(key) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReadyTimeout)
	defer cancel()
	_, err := s.tenantOfKey(ctx, key)
	return err == nil
}

// routeBodyLimit is a /v1 route's body limit: the batch limit for a batch,
// the single limit for anything else.
func (s *Server) routeBodyLimit(path string) int {
	if path == "/v1/notifications/batch" {
		return s.cfg.BatchBodyLimit
	}
	if isReceiptPath(path) {
		return receiptBodyLimit
	}
	return s.cfg.BodyLimit
}

// knownKeyTTL is how long an accepted key sizes bodies without a lookup.
const knownKeyTTL = time.Minute

// tenantCache holds the default tenant's row (its quotas and weight, for
// the keys of API_KEYS) for a few seconds, and the digests of keys accepted
// lately (for bodyLimit).
type tenantCache struct {
	mu       sync.Mutex
	def      store.Tenant
	defUntil time.Time
	seen     map[[sha256.Size]byte]time.Time
}

// defaultTenantTTL is how long the default tenant's settings are reused.
const defaultTenantTTL = 5 * time.Second

func (tc *tenantCache) defaultTenant(ctx context.Context, q store.Querier) store.Tenant {
	tc.mu.Lock()
	if time.Now().Before(tc.defUntil) {
		t := tc.def
		tc.mu.Unlock()
		return t
	}
	tc.mu.Unlock()
	t := store.DefaultTenant()
	if q != nil {
		if loaded, err := store.GetTenant(ctx, q, store.DefaultTenantID); err == nil {
			t = loaded
		}
	}
	tc.mu.Lock()
	tc.def, tc.defUntil = t, time.Now().Add(defaultTenantTTL)
	tc.mu.Unlock()
	return t
}

func (tc *tenantCache) known(key string) {
	d := sha256.Sum256([]byte(key))
	now := time.Now()
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.seen == nil {
		tc.seen = make(map[[sha256.Size]byte]time.Time)
	}
	if len(tc.seen) > 10_000 { // bounded: drop the expired, or all
		for k, until := range tc.seen {
			if now.After(until) {
				delete(tc.seen, k)
			}
		}
		if len(tc.seen) > 10_000 {
			clear(tc.seen)
		}
	}
	tc.seen[d] = now.Add(knownKeyTTL)
}

func (tc *tenantCache) isKnown(key string) bool {
	d := sha256.Sum256([]byte(key))
	tc.mu.Lock()
	defer tc.mu.Unlock()
	until, ok := tc.seen[d]
	return ok && time.Now().Before(until)
}
