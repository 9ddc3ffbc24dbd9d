package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRefusesToStartWithoutAPIKeys(t *testing.T) {
	t.Setenv("API_KEYS", "")
	err := run()
	require.ErrorContains(t, err, "API_KEYS is empty")
}
