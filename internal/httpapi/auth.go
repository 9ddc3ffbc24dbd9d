package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
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
// The key is looked up inside the in-flight bound (admitThen) and within
// authTimeout: a database that does not answer makes a 503 with
// Retry-After, never a request that hangs.
func (s *Server) authenticate(c *fiber.Ctx) error {
	return s.admitThen(c, func() error {
		t, err := s.authorized(c)
		if err != nil {
			return err
		}
		c.Locals(tenantLocal, t)
		return c.Next()
	})
}

// authTimeout bounds the database lookups of authentication (a stored
// key's row, the default tenant's settings): long enough that a database
// busy under load still answers, short enough that a silent one is a 503
// within 2 s.
const authTimeout = 1500 * time.Millisecond

// unknownKeyTTL is how long a key that no row holds (unknown, revoked or
// expired) is refused without asking the database again: a key created
// meanwhile is accepted at most this long after.
const unknownKeyTTL = 5 * time.Second

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
		return s.tenants.defaultTenant(ctx, s.pool)
	}
	if s.pool == nil || s.tenants.isUnknown(key) {
		return store.Tenant{}, errInvalidAPIKey
	}
	if err := s.tenants.databaseSilent(); err != nil {
		return store.Tenant{}, err
	}
	actx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	t, err := store.AuthenticateAPIKey(actx, s.pool, store.HashAPIKey(key))
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.tenants.unknown(key)
		return store.Tenant{}, errInvalidAPIKey
	case err != nil:
		s.tenants.lookupFailed(ctx, err)
		return store.Tenant{}, err
	}
	s.tenants.known(key)
	return t, nil
}

// errDatabaseSilent refuses (503) a request needing an authentication
// lookup within databaseSilence of one that PostgreSQL did not answer.
var errDatabaseSilent = fmt.Errorf("the database did not answer an authentication lookup a moment ago: %w", context.DeadlineExceeded)

// databaseSilence is how long after an authentication lookup that
// PostgreSQL did not answer (in authTimeout, or at all) the lookups that
// follow are refused at once, instead of each waiting out authTimeout
// (a request whose body is sized by a lookup would otherwise wait twice).
const databaseSilence = time.Second

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
		return s.receiptLimit(path)
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
//
// The lookup takes a slot of the in-flight bound, if one is free at once
// (otherwise the body is sized as anonymous); its answer, either way, is
// remembered, so authenticating the request that follows does not ask
// again for an unknown key.
func (s *Server) keyKnown(key string) bool {
	if s.keys.match(key) || s.tenants.isKnown(key) {
		return true
	}
	if s.pool == nil || s.tenants.isUnknown(key) {
		return false
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return false
	}
	defer func() { <-s.slots }()
	_, err := s.tenantOfKey(context.Background(), key)
	return err == nil
}

// routeBodyLimit is a /v1 route's body limit: the batch limit for a batch,
// the single limit for anything else.
func (s *Server) routeBodyLimit(path string) int {
	if path == "/v1/notifications/batch" {
		return s.cfg.BatchBodyLimit
	}
	if isReceiptPath(path) {
		return s.receiptLimit(path)
	}
	return s.cfg.BodyLimit
}

// knownKeyTTL is how long an accepted key sizes bodies without a lookup.
const knownKeyTTL = time.Minute

// tenantCache holds the default tenant's row (its quotas and weight, for
// the keys of API_KEYS) for a few seconds, the digests of keys accepted
// lately (for bodyLimit), and of keys refused lately (unknownKeyTTL).
type tenantCache struct {
	mu       sync.Mutex
	def      store.Tenant
	defRead  bool // def was read from its row once
	defUntil time.Time
	seen     map[[sha256.Size]byte]time.Time
	refused  map[[sha256.Size]byte]time.Time
	// silentUntil is the end of the databaseSilence after a lookup that
	// PostgreSQL did not answer.
	silentUntil time.Time
}

