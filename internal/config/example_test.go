package config

import (
	"maps"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/joho/godotenv"
	"github.com/stretchr/testify/require"
)

// requireSameVariables fails unless listed (variable → default, as a file
// shows them) names exactly Config's variables, each with its default.
func requireSameVariables(t *testing.T, where string, listed map[string]string) {
	t.Helper()
	listed = maps.Clone(listed)
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		field := typ.Field(i)
		name, _, _ := strings.Cut(field.Tag.Get("env"), ",")
		value, ok := listed[name]
		require.True(t, ok, "%s lacks %s", where, name)
		require.Equal(t, field.Tag.Get("envDefault"), value, "%s gives %s another default", where, name)
		delete(listed, name)
	}
	require.Empty(t, listed, "%s lists variables Config does not read", where)
}

// TestEnvExampleDocumentsEveryVariable keeps .env.example and Config in step.
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	f, err := os.Open("../../.env.example")
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	example, err := godotenv.Parse(f)
	require.NoError(t, err)
	// The example, taken as the whole environment, is a valid configuration.
	_, err = Parse(example)
	require.NoError(t, err)
	requireSameVariables(t, ".env.example", example)
}

// TestConfigurationDocListsEveryVariable keeps docs/CONFIGURATION.md in step
// with Config.
func TestConfigurationDocListsEveryVariable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/CONFIGURATION.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| (`([^`]*)`|\\(empty\\)) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = m[3]
	}
	requireSameVariables(t, "docs/CONFIGURATION.md", documented)
}
