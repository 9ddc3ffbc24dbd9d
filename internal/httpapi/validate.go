package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// CreateRequest is the body of POST /v1/notifications (camelCase JSON).
type CreateRequest struct {
	Channel        string          `json:"channel"`
	Recipient      string          `json:"recipient"`
	Content        string          `json:"content"`
	Subject        *string         `json:"subject"`
	Priority       string          `json:"priority"`
	IdempotencyKey *string         `json:"idempotencyKey"`
	Metadata       json.RawMessage `json:"metadata"`
	ScheduledAt    *time.Time      `json:"scheduledAt"`
	ExpiresAt      *time.Time      `json:"expiresAt"`
	// RecipientID names one of the tenant's recipient profiles instead of
	// an address, with channel or an ordered list of channels to fall back
	// along; Category is the preference the notification is subject to.
	RecipientID *string  `json:"recipientId"`
	Channels    []string `json:"channels"`
	Category    *string  `json:"category"`
	// OrderingKey orders the notification after the tenant's others with
	// the same key; MaxHold ("30s") bounds how long it waits for the one
	// before it. DigestKey gathers it with its category's others to the
	// same recipient into one digest (Recipients II).
	OrderingKey *string `json:"orderingKey"`
	MaxHold     *string `json:"maxHold"`
	DigestKey   *string `json:"digestKey"`
	// Template names one of the tenant's templates to render the
	// notification's content (and subject, title, html) from, with Data;
	// Locale, when given, is the locale wanted (templates.go).
	Template *string         `json:"template"`
	Data     json.RawMessage `json:"data"`
	Locale   *string         `json:"locale"`
}

// Limits on a notification's fields.
const (
	maxMetadataBytes  = 8 << 10
	maxPushToken      = 4096
	maxIdempotencyKey = 255
)

// maxContent is each channel's content limit in bytes.
var maxContent = map[string]int{
	string(notification.SMS):   1600,
	string(notification.Push):  4096,
	string(notification.Email): 256 << 10,
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// decodeStrict decodes a request body holding exactly one JSON value into v,
// rejecting unknown fields and trailing data; its errors name the offending
// field.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return malformed("the request body is empty; a JSON object is expected")
	}
	// encoding/json would silently turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(body) {
		return malformed("the request body is not valid UTF-8")
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return malformed("the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(body, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("the request body holds more than one JSON value")
	}
	return nil
}

// decodeItem decodes one item of a batch, already known to be valid JSON,
// into v; its errors name fields under prefix ("notifications[3]").
func decodeItem(raw json.RawMessage, v any, prefix string) *ValidationError {
	ve := &ValidationError{}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		ve.add(prefix, "must be a JSON object")
		return ve
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var fieldErr *ValidationError
	if errors.As(decodeError(trimmed, err), &fieldErr) {
		for _, f := range fieldErr.Fields {
			ve.add(prefix+"."+f.Field, "%s", f.Message)
		}
		return ve
	}
	ve.add(prefix, "is not a valid notification object")
	return ve
}

func decodeError(body []byte, err error) error {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		timeErr   *time.ParseError
	)
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return malformed("the request body must be a JSON object")
		}
		ve := &ValidationError{}
		ve.add(jsonPath(field), "must be a JSON %s", jsonKind(typeErr.Type.String()))
		return ve
	case errors.As(err, &timeErr):
		ve := &ValidationError{}
		ve.add(timeField(body), "must be an RFC 3339 date-time, e.g. 2026-01-02T15:04:05Z")
		return ve
	case errors.As(err, &syntaxErr):
		return malformed(fmt.Sprintf("the body is not valid JSON (at byte %d): %v", syntaxErr.Offset, syntaxErr))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		ve := &ValidationError{}
		ve.add(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "unknown field")
		return ve
	case errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("the body is truncated JSON")
	default:
		return malformed("the body is not valid JSON")
	}
}

