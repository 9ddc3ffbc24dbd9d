package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"
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
	key, err := presentedKey(c)
	if err != nil {
		return err
	}
	if !s.keys.match(key) {
		return errInvalidAPIKey
	}
	return c.Next()
}

func presentedKey(c *fiber.Ctx) (string, error) {
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		scheme, key, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
			return "", errNoAPIKey
		}
		return strings.TrimSpace(key), nil
	}
	if key := strings.TrimSpace(c.Get("X-API-Key")); key != "" {
		return key, nil
	}
	return "", errNoAPIKey
}
