package httpapi

import (
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// The API's side of Recipients II (docs/RECIPIENTS.md, "Time on the
// person's side"): reading a profile's quiet hours and a category's
// throttle and digest, each member named when it is wrong, and showing
// them back.

// maxPacingKey bounds a notification's orderingKey and digestKey, in
// characters (the schema's CHECK counts the same).
const maxPacingKey = 128

// member is one member of a small JSON object the API reads: its name,
// where it goes, and what it must be, for the message when it is not.
type member struct {
	name string
	dst  any
	want string
}

// decodeObject reads raw, a JSON object, member by member into members:
// each is required, none other is allowed, and each one that is missing,
// unknown or of the wrong kind is named under field ("throttle.per"). It
// reports whether every member was read.
func decodeObject(raw json.RawMessage, field string, ve *ValidationError, members ...member) bool {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		ve.add(field, "must be a JSON object")
		return false
	}
	ok := true
	for _, name := range sortedKeys(fields) {
		known := false
		for _, m := range members {
			known = known || m.name == name
		}
		if !known {
			ve.add(field+"."+name, "unknown field")
			ok = false
		}
	}
	for _, m := range members {
		v, given := fields[m.name]
		if !given || !present(v) {
			ve.add(field+"."+m.name, "is required")
			ok = false
			continue
		}
		if err := json.Unmarshal(v, m.dst); err != nil {
			// A type's own UnmarshalJSON (pacing.Duration) says why.
			if _, own := m.dst.(json.Unmarshaler); own {
				ve.add(field+"."+m.name, "%s", err.Error())
			} else {
				ve.add(field+"."+m.name, "must be %s", m.want)
			}
			ok = false
		}
	}
	return ok
}

// decodeQuietHours reads a profile's quietHours, {"start":"22:00","end":"08:00"}.
func decodeQuietHours(raw json.RawMessage, ve *ValidationError) *pacing.QuietHours {
	var q pacing.QuietHours
	if !decodeObject(raw, "quietHours", ve,
		member{"start", &q.Start, `a time of day as "HH:MM"`}, member{"end", &q.End, `a time of day as "HH:MM"`}) {
		return nil
	}
	if f, err := q.Validate(); err != nil {
		ve.add("quietHours."+f, "%s", err.Error())
		return nil
	}
	return &q
}

// decodeThrottle reads a category's throttle, {"limit":3,"per":"1h"}.
func decodeThrottle(raw json.RawMessage, ve *ValidationError) *pacing.Throttle {
	var t pacing.Throttle
	if !decodeObject(raw, "throttle", ve,
		member{"limit", &t.Limit, "a JSON integer"}, member{"per", &t.Per, `a duration such as "1h"`}) {
		return nil
	}
	if f, err := t.Validate(); err != nil {
		ve.add("throttle."+f, "%s", err.Error())
		return nil
	}
	return &t
}

// decodeDigest reads a category's digest, {"window":"10m","maxItems":50}.
func decodeDigest(raw json.RawMessage, ve *ValidationError) *pacing.Digest {
	var d pacing.Digest
	if !decodeObject(raw, "digest", ve,
		member{"window", &d.Window, `a duration such as "10m"`}, member{"maxItems", &d.MaxItems, "a JSON integer"}) {
		return nil
	}
	if f, err := d.Validate(); err != nil {
		ve.add("digest."+f, "%s", err.Error())
		return nil
	}
	return &d
}

// ThrottleResource is a category's throttle as the API shows it: per in
// Go's duration syntax, shortest form ("1h", "90s" as "1m30s").
type ThrottleResource struct {
	Limit int    `json:"limit"`
	Per   string `json:"per"`
}

// DigestResource is a category's digest as the API shows it.
type DigestResource struct {
	Window   string `json:"window"`
	MaxItems int    `json:"maxItems"`
}

func throttleResource(t *pacing.Throttle) *ThrottleResource {
	if t == nil {
		return nil
	}
	return &ThrottleResource{Limit: t.Limit, Per: shortDuration(time.Duration(t.Per))}
}

func digestResource(d *pacing.Digest) *DigestResource {
	if d == nil {
		return nil
	}
	return &DigestResource{Window: shortDuration(time.Duration(d.Window)), MaxItems: d.MaxItems}
}

// shortDuration is d as Go writes it without its zero units: "1h" and
// "10m", not "1h0m0s" and "10m0s"; time.ParseDuration reads it back.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// validPacingKey reports whether k can be an orderingKey or a digestKey:
// 1 to 128 characters of valid UTF-8, each printable (no control or
// format characters), so it can be logged and shown as is.
func validPacingKey(k string) bool {
	if k == "" || !utf8.ValidString(k) || utf8.RuneCountInString(k) > maxPacingKey {
		return false
	}
	for _, r := range k {
		if !unicode.IsGraphic(r) {
			return false
		}
	}
	return true
}