// jsonPath turns encoding/json's field path ("notifications.3") into the
// API's ("notifications[3]").
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	var b strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// timeField names the date-time field that failed to parse: encoding/json
// reports no field for a time.Time, so each one is parsed again on its own.
func timeField(body []byte) string {
	var raw struct {
		ScheduledAt json.RawMessage `json:"scheduledAt"`
		ExpiresAt   json.RawMessage `json:"expiresAt"`
	}
	_ = json.Unmarshal(body, &raw)
	var t time.Time
	switch {
	case len(raw.ScheduledAt) > 0 && t.UnmarshalJSON(raw.ScheduledAt) != nil:
		return "scheduledAt"
	case len(raw.ExpiresAt) > 0 && t.UnmarshalJSON(raw.ExpiresAt) != nil:
		return "expiresAt"
	}
	return "scheduledAt/expiresAt"
}

func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "*"):
		return jsonKind(goType[1:])
	case goType == "string":
		return "string"
	case goType == "time.Time":
		return "string (RFC 3339 date-time)"
	case goType == "json.RawMessage":
		return "object"
	case strings.HasPrefix(goType, "[]"):
		return "array"
	default:
		return goType
	}
}

// validate checks r and returns it as a new notification; prefix names
// fields inside a batch ("notifications[3].").
func (r CreateRequest) validate(prefix string, now time.Time) (store.NewNotification, *ValidationError) {
	ve := &ValidationError{}
	field := func(name string) string { return prefix + name }

	channels := r.targets(field, ve)
	if r.Priority == "" {
		r.Priority = string(notification.Normal)
	}
	if !notification.ValidPriority(r.Priority) {
		ve.add(field("priority"), "must be one of HIGH, NORMAL, LOW")
	}
	if r.RecipientID == nil {
		r.validateAddress(field, ve)
	}
	if r.Template == nil {
		r.validateSubject(field, ve, channels)
	}
	r.validateTemplate(field, ve)
	if r.Category != nil && !categoryPattern.MatchString(*r.Category) {
		ve.add(field("category"), "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'")
	}
	maxHold := r.validatePacing(field, ve)

	limit, tightest := contentLimit(channels)
	switch {
	case r.Template != nil:
		// Rendered at acceptance, and checked then (applyTemplate).
	case r.Content == "":
		ve.add(field("content"), "is required")
	case !utf8.ValidString(r.Content) || strings.ContainsRune(r.Content, 0):
		ve.add(field("content"), "must be valid UTF-8 without NUL characters")
	case limit > 0 && len(r.Content) > limit:
		ve.add(field("content"), "must be at most %d bytes for %s (got %d)", limit, tightest, len(r.Content))
	}

	if r.IdempotencyKey != nil {
		if !validIdempotencyKey(*r.IdempotencyKey) {
			ve.add(field("idempotencyKey"), "must be 1 to %d bytes of UTF-8 without control characters", maxIdempotencyKey)
		}
	}
	if len(r.Metadata) > 0 && !bytes.Equal(bytes.TrimSpace(r.Metadata), []byte("null")) {
		trimmed := bytes.TrimSpace(r.Metadata)
		switch {
		case trimmed[0] != '{':
			ve.add(field("metadata"), "must be a JSON object")
		case len(trimmed) > maxMetadataBytes:
			ve.add(field("metadata"), "must be at most %d bytes (got %d)", maxMetadataBytes, len(trimmed))
		default:
			if why := jsonbRefusal(trimmed); why != "" {
				ve.add(field("metadata"), "%s", why)
			}
		}
	} else {
		r.Metadata = nil
	}
	if r.ExpiresAt != nil {
		if !r.ExpiresAt.After(now) {
			ve.add(field("expiresAt"), "must be in the future")
		}
		if r.ScheduledAt != nil && !r.ExpiresAt.After(*r.ScheduledAt) {
			ve.add(field("expiresAt"), "must be after scheduledAt")
		}
	}
	if len(ve.Fields) > 0 {
		return store.NewNotification{}, ve
	}
	first := r.Channel
	if len(channels) > 0 {
		first = channels[0]
	}
	var fallback []string
	if r.Channels != nil {
		fallback = channels
	}
	return store.NewNotification{
		ID:              uuid.Must(uuid.NewV7()),
		RecipientID:     r.RecipientID,
		Channels:        fallback,
		Category:        r.Category,
		Channel:         notification.Channel(first),
		Priority:        notification.Priority(r.Priority),
		Recipient:       r.Recipient,
		Subject:         r.Subject,
		Content:         r.Content,
		Metadata:        r.Metadata,
		IdempotencyKey:  r.IdempotencyKey,
		ScheduledAt:     r.ScheduledAt,
		ExpiresAt:       r.ExpiresAt,
		OrderingKey:     r.OrderingKey,
		MaxHold:         maxHold,
		DigestKey:       r.DigestKey,
		Template:        r.Template,
		TemplateData:    r.Data,
		RequestedLocale: r.Locale,
	}, nil
}

