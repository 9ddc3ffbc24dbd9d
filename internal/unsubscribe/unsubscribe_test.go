package unsubscribe

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

var (
	testTenant = uuid.MustParse("0195b5f2-7f00-7000-8000-00000000abcd")
	testIssued = time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
)

func testToken() Token {
	return Token{TenantID: testTenant, Channel: "email", Address: "ada.lovelace@example.com", Category: "marketing", IssuedAt: testIssued}
}

// newSigner is a Signer of secret whose clock reads at.
func newSigner(t *testing.T, secret byte, at time.Time) *Signer {
	t.Helper()
	s, err := New(bytes.Repeat([]byte{secret}, KeySize))
	require.NoError(t, err)
	s.now = func() time.Time { return at }
	return s
}

func TestTokenRoundTrip(t *testing.T) {
	s := newSigner(t, 7, testIssued.Add(time.Hour))
	for _, tok := range []Token{
		testToken(),
		{TenantID: uuid.New(), Channel: "email", Address: "x@y.example", Category: "a", IssuedAt: testIssued},
		{TenantID: testTenant, Channel: "sms", Address: "+14155550123", Category: strings.Repeat("c", 64), IssuedAt: testIssued},
	} {
		token := s.Sign(tok)
		require.Regexp(t, `^[A-Za-z0-9_-]+$`, token, "URL-safe, unpadded")
		got, err := s.Verify(token)
		require.NoError(t, err)
		require.Equal(t, tok.TenantID, got.TenantID)
		require.Equal(t, tok.Channel, got.Channel)
		require.Equal(t, tok.Address, got.Address)
		require.Equal(t, tok.Category, got.Category)
		require.True(t, tok.IssuedAt.Equal(got.IssuedAt))
	}
}

func TestSignStampsNowWhenIssuedAtIsZero(t *testing.T) {
	s := newSigner(t, 7, testIssued)
	tok := testToken()
	tok.IssuedAt = time.Time{}
	got, err := s.Verify(s.Sign(tok))
	require.NoError(t, err)
	require.True(t, testIssued.Equal(got.IssuedAt))
}

func TestEveryAlteredByteIsRefused(t *testing.T) {
	s := newSigner(t, 7, testIssued)
	token := s.Sign(testToken())
	raw, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	for i := range raw {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			altered := bytes.Clone(raw)
			altered[i] ^= flip
			_, err := s.Verify(base64.RawURLEncoding.EncodeToString(altered))
			require.ErrorIs(t, err, ErrInvalid, "byte %d ^ %#x", i, flip)
		}
	}
	// Every character of the token changed to any other, the last one's
	// padding bits included: a token has one spelling.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range token {
		for _, c := range alphabet {
			if byte(c) == token[i] {
				continue
			}
			_, err := s.Verify(token[:i] + string(c) + token[i+1:])
			require.ErrorIs(t, err, ErrInvalid, "character %d as %c", i, c)
		}
	}
}

func TestTruncatedOrExtendedTokenIsRefused(t *testing.T) {
	s := newSigner(t, 7, testIssued)
	token := s.Sign(testToken())
	for n := range len(token) {
		_, err := s.Verify(token[:n])
		require.ErrorIs(t, err, ErrInvalid, "first %d characters", n)
	}
	for _, extra := range []string{"A", "AA", "AAAA", "=", "%3D"} {
		_, err := s.Verify(token + extra)
		require.ErrorIs(t, err, ErrInvalid, "with %q added", extra)
	}
	for _, junk := range []string{"", "!", "not a token", strings.Repeat("A", 4096)} {
		_, err := s.Verify(junk)
		require.ErrorIs(t, err, ErrInvalid, "%.20q", junk)
	}
}

func TestTokenExpiresAfterTTL(t *testing.T) {
	require.GreaterOrEqual(t, TTL, 60*24*time.Hour, "RFC 8058 senders keep links working for 60 days at least")
	token := newSigner(t, 7, testIssued).Sign(testToken())

	_, err := newSigner(t, 7, testIssued.Add(60*24*time.Hour)).Verify(token)
	require.NoError(t, err, "60 days on")
	_, err = newSigner(t, 7, testIssued.Add(TTL)).Verify(token)
	require.NoError(t, err, "the last second")
	_, err = newSigner(t, 7, testIssued.Add(TTL+time.Second)).Verify(token)
	require.ErrorIs(t, err, ErrExpired)
}

func TestAnotherSecretsTokenIsRefused(t *testing.T) {
	token := newSigner(t, 7, testIssued).Sign(testToken())
	_, err := newSigner(t, 8, testIssued).Verify(token)
	require.ErrorIs(t, err, ErrInvalid)
}

func TestTokenDoesNotShowTheAddress(t *testing.T) {
	s := newSigner(t, 7, testIssued)
	tok := testToken()
	token := s.Sign(tok)
	raw, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	for _, part := range []string{tok.Address, "ada.lovelace", "example.com", tok.Category} {
		require.NotContains(t, string(raw), part)
		require.NotContains(t, token, base64.RawURLEncoding.EncodeToString([]byte(part)))
	}
	require.Less(t, len(token), 120, "short enough for a header line")
}

func TestNewWantsAWholeSecret(t *testing.T) {
	_, err := New(make([]byte, KeySize-1))
	require.Error(t, err)
}

func TestHeaders(t *testing.T) {
	s := newSigner(t, 7, testIssued)
	h := s.Headers("https://dispatch.example.com/", "", testToken())
	require.Len(t, h, 2)
	require.Equal(t, "List-Unsubscribe=One-Click", h["List-Unsubscribe-Post"])
	list := h["List-Unsubscribe"]
	require.Regexp(t, `^<https://dispatch\.example\.com/u/[A-Za-z0-9_-]+>$`, list)
	token := strings.TrimSuffix(strings.TrimPrefix(list, "<https://dispatch.example.com/u/"), ">")
	got, err := s.Verify(token)
	require.NoError(t, err)
	require.Equal(t, "ada.lovelace@example.com", got.Address)

	h = s.Headers("https://dispatch.example.com", "unsubscribe@example.com", testToken())
	require.Regexp(t, `^<https://dispatch\.example\.com/u/([A-Za-z0-9_-]+)>, <mailto:unsubscribe@example\.com\?subject=unsubscribe-([A-Za-z0-9_-]+)>$`, h["List-Unsubscribe"])
	m := strings.Split(strings.NewReplacer("<", "", ">", "", "https://dispatch.example.com/u/", "", "mailto:unsubscribe@example.com?subject=unsubscribe-", "").Replace(h["List-Unsubscribe"]), ", ")
	require.Len(t, m, 2)
	require.Equal(t, m[0], m[1], "both entries carry the same token")
}

func TestLoadSharesOneSecretAcrossProcesses(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	api, err := Load(ctx, pool)
	require.NoError(t, err)
	worker, err := Load(ctx, pool)
	require.NoError(t, err)

	got, err := api.Verify(worker.Sign(testToken()))
	require.NoError(t, err, "a token the worker signed opens in the API")
	require.Equal(t, testToken().Address, got.Address)

	var keys int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE purpose = 'unsubscribe'`).Scan(&keys))
	require.Equal(t, 1, keys)
}
