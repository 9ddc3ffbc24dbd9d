package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

const (
	postmanCollection  = "postman/dispatch-engine.postman_collection.json"
	postmanEnvironment = "postman/dispatch-engine.local.postman_environment.json"
)

// TestPostmanCollection runs the generated Postman collection (make
// postman) with newman against the real api and worker: every request in
// its order, every assertion of its test scripts. newman is pinned in
// tools/package.json; make test installs it.
func TestPostmanCollection(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	newman := filepath.Join(root, "tools", "node_modules", ".bin", "newman")
	if _, err := os.Stat(newman); err != nil {
		t.Fatalf("newman is not installed (%v): run `cd tools && npm ci` (make test does it)", err)
	}
	want := countRequests(t, filepath.Join(root, postmanCollection))

	s := setup(t)
	report := filepath.Join(t.TempDir(), "newman.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, newman, "run", postmanCollection,
		"-e", postmanEnvironment,
		"--env-var", "baseUrl="+s.apiURL,
		"--env-var", "bearerToken="+s.apiKey,
		"--bail",
		"--color", "off",
		"--reporters", "cli,json",
		"--reporter-json-export", report,
	)
	cmd.Dir = root
	out, runErr := cmd.CombinedOutput()
	output := strings.ReplaceAll(string(out), s.apiKey, "<api key>")
	if runErr != nil {
		t.Fatalf("newman failed (%v):\n%s", runErr, output)
	}

	var run newmanReport
	raw, err := os.ReadFile(report)
	require.NoError(t, err, "newman wrote no JSON report; its output:\n%s", output)
	require.NoError(t, json.Unmarshal(raw, &run), "newman's JSON report")
	stats := run.Run.Stats
	for _, f := range run.Run.Failures {
		t.Errorf("%s: %s: %s", f.Source.Name, f.Error.Test, f.Error.Message)
	}
	require.Zero(t, stats.Assertions.Failed+stats.TestScripts.Failed+stats.PrerequestScripts.Failed,
		"failed assertions or scripts; newman's output:\n%s", output)
	require.Zero(t, stats.Requests.Failed, "newman's output:\n%s", output)
	// Every item of the collection ran (an item whose script sends requests
	// of its own, pm.sendRequest, has one execution for each).
	ran := map[string]bool{}
	for _, e := range run.Run.Executions {
		if !ran[e.Item.ID] {
			ran[e.Item.ID] = true
			t.Logf("%-80s %d, %d assertions", e.Item.Name, e.Response.Code, len(e.Assertions))
		}
	}
	require.Equal(t, want, len(ran), "every request of the collection ran; newman's output:\n%s", output)
	// Each request asserts at least its status code and Content-Type.
	require.GreaterOrEqual(t, stats.Assertions.Total, 2*want, "newman's output:\n%s", output)
}

// newmanReport is the part of newman's JSON report the test reads.
type newmanReport struct {
	Run struct {
		Stats struct {
			Requests, Assertions, TestScripts, PrerequestScripts newmanCount
		}
		Failures []struct {
			Error struct {
				Test    string `json:"test"`
				Message string `json:"message"`
			} `json:"error"`
			Source struct {
				Name string `json:"name"`
			} `json:"source"`
		} `json:"failures"`
		Executions []struct {
			Item struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"item"`
			Response struct {
				Code int `json:"code"`
			} `json:"response"`
			Assertions []struct{} `json:"assertions"`
		} `json:"executions"`
	} `json:"run"`
}

type newmanCount struct {
	Total  int `json:"total"`
	Failed int `json:"failed"`
}

// countRequests counts the requests in a Postman collection's folders.
func countRequests(t *testing.T, file string) int {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	type item struct {
		Request json.RawMessage `json:"request"`
		Item    []item          `json:"item"`
	}
	var c item
	require.NoError(t, json.Unmarshal(raw, &c), file)
	var count func(items []item) int
	count = func(items []item) int {
		n := 0
		for _, it := range items {
			if it.Request != nil {
				n++
			}
			n += count(it.Item)
		}
		return n
	}
	n := count(c.Item)
	require.NotZero(t, n, "%s holds no request", file)
	return n
}