// validatePacing checks orderingKey, maxHold and digestKey, and answers
// maxHold. maxHold goes only with an orderingKey, a digestKey only with a
// category (a digest is its category's); maxHold is stored in whole
// milliseconds, so a shorter one is refused rather than lost.
func (r CreateRequest) validatePacing(field func(string) string, ve *ValidationError) time.Duration {
	if r.OrderingKey != nil && !validPacingKey(*r.OrderingKey) {
		ve.add(field("orderingKey"), "must be 1 to %d printable characters of UTF-8, without control characters", maxPacingKey)
	}
	if r.DigestKey != nil {
		switch {
		case !validPacingKey(*r.DigestKey):
			ve.add(field("digestKey"), "must be 1 to %d printable characters of UTF-8, without control characters", maxPacingKey)
		case r.Category == nil:
			ve.add(field("digestKey"), "is only allowed with category: a digest gathers one category's notifications")
		}
	}
	if r.MaxHold == nil {
		return 0
	}
	d, err := time.ParseDuration(*r.MaxHold)
	switch {
	case r.OrderingKey == nil:
		ve.add(field("maxHold"), "is only allowed with orderingKey: it bounds the wait for the notification before it")
	case err != nil:
		ve.add(field("maxHold"), `must be a duration such as "30s", "5m" or "1h"`)
	case d < time.Millisecond || d > pacing.MaxOrderingHold:
		ve.add(field("maxHold"), "must be at least 1ms and at most %s", shortDuration(pacing.MaxOrderingHold))
	default:
		return d.Truncate(time.Millisecond)
	}
	return 0
}

// validateTemplate checks template, data and locale: a template instead of
// content and subject, never with them; data and locale only with one.
func (r CreateRequest) validateTemplate(field func(string) string, ve *ValidationError) {
	if r.Template == nil {
		if present(r.Data) {
			ve.add(field("data"), "is only allowed with template")
		}
		if r.Locale != nil {
			ve.add(field("locale"), "is only allowed with template")
		}
		return
	}
	if !categoryPattern.MatchString(*r.Template) {
		ve.add(field("template"), "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'")
	}
	if r.Content != "" || r.Subject != nil {
		ve.add(field("template"), "must not be given with content or subject: the template renders them")
	}
	if r.Locale != nil && !localePattern.MatchString(*r.Locale) {
		ve.add(field("locale"), "must be a BCP 47 language tag such as en or tr-TR")
	}
	templateData(r.Data, field("data"), ve)
}

// targets checks whom the notification is for and on which channels, and
// answers its channels: an address (recipient) on one channel, or a
// recipient profile (recipientId) on one channel or an ordered list of up
// to three to fall back along. It answers none when they are not valid.
func (r CreateRequest) targets(field func(string) string, ve *ValidationError) []string {
	switch {
	case r.RecipientID == nil:
		if r.Channels != nil {
			ve.add(field("channels"), "is only allowed with recipientId; a notification to an address names its channel")
		}
	case r.Recipient != "":
		ve.add(field("recipientId"), "must not be given with recipient: name an address or a recipient profile, not both")
	case !recipientIDPattern.MatchString(*r.RecipientID):
		ve.add(field("recipientId"), "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '@' or '-'")
	}
	if r.Channels == nil {
		if !notification.ValidChannel(r.Channel) {
			ve.add(field("channel"), "must be one of sms, email, push")
			return nil
		}
		return []string{r.Channel}
	}
	if r.Channel != "" {
		ve.add(field("channel"), "must not be given with channels")
	}
	if len(r.Channels) == 0 || len(r.Channels) > len(notification.Channels) {
		ve.add(field("channels"), "must list 1 to %d channels", len(notification.Channels))
		return nil
	}
	for i, c := range r.Channels {
		switch {
		case !notification.ValidChannel(c):
			ve.add(field(fmt.Sprintf("channels[%d]", i)), "must be one of sms, email, push")
			return nil
		case slices.Contains(r.Channels[:i], c):
			ve.add(field(fmt.Sprintf("channels[%d]", i)), "repeats %s; each channel is listed once", c)
			return nil
		}
	}
	return r.Channels
}

