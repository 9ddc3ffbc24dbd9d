// Package version names the build: the image build sets these with
// -ldflags "-X github.com/dispatch-engine/dispatch-engine/internal/version.Version=...".
package version

// Set at link time; a plain `go build` leaves the defaults.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// String is "<version> (commit <commit>, built <date>)".
func String() string {
	return Version + " (commit " + Commit + ", built " + Date + ")"
}
