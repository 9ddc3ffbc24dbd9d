//go:build race

package e2e

// raceBuild makes the processes under test race-checked when the tests are.
const raceBuild = true