// validateAddress checks the recipient address of a notification to an
// address, on its channel.
func (r CreateRequest) validateAddress(field func(string) string, ve *ValidationError) {
	switch notification.Channel(r.Channel) {
	case notification.SMS:
		if !e164.MatchString(r.Recipient) {
			ve.add(field("recipient"), "must be an E.164 phone number, e.g. +14155550123")
		}
	case notification.Email:
		if addr, err := mail.ParseAddress(r.Recipient); err != nil || addr.Address != r.Recipient {
			ve.add(field("recipient"), "must be an email address, e.g. user@example.com")
		}
	case notification.Push:
		if !validPushToken(r.Recipient) {
			ve.add(field("recipient"), "must be a device token of 1 to %d visible characters", maxPushToken)
		}
	}
}

// validateSubject checks the subject: required when the notification may
// go by email, allowed then and for push (a push's title), one line.
func (r CreateRequest) validateSubject(field func(string) string, ve *ValidationError, channels []string) {
	if len(channels) == 0 {
		return
	}
	email := slices.Contains(channels, string(notification.Email))
	push := slices.Contains(channels, string(notification.Push))
	switch {
	case email && (r.Subject == nil || strings.TrimSpace(*r.Subject) == ""):
		ve.add(field("subject"), "is required for email")
	case r.Subject != nil && (email || push) && (len(*r.Subject) > 998 || !utf8.ValidString(*r.Subject) || strings.ContainsAny(*r.Subject, "\x00\r\n")):
		ve.add(field("subject"), "must be one line of valid UTF-8, at most 998 bytes")
	case r.Subject != nil && !email && !push:
		ve.add(field("subject"), "is only allowed for email, and for push (its title)")
	}
}

// contentLimit is the content limit of the notification's channels: the
// tightest of them, since it may go on any; 0 for none.
func contentLimit(channels []string) (limit int, channel string) {
	for _, c := range channels {
		if l, ok := maxContent[c]; ok && (limit == 0 || l < limit) {
			limit, channel = l, c
		}
	}
	return limit, channel
}

// validText reports whether s can be stored as PostgreSQL text: valid
// UTF-8 without NUL (which text cannot hold).
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// jsonbRefusal says what PostgreSQL's jsonb would refuse in raw, which is
// valid JSON: a \u0000 escape (its text cannot hold NUL) or an escaped
// UTF-16 surrogate that is not half of a pair; "" when jsonb takes raw.
// encoding/json takes both (a lone surrogate becomes U+FFFD), so without
// this check they would reach the database and fail there.
func jsonbRefusal(raw []byte) string {
	for i := 0; i < len(raw); i++ {
		// In valid JSON a backslash is inside a string and starts an escape.
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue // a one-character escape, \\ included
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			continue
		}
		i += 4
		switch {
		case r == 0:
			return "must not contain NUL characters (\\u0000)"
		case r >= 0xD800 && r < 0xDC00:
			if len(raw) > i+2 && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if low, ok := hex4(raw[i+3:]); ok && low >= 0xDC00 && low <= 0xDFFF {
					i += 6
					continue
				}
			}
			return "must not contain an unpaired UTF-16 surrogate escape (\\uD800 to \\uDFFF)"
		case r >= 0xDC00 && r <= 0xDFFF:
			return "must not contain an unpaired UTF-16 surrogate escape (\\uD800 to \\uDFFF)"
		}
	}
	return ""
}

// hex4 reads the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

func validPushToken(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > maxPushToken || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}
