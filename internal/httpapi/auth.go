package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// apiKeys holds the SHA-256 of each accepted key: comparing digests of
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

// authenticate admits a request carrying an accepted API key, as
// "Authorization: Bearer <key>" or "X-API-Key: <key>". When an Authorization
// header is present it is the one used.
func (s *Server) authenticate(c *fiber.Ctx) error {
	if _, err := s.authorized(c); err != nil {
		return err
	}
	return c.Next()
}

// authorized returns the request's accepted key, or why it has none.
func (s *Server) authorized(c *fiber.Ctx) (string, error) {
	key, err := presentedKey(c)
	if err != nil {
		return "", err
	}
	if !s.keys.match(key) {
		return "", errInvalidAPIKey
	}
	return key, nil
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
	key, err := keyFrom(string(h.Peek(fiber.HeaderAuthorization)), string(h.Peek("X-API-Key")))
	if err != nil || !s.keys.match(key) {
		return anonymousBodyLimit
	}
	return s.routeBodyLimit(path)
}

// routeBodyLimit is a /v1 route's body limit: the batch limit for a batch,
// the single limit for anything else.
func (s *Server) routeBodyLimit(path string) int {
	if path == "/v1/notifications/batch" {
		return s.cfg.BatchBodyLimit
	}
	return s.cfg.BodyLimit
}
