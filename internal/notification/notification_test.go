package notification

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMaskRecipientHidesMostOfIt(t *testing.T) {
	t.Parallel()
	cases := []struct {
		channel  Channel
		in, want string
	}{
		{SMS, "+14155550123", "+14•••••••23"},
		{SMS, "+123", "•••"},
		{Email, "alice@example.com", "a•••@example.com"},
		{Email, "nobody", "•••"},
		{Push, "abcdefghijklmnopqrstuvwxyz", "abcd…wxyz"},
		{Push, "short", "•••"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, MaskRecipient(c.channel, c.in), "%s %q", c.channel, c.in)
	}
}
