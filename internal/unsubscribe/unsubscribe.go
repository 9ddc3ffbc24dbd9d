// Package unsubscribe makes and checks the tokens of one-click unsubscribe
// links (RFC 8058, RFC 2369): the List-Unsubscribe header of an email
// points at {PUBLIC_BASE_URL}/u/{token}, and a POST there opts the person
// out of the email's category without an API key.
//
// A token names the tenant, the channel, the address the email went to,
// the category and when it was issued; it is valid for TTL (90 days, well
// past the 60 RFC 8058's senders are asked to honour). It carries the
// address, not a profile id: the opt-out lands on whichever profile holds
// the address when the person clicks (store.RecordOptOut), else on the
// address itself.
//
// The token is sealed, not only signed, because its URL reaches access
// logs, proxies and mail scanners, and it must not show them the address.
// The construction is SIV (Rogaway and Shrimpton's synthetic IV): the tag
// is HMAC-SHA256 of the payload, cut to 128 bits, and is also the IV of
// AES-256-CTR over the payload, so token = base64url(tag || ciphertext)
// with no padding, no longer than a signed plain payload would be.
// Checking decrypts with the tag and recomputes it over the plaintext in
// constant time: any changed, cut or forged byte fails. Both keys derive
// from one 32-byte secret kept in the signing_keys table (purpose
// "unsubscribe"), made by the first process to start and shared by all.
package unsubscribe

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// KeyPurpose is the signing_keys row of the unsubscribe secret.
const KeyPurpose = "unsubscribe"

// TTL is how long a token stays valid after it was issued.
const TTL = 90 * 24 * time.Hour

// KeySize is the length of the secret a Signer is made from.
const KeySize = 32

const (
	tagSize = 16 // bytes of HMAC-SHA256 kept: 128 bits
	version = 1
	// maxToken bounds what Verify decodes: a token is the tag, 17 bytes
	// of fixed fields and three short strings; anything longer is not ours.
	maxToken = 2048
)

// Errors of Verify. Both mean the link cannot be used; ErrExpired says the
// token was ours but is too old.
var (
	ErrInvalid = errors.New("unsubscribe token is not valid")
	ErrExpired = errors.New("unsubscribe token has expired")
)

// Token is what an unsubscribe link stands for.
type Token struct {
	TenantID uuid.UUID
	// Channel is the channel of the message ("email").
	Channel string
	// Address is the address the message went to, as the notification
	// stores its recipient.
	Address string
	// Category is the notification's category; the link opts out of it.
	Category string
	// IssuedAt is when the token was made, to the second; Sign sets it to
	// now when zero.
	IssuedAt time.Time
}

// Signer seals and opens tokens with one secret. It is safe for
// concurrent use.
type Signer struct {
	macKey []byte
	block  cipher.Block
	now    func() time.Time
}

// New returns a Signer for secret, which must be KeySize bytes at least.
func New(secret []byte) (*Signer, error) {
	if len(secret) < KeySize {
		return nil, fmt.Errorf("unsubscribe: the secret is %d bytes, %d needed", len(secret), KeySize)
	}
	// Two keys from one secret, each a PRF of it under its own label, so
	// the MAC and the cipher never share a key.
	block, err := aes.NewCipher(derive(secret, "dispatch-engine unsubscribe cipher"))
	if err != nil {
		return nil, fmt.Errorf("unsubscribe: %w", err)
	}
	return &Signer{macKey: derive(secret, "dispatch-engine unsubscribe mac"), block: block, now: time.Now}, nil
}

// Load returns the Signer of the secret every process shares: it offers a
// fresh random one to the signing_keys table, which keeps whichever came
// first (store.SigningKey), and uses that. Call it after the migrations
// are applied.
func Load(ctx context.Context, q store.Querier) (*Signer, error) {
	fresh := make([]byte, KeySize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("making an unsubscribe secret: %w", err)
	}
	secret, err := store.SigningKey(ctx, q, KeyPurpose, fresh)
	if err != nil {
		return nil, err
	}
	return New(secret)
}

func derive(secret []byte, label string) []byte {
	mac := hmac.New(sha256.New, secret)
	_, _ = mac.Write([]byte(label))
	return mac.Sum(nil)
}

