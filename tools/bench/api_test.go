package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	dispatch "github.com/dispatch-engine/dispatch-engine/client"
)

// fakeAnswer is a generated client's response as check reads it.
type fakeAnswer struct {
	status int
	body   []byte
}

func (a fakeAnswer) StatusCode() int { return a.status }
func (a fakeAnswer) GetBody() []byte { return a.body }

func TestCheckTurnsANon2xxAnswerIntoAStatusError(t *testing.T) {
	require.NoError(t, check("POST", "/v1/notifications", fakeAnswer{status: 202}))
	require.NoError(t, check("GET", "/v1/notifications/x", fakeAnswer{status: 200, body: []byte("{}")}))

	err := check("POST", "/v1/notifications", fakeAnswer{status: 429, body: []byte("  {\"title\":\"Too Many Requests\"}\n")})
	var se *statusError
	require.True(t, errors.As(err, &se))
	require.Equal(t, &statusError{Method: "POST", Path: "/v1/notifications", Status: 429, Body: "  {\"title\":\"Too Many Requests\"}\n"}, se)
	require.EqualError(t, err, `POST /v1/notifications: 429 {"title":"Too Many Requests"}`)

	long := strings.Repeat("x", 1000)
	err = check("POST", "/v1/notifications/batch", fakeAnswer{status: 500, body: []byte(long)})
	require.True(t, errors.As(err, &se))
	require.Len(t, se.Body, 400, "a long body is cut to what an error message can hold")
	require.Error(t, check("GET", "/readyz", fakeAnswer{status: 304}), "a redirect is not an answer")
}

func TestNotificationForRotatesEveryChannelAndPriority(t *testing.T) {
	type pair struct {
		ch dispatch.Channel
		p  dispatch.Priority
	}
	seen := map[pair]int{}
	for i := range 9 {
		n := notificationFor("run1", i)
		require.Equal(t, fmt.Sprintf("bench run1 #%d", i), n.Content)
		require.NotNil(t, n.Priority)
		seen[pair{n.Channel, *n.Priority}]++
		switch n.Channel {
		case dispatch.ChannelSms:
			require.Equal(t, "+14155550123", n.Recipient)
			require.Nil(t, n.Subject)
		case dispatch.ChannelEmail:
			require.Equal(t, "bench@example.com", n.Recipient)
			require.NotNil(t, n.Subject)
			require.Equal(t, "Bench run1", *n.Subject)
		case dispatch.ChannelPush:
			require.Equal(t, "device-token-0123456789", n.Recipient)
			require.Nil(t, n.Subject)
		default:
			t.Fatalf("unexpected channel %q", n.Channel)
		}
	}
	require.Len(t, seen, 9, "nine in a row cover the three channels × three priorities once each")
	require.Equal(t, notificationFor("run1", 4), notificationFor("run1", 4), "the i-th is always the same")
}

func TestSettingReadsTheEnvironmentOverDotEnv(t *testing.T) {
	t.Chdir(t.TempDir())
	require.NoError(t, os.WriteFile(".env", []byte("# local settings\nAPI_PORT=8180\nTEMPORAL_ADDRESS=\"127.0.0.1:17233\"\nEMPTY=\n"), 0o600))

	t.Setenv("API_PORT", "9080")
	t.Setenv("TEMPORAL_ADDRESS", "")
	t.Setenv("EMPTY", "")
	for _, tc := range []struct{ name, key, want string }{
		{"the environment wins", "API_PORT", "9080"},
		{"an empty variable falls back to .env", "TEMPORAL_ADDRESS", "127.0.0.1:17233"},
		{"empty in both: the default", "EMPTY", "def"},
		{"in neither: the default", "NOT_SET_ANYWHERE_BENCH", "def"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, setting(tc.key, "def"))
		})
	}
}

func TestSettingWithoutDotEnvIsTheEnvironmentOrTheDefault(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("API_PORT", "9080")
	require.Equal(t, "9080", setting("API_PORT", "8080"))
	require.Equal(t, "8080", setting("NOT_SET_ANYWHERE_BENCH", "8080"))
}

func TestDefaultAPIKeyIsTheFirstConfiguredElseMakeRunsKey(t *testing.T) {
	t.Chdir(t.TempDir())

	t.Setenv("API_KEYS", " , key-one ,key-two")
	require.Equal(t, "key-one", defaultAPIKey())

	t.Setenv("API_KEYS", "")
	require.Empty(t, defaultAPIKey(), "no key anywhere")

	require.NoError(t, os.MkdirAll(".data", 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(".data", "dev-api-key"), []byte("dev-key-123\n"), 0o600))
	require.Equal(t, "dev-key-123", defaultAPIKey(), "make run's key, without its newline")

	require.NoError(t, os.WriteFile(".env", []byte("API_KEYS=from-dotenv\n"), 0o600))
	require.Equal(t, "from-dotenv", defaultAPIKey(), "a configured key comes before make run's")
}
