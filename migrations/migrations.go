// Package migrations holds the versioned schema as numbered up/down SQL files,
// embedded so every binary carries the schema it was built for.
package migrations

import "embed"

// FS holds the *.up.sql and *.down.sql files.
//
//go:embed *.sql
var FS embed.FS
