package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// dashboard is the part of Grafana's dashboard model the product relies on.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Panels        []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricName = regexp.MustCompile(`\bdispatch_[a-z_]+`)
	descName   = regexp.MustCompile(`fqName: "([a-z_:]+)"`)
)

// TestDashboardLoadsAndQueriesOnlyRealMetrics keeps deploy/grafana in step
// with the metrics: it must load as a dashboard, and every dispatch_* series
// it queries must be one the processes export.
func TestDashboardLoadsAndQueriesOnlyRealMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/dashboards/dispatch-engine.json")
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	var d dashboard
	require.NoError(t, dec.Decode(&d))
	require.NotEmpty(t, d.UID)
	require.NotEmpty(t, d.Title)
	require.GreaterOrEqual(t, d.SchemaVersion, 36)
	require.NotEmpty(t, d.Panels)

	known := map[string]bool{}
	api, worker := NewAPI(), NewWorker()
	worker.RegisterBacklog(nil, nil)
	for _, reg := range []*prometheus.Registry{api.Registry, worker.Registry} {
		descs := make(chan *prometheus.Desc, 256)
		go func() {
			defer close(descs)
			// Describe every registered collector: unlike Gather, it lists
			// vectors with no samples yet.
			reg.Describe(descs)
		}()
		for desc := range descs {
			if m := descName.FindStringSubmatch(desc.String()); m != nil {
				known[m[1]] = true
			}
		}
	}

	ids := map[int]bool{}
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "panel id %d used twice", p.ID)
		ids[p.ID] = true
		require.NotEmpty(t, p.Type, "panel %q", p.Title)
		require.Positive(t, p.GridPos.W, "panel %q", p.Title)
		require.Positive(t, p.GridPos.H, "panel %q", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				require.True(t, known[base], "panel %q queries %s, which no process exports", p.Title, m)
			}
		}
	}
}