// Sign returns t sealed as a URL-safe token (base64url, no padding).
func (s *Signer) Sign(t Token) string {
	if t.IssuedAt.IsZero() {
		t.IssuedAt = s.now()
	}
	plain := encode(t)
	tag := s.tag(plain)
	out := make([]byte, tagSize+len(plain))
	copy(out, tag)
	cipher.NewCTR(s.block, tag).XORKeyStream(out[tagSize:], plain)
	return base64.RawURLEncoding.EncodeToString(out)
}

// Verify opens token: ErrInvalid when it is not one this secret sealed
// (forged, altered, cut short, another deployment's), ErrExpired when it
// is older than TTL.
func (s *Signer) Verify(token string) (Token, error) {
	if len(token) > maxToken {
		return Token{}, ErrInvalid
	}
	// Strict: a token has one spelling; a changed padding bit is refused.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) <= tagSize {
		return Token{}, ErrInvalid
	}
	tag, sealed := raw[:tagSize], raw[tagSize:]
	plain := make([]byte, len(sealed))
	cipher.NewCTR(s.block, tag).XORKeyStream(plain, sealed)
	if subtle.ConstantTimeCompare(s.tag(plain), tag) != 1 {
		return Token{}, ErrInvalid
	}
	t, ok := decode(plain)
	if !ok {
		return Token{}, ErrInvalid
	}
	if s.now().Sub(t.IssuedAt) > TTL {
		return Token{}, ErrExpired
	}
	return t, nil
}

func (s *Signer) tag(plain []byte) []byte {
	mac := hmac.New(sha256.New, s.macKey)
	_, _ = mac.Write(plain)
	return mac.Sum(nil)[:tagSize]
}

// encode lays t out as: version, the tenant's 16 bytes, issued-at (unix
// seconds, uvarint), then channel, category and address, each a uvarint
// length and its bytes.
func encode(t Token) []byte {
	b := make([]byte, 0, 1+16+binary.MaxVarintLen64+3*binary.MaxVarintLen16+len(t.Channel)+len(t.Category)+len(t.Address))
	b = append(b, version)
	b = append(b, t.TenantID[:]...)
	b = binary.AppendUvarint(b, uint64(max(t.IssuedAt.Unix(), 0)))
	for _, s := range []string{t.Channel, t.Category, t.Address} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func decode(b []byte) (Token, bool) {
	if len(b) < 1+16 || b[0] != version {
		return Token{}, false
	}
	var t Token
	copy(t.TenantID[:], b[1:17])
	b = b[17:]
	issued, n := binary.Uvarint(b)
	if n <= 0 || issued > 1<<40 {
		return Token{}, false
	}
	t.IssuedAt = time.Unix(int64(issued), 0)
	b = b[n:]
	fields := make([]string, 3)
	for i := range fields {
		size, n := binary.Uvarint(b)
		if n <= 0 || size > uint64(len(b)-n) {
			return Token{}, false
		}
		fields[i] = string(b[n : n+int(size)])
		b = b[n+int(size):]
	}
	if len(b) != 0 {
		return Token{}, false
	}
	t.Channel, t.Category, t.Address = fields[0], fields[1], fields[2]
	return t, true
}

// Header names of a one-click unsubscribe (RFC 2369, RFC 8058).
const (
	HeaderList = "List-Unsubscribe"
	HeaderPost = "List-Unsubscribe-Post"
	// OneClick is List-Unsubscribe-Post's value and the form body a mail
	// client POSTs to the link.
	OneClick = "List-Unsubscribe=One-Click"
)

// Path is where the API serves a token's page and its one-click POST,
// under the public base URL.
func Path(token string) string { return "/u/" + token }

// Headers returns the header fields of an email whose unsubscribe link is
// t: List-Unsubscribe with the HTTPS link {baseURL}/u/{token} (and, when
// mailto is set, a mailto: entry whose subject carries the token), and
// List-Unsubscribe-Post for RFC 8058's one-click POST. baseURL is the
// API's public base (PUBLIC_BASE_URL), a trailing slash ignored. The token
// is base64url, so it needs no escaping in either URL.
func (s *Signer) Headers(baseURL, mailto string, t Token) map[string]string {
	token := s.Sign(t)
	list := "<" + strings.TrimRight(baseURL, "/") + Path(token) + ">"
	if mailto != "" {
		list += ", <mailto:" + mailto + "?subject=unsubscribe-" + token + ">"
	}
	return map[string]string{HeaderList: list, HeaderPost: OneClick}
}
