package pacing

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func at(t *testing.T, loc *time.Location, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	require.NoError(t, err)
	return v
}

func TestQuietHoursAcrossMidnight(t *testing.T) {
	ist, err := Location("Europe/Istanbul")
	require.NoError(t, err)
	q := QuietHours{Start: "22:00", End: "08:00"}
	for _, c := range []struct {
		now    string
		inside bool
		end    string
	}{
		{"2026-12-07 23:30", true, "2026-12-08 08:00"},
		{"2026-12-08 02:00", true, "2026-12-08 08:00"},
		{"2026-12-08 22:00", true, "2026-12-09 08:00"},
		{"2026-12-08 08:00", false, ""},
		{"2026-12-08 21:59", false, ""},
		{"2026-12-08 12:00", false, ""},
	} {
		inside, end := q.Until(at(t, ist, c.now), ist)
		assert.Equal(t, c.inside, inside, c.now)
		if c.inside {
			assert.Equal(t, at(t, ist, c.end), end, c.now)
		}
	}
}

func TestQuietHoursSameDay(t *testing.T) {
	q := QuietHours{Start: "12:00", End: "14:30"}
	inside, end := q.Until(at(t, time.UTC, "2026-12-08 13:00"), time.UTC)
	assert.True(t, inside)
	assert.Equal(t, at(t, time.UTC, "2026-12-08 14:30"), end)
	inside, _ = q.Until(at(t, time.UTC, "2026-12-08 14:30"), time.UTC)
	assert.False(t, inside)
}

// On the night clocks go back (New York, 2026-11-01, 02:00 EDT -> 01:00
// EST), a window 00:00-03:00 is 4 hours long and ends at 03:00 EST; on the
// night they go forward (2026-03-08, 02:00 EST -> 03:00 EDT) it is 2 hours.
func TestQuietHoursAcrossDST(t *testing.T) {
	ny, err := Location("America/New_York")
	require.NoError(t, err)
	q := QuietHours{Start: "00:00", End: "03:00"}
	start := at(t, ny, "2026-11-01 00:30")
	inside, end := q.Until(start, ny)
	require.True(t, inside)
	assert.Equal(t, "2026-11-01T03:00:00-05:00", end.Format(time.RFC3339))
	assert.Equal(t, 3*time.Hour+30*time.Minute, end.Sub(start))

	start = at(t, ny, "2026-03-08 00:30")
	inside, end = q.Until(start, ny)
	require.True(t, inside)
	assert.Equal(t, "2026-03-08T03:00:00-04:00", end.Format(time.RFC3339))
	assert.Equal(t, time.Hour+30*time.Minute, end.Sub(start))

	// A window ending at 02:30, a wall time that does not exist that night:
	// it ends at the jump, when the clock reads 03:00 EDT.
	q = QuietHours{Start: "01:00", End: "02:30"}
	inside, end = q.Until(at(t, ny, "2026-03-08 01:15"), ny)
	require.True(t, inside)
	assert.Equal(t, "2026-03-08T03:00:00-04:00", end.Format(time.RFC3339))
}

func TestValidation(t *testing.T) {
	field, err := QuietHours{Start: "24:00", End: "08:00"}.Validate()
	assert.Equal(t, "start", field)
	assert.Error(t, err)
	field, err = QuietHours{Start: "08:00", End: "08:00"}.Validate()
	assert.Equal(t, "end", field)
	assert.Error(t, err)
	_, err = ParseWindow("22:00-08:00")
	assert.NoError(t, err)
	_, err = ParseWindow("22-08")
	assert.Error(t, err)

	var th Throttle
	require.NoError(t, json.Unmarshal([]byte(`{"limit":3,"per":"1h"}`), &th))
	assert.Equal(t, Duration(time.Hour), th.Per)
	field, err = Throttle{Limit: 0, Per: Duration(time.Hour)}.Validate()
	assert.Equal(t, "limit", field)
	assert.Error(t, err)
	assert.Error(t, json.Unmarshal([]byte(`{"limit":3,"per":"an hour"}`), &th))

	var d Digest
	require.NoError(t, json.Unmarshal([]byte(`{"window":"10m","maxItems":50}`), &d))
	_, err = d.Validate()
	assert.NoError(t, err)
	field, _ = Digest{Window: Duration(time.Millisecond), MaxItems: 5}.Validate()
	assert.Equal(t, "window", field)
	b, _ := json.Marshal(d)
	assert.JSONEq(t, `{"window":"10m0s","maxItems":50}`, string(b))
}