// databaseSilent is errDatabaseSilent within databaseSilence of a lookup
// that PostgreSQL did not answer, nil otherwise.
func (tc *tenantCache) databaseSilent() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if time.Now().Before(tc.silentUntil) {
		return errDatabaseSilent
	}
	return nil
}

// lookupFailed starts a databaseSilence when err says PostgreSQL did not
// answer, unless the caller gave up first (ctx is the caller's, without
// the lookup's own deadline).
func (tc *tenantCache) lookupFailed(ctx context.Context, err error) {
	if !store.Unavailable(err) || ctx.Err() != nil {
		return
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.silentUntil = time.Now().Add(databaseSilence)
}

// defaultTenantTTL is how long the default tenant's settings are reused.
const defaultTenantTTL = 5 * time.Second

// defaultTenant is the default tenant's row, read at most every
// defaultTenantTTL. Only an answer is kept: a database that does not
// answer is the request's error (503), and any other failure to read the
// row serves the last row read (else the tenant as the migration makes it)
// to this request alone; the next one reads again.
func (tc *tenantCache) defaultTenant(ctx context.Context, q store.Querier) (store.Tenant, error) {
	tc.mu.Lock()
	if time.Now().Before(tc.defUntil) {
		t := tc.def
		tc.mu.Unlock()
		return t, nil
	}
	tc.mu.Unlock()
	t := store.DefaultTenant()
	if q != nil {
		if err := tc.databaseSilent(); err != nil {
			return store.Tenant{}, err
		}
		actx, cancel := context.WithTimeout(ctx, authTimeout)
		defer cancel()
		loaded, err := store.GetTenant(actx, q, store.DefaultTenantID)
		switch {
		case err == nil:
			t = loaded
		case errors.Is(err, store.ErrNotFound): // no row: the migration's default is the answer
		case store.Unavailable(err):
			tc.lookupFailed(ctx, err)
			return store.Tenant{}, err
		default:
			tc.mu.Lock()
			defer tc.mu.Unlock()
			if tc.defRead {
				return tc.def, nil
			}
			return t, nil
		}
	}
	tc.mu.Lock()
	tc.def, tc.defRead, tc.defUntil = t, true, time.Now().Add(defaultTenantTTL)
	tc.mu.Unlock()
	return t, nil
}

func (tc *tenantCache) known(key string) {
	d := sha256.Sum256([]byte(key))
	tc.mu.Lock()
	defer tc.mu.Unlock()
	delete(tc.refused, d)
	remember(&tc.seen, d, knownKeyTTL)
}

func (tc *tenantCache) isKnown(key string) bool {
	d := sha256.Sum256([]byte(key))
	tc.mu.Lock()
	defer tc.mu.Unlock()
	until, ok := tc.seen[d]
	return ok && time.Now().Before(until)
}

// unknown remembers that no row holds key, for unknownKeyTTL; a key that
// was accepted before (since revoked) no longer sizes bodies.
func (tc *tenantCache) unknown(key string) {
	d := sha256.Sum256([]byte(key))
	tc.mu.Lock()
	defer tc.mu.Unlock()
	delete(tc.seen, d)
	remember(&tc.refused, d, unknownKeyTTL)
}

func (tc *tenantCache) isUnknown(key string) bool {
	d := sha256.Sum256([]byte(key))
	tc.mu.Lock()
	defer tc.mu.Unlock()
	until, ok := tc.refused[d]
	return ok && time.Now().Before(until)
}

// maxRemembered bounds each map of key digests: a flood of distinct keys
// drops the expired ones, or all.
const maxRemembered = 10_000

// remember records d in *m until ttl from now; the caller holds the lock.
func remember(m *map[[sha256.Size]byte]time.Time, d [sha256.Size]byte, ttl time.Duration) {
	now := time.Now()
	if *m == nil {
		*m = make(map[[sha256.Size]byte]time.Time)
	}
	if len(*m) > maxRemembered {
		for k, until := range *m {
			if now.After(until) {
				delete(*m, k)
			}
		}
		if len(*m) > maxRemembered {
			clear(*m)
		}
	}
	(*m)[d] = now.Add(ttl)
}
