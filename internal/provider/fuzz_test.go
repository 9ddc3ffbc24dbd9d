package provider

import (
	"testing"
	"time"
)

// FuzzParseRetryAfter: any header value gives a wait between 0 and a day.
func FuzzParseRetryAfter(f *testing.F) {
	for _, seed := range []string{"", "0", "7", " 120 ", "-3", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "soon"} {
		f.Add(seed)
	}
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %s, outside [0, %s]", v, d, maxRetryAfter)
		}
	})
}
