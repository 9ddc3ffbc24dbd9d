package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/joho/godotenv"
	"github.com/stretchr/testify/require"
)

// TestEnvExampleDocumentsEveryVariable keeps .env.example and Config in step:
// every variable is listed, with its default.
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	f, err := os.Open("../../.env.example")
	require.NoError(t, err)
	defer f.Close()
	example, err := godotenv.Parse(f)
	require.NoError(t, err)
	// The example, taken as the whole environment, is a valid configuration.
	_, err = Parse(example)
	require.NoError(t, err)

	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		field := typ.Field(i)
		name, _, _ := strings.Cut(field.Tag.Get("env"), ",")
		value, ok := example[name]
		require.True(t, ok, ".env.example lacks %s", name)
		require.Equal(t, field.Tag.Get("envDefault"), value, ".env.example's %s differs from the default", name)
		delete(example, name)
	}
	require.Empty(t, example, ".env.example lists variables Config does not read")
}
