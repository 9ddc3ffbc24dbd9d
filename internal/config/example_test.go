package config

import (
	"os"
	"reflect"
	"regexp"
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

// TestConfigurationDocListsEveryVariable keeps docs/CONFIGURATION.md in step
// with Config: every variable has a row with its default, and no row names
// a variable Config does not read.
func TestConfigurationDocListsEveryVariable(t *testing.T) {
	raw, err := os.ReadFile("../../docs/CONFIGURATION.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| (`([^`]*)`|\\(empty\\)) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = m[3]
	}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		def, ok := documented[name]
		require.True(t, ok, "docs/CONFIGURATION.md lacks %s", name)
		require.Equal(t, f.Tag.Get("envDefault"), def, "docs/CONFIGURATION.md gives %s another default", name)
		delete(documented, name)
	}
	require.Empty(t, documented, "docs/CONFIGURATION.md lists variables Config does not read")
}
