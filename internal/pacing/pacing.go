// Package pacing holds the shapes and the arithmetic of the waits a
// notification may take on the person's side (Recipients II): quiet hours
// (a daily window, local to a timezone, in which non-critical notifications
// wait), a category's throttle (at most Limit of its notifications per
// recipient in any Per) and digest (members gathered for Window, or until
// MaxItems, go as one message). The API validates them with Parse*; the
// delivery worker decides with them; PostgreSQL stores them as JSON.
package pacing

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	// Embedded, so a timezone resolves on a machine without zoneinfo.
	_ "time/tzdata"
)

// QuietHours is a daily window, "HH:MM" to "HH:MM" local time; End before
// Start crosses midnight ("22:00" to "08:00"). Start equal to End is no
// window.
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// clock reads "HH:MM" as minutes after midnight.
func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not a time of day as HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("%q is not a time of day as HH:MM (00:00 to 23:59)", s)
	}
	return hh*60 + mm, nil
}

// Validate reports what is wrong with q: the field ("start", "end") and why.
func (q QuietHours) Validate() (field string, err error) {
	if _, err := clock(q.Start); err != nil {
		return "start", err
	}
	if _, err := clock(q.End); err != nil {
		return "end", err
	}
	if q.Start == q.End {
		return "end", errors.New("the window is empty: end equals start")
	}
	return "", nil
}

// ParseWindow reads "22:00-08:00" (the flag's form).
func ParseWindow(s string) (QuietHours, error) {
	start, end, ok := strings.Cut(s, "-")
	if !ok {
		return QuietHours{}, fmt.Errorf("%q is not a window as HH:MM-HH:MM", s)
	}
	q := QuietHours{Start: strings.TrimSpace(start), End: strings.TrimSpace(end)}
	if _, err := q.Validate(); err != nil {
		return QuietHours{}, err
	}
	return q, nil
}

// String is the window as ParseWindow reads it.
func (q QuietHours) String() string { return q.Start + "-" + q.End }

// Until reports whether now falls inside the window in loc and, if it
// does, when the window ends: the next time the wall clock in loc reads
// End, or the first instant it reads later than End (on a night whose
// clocks jump over End, the jump). A window across midnight is inside from
// Start to midnight and from midnight to End; a wall time that exists twice
// (clocks going back) ends at its first occurrence.
func (q QuietHours) Until(now time.Time, loc *time.Location) (inside bool, end time.Time) {
	start, err1 := clock(q.Start)
	stop, err2 := clock(q.End)
	if err1 != nil || err2 != nil || start == stop {
		return false, time.Time{}
	}
	local := now.In(loc)
	minute := local.Hour()*60 + local.Minute()
	if start < stop {
		inside = minute >= start && minute < stop
	} else {
		inside = minute >= start || minute < stop
	}
	if !inside {
		return false, time.Time{}
	}
	y, m, d := local.Date()
	end = wallClock(y, m, d, stop, loc)
	if !end.After(now) {
		end = wallClock(y, m, d+1, stop, loc)
	}
	return true, end
}

// wallClock is the first instant of the day y-m-d in loc at which the
// clock reads minute (after midnight) or later: that time, or, when the
// clocks jump over it that day, the jump.
func wallClock(y int, m time.Month, d, minute int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, minute/60, minute%60, 0, 0, loc)
	if t.Hour()*60+t.Minute() == minute {
		return t
	}
	// In a gap: time.Date chose an offset; the jump is the bound of the
	// zone it chose on the side of the wall time asked for.
	start, end := t.ZoneBounds()
	if t.Hour()*60+t.Minute() < minute && !end.IsZero() {
		return end
	}
	return start
}

// Location is the IANA timezone name's location, UTC for "".
func Location(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(name)
}

// Duration is a time.Duration written as Go writes one ("90s", "10m",
// "1h"), in JSON as that text.
type Duration time.Duration

// MarshalJSON writes d as its text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration's text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is a string such as "30s", "10m" or "1h"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf(`%q is not a duration such as "30s", "10m" or "1h"`, s)
	}
	*d = Duration(v)
	return nil
}

// Throttle lets at most Limit notifications of a category reach the
// provider per recipient in any Per; the rest wait for a free slot.
type Throttle struct {
	Limit int      `json:"limit"`
	Per   Duration `json:"per"`
}

// The bounds of a throttle and a digest.
const (
	MaxThrottleLimit = 10000
	MinThrottlePer   = time.Second
	MaxThrottlePer   = 7 * 24 * time.Hour
	MinDigestWindow  = time.Second
	MaxDigestWindow  = 7 * 24 * time.Hour
	MaxDigestItems   = 1000
	// MaxOrderingHold bounds a notification's maxHold.
	MaxOrderingHold = 24 * time.Hour
)

// Validate reports what is wrong with t: the field and why.
func (t Throttle) Validate() (field string, err error) {
	if t.Limit < 1 || t.Limit > MaxThrottleLimit {
		return "limit", fmt.Errorf("limit must be 1 to %d", MaxThrottleLimit)
	}
	if p := time.Duration(t.Per); p < MinThrottlePer || p > MaxThrottlePer {
		return "per", fmt.Errorf("per must be %s to %s", MinThrottlePer, MaxThrottlePer)
	}
	return "", nil
}

// Digest gathers a category's notifications with one digestKey to one
// recipient for Window from the first, or until MaxItems, into one message.
type Digest struct {
	Window   Duration `json:"window"`
	MaxItems int      `json:"maxItems"`
}

// Validate reports what is wrong with d: the field and why.
func (d Digest) Validate() (field string, err error) {
	if w := time.Duration(d.Window); w < MinDigestWindow || w > MaxDigestWindow {
		return "window", fmt.Errorf("window must be %s to %s", MinDigestWindow, MaxDigestWindow)
	}
	if d.MaxItems < 1 || d.MaxItems > MaxDigestItems {
		return "maxItems", fmt.Errorf("maxItems must be 1 to %d", MaxDigestItems)
	}
	return "", nil
}

// Reasons a notification waits past its turn (its deferredBy).
const (
	ByQuietHours = "quiet-hours"
	ByThrottle   = "throttle"
	ByDigest     = "digest"
	ByOrdering   = "ordering"
)
