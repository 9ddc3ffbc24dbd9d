package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// headerIdempotencyKey is the Idempotency-Key request header.
const headerIdempotencyKey = "Idempotency-Key"

// withKey runs fn on the pool, or, when the request carries an idempotency
// key, in a transaction holding that key's lock (store.TryLockKey): a
// request whose key another request holds right now is answered 409
// /problems/idempotency-key-in-use with Retry-After, as
// draft-ietf-httpapi-idempotency-key-header asks, instead of waiting for it.
// fn's error is returned as is; the transaction commits when fn succeeds.
func (s *Server) withKey(c *fiber.Ctx, scope string, key *string, fn func(db store.DB) error) error {
	if key == nil {
		return fn(s.pool)
	}
	ctx := c.UserContext()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// The lock is the tenant's: another tenant's same key never waits on it.
	ok, err := store.TryLockKey(ctx, tx, store.TenantKeyScope(scope, tenant(c).ID), *key)
	if err != nil {
		return err
	}
	if !ok {
		c.Set(fiber.HeaderRetryAfter, "1")
		return newProblem(fiber.StatusConflict, typeIdempotencyInUse, "Idempotency key in use",
			"a request with this idempotency key is still being processed; repeat it once that one is answered")
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// headerReplayed marks an answer that repeats the one given to an earlier
// request with the same idempotency key.
const headerReplayed = "Idempotent-Replayed"

func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > maxIdempotencyKey || !utf8.ValidString(k) {
		return false
	}
	for _, r := range k {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// idempotencyHeader returns the Idempotency-Key header, nil when absent; an
// invalid one is recorded in ve.
func idempotencyHeader(c *fiber.Ctx, ve *ValidationError) *string {
	raw := c.Request().Header.Peek(headerIdempotencyKey)
	if raw == nil {
		return nil
	}
	k := string(raw)
	if !validIdempotencyKey(k) {
		ve.add(headerIdempotencyKey, "must be 1 to %d bytes of UTF-8 without control characters", maxIdempotencyKey)
		return nil
	}
	return &k
}

// resolveKey merges the body's idempotencyKey (field names it) with the
// header's: either may be given; both must then agree.
func resolveKey(body, header *string, field string, ve *ValidationError) *string {
	switch {
	case body != nil && header != nil && *body != *header:
		ve.add(field, "differs from the Idempotency-Key header; send one key, or the same in both")
		return nil
	case body != nil:
		return body
	default:
		return header
	}
}

// canonicalRequest is what a notification request asks for, in one fixed
// shape: defaults applied, metadata with sorted keys, times in UTC. Two
// requests asking for the same thing have the same fingerprint, however
// their JSON was spelled.
type canonicalRequest struct {
	Channel        string          `json:"channel"`
	Priority       string          `json:"priority"`
	Recipient      string          `json:"recipient"`
	Subject        *string         `json:"subject"`
	Content        string          `json:"content"`
	Metadata       json.RawMessage `json:"metadata"`
	ScheduledAt    *string         `json:"scheduledAt"`
	ExpiresAt      *string         `json:"expiresAt"`
	IdempotencyKey *string         `json:"idempotencyKey,omitempty"`
	// Fields added since the first release are left out when not given,
	// so a request without them hashes as it always did.
	RecipientID *string  `json:"recipientId,omitempty"`
	Channels    []string `json:"channels,omitempty"`
	Category    *string  `json:"category,omitempty"`
	OrderingKey *string  `json:"orderingKey,omitempty"`
	MaxHoldMS   int64    `json:"maxHoldMs,omitempty"`
	DigestKey   *string  `json:"digestKey,omitempty"`
	// A template's name, its data and the locale asked for: the request,
	// not what it rendered to (which a new version of the template changes).
	Template *string         `json:"template,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Locale   *string         `json:"locale,omitempty"`
}

func canonical(n store.NewNotification, withKey bool) canonicalRequest {
	c := canonicalRequest{
		Channel: string(n.Channel), Priority: string(n.Priority), Recipient: n.Recipient, Subject: n.Subject,
		Content: n.Content, Metadata: canonicalJSON(n.Metadata),
		ScheduledAt: utc(n.ScheduledAt), ExpiresAt: utc(n.ExpiresAt),
		RecipientID: n.RecipientID, Channels: n.Channels, Category: n.Category,
		OrderingKey: n.OrderingKey, MaxHoldMS: n.MaxHold.Milliseconds(), DigestKey: n.DigestKey,
		Template: n.Template, Locale: n.RequestedLocale,
	}
	if n.Template != nil {
		// A batch is fingerprinted once its items are rendered.
		c.Data, c.Content, c.Subject = canonicalJSON(n.TemplateData), "", nil
	}
	if withKey {
		c.IdempotencyKey = n.IdempotencyKey
	}
	return c
}

// fingerprint hashes what a single request asks for, leaving out its
// idempotency key (the key is what finds the stored fingerprint).
func fingerprint(n store.NewNotification) string {
	return hash(canonical(n, false))
}

// batchFingerprint hashes a whole batch request, the items' own keys included.
func batchFingerprint(ns []store.NewNotification) string {
	items := make([]canonicalRequest, len(ns))
	for i, n := range ns {
		items[i] = canonical(n, true)
	}
	return hash(items)
}

func hash(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		// Only strings, times and already-valid JSON go in.
		panic("fingerprinting a request: " + err.Error())
	}
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// canonicalJSON re-encodes a JSON value with object keys sorted and numbers
// kept as written.
func canonicalJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

func utc(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}
