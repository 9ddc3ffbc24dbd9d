package metrics

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTenantLabelsAreBounded: the first MaxTenantLabels tenants keep their
// name as label, every later one shares OtherTenants.
func TestTenantLabelsAreBounded(t *testing.T) {
	t.Parallel()
	var l TenantLabels
	for i := range MaxTenantLabels {
		require.Equal(t, "t"+strconv.Itoa(i), l.Label("t"+strconv.Itoa(i)))
	}
	require.Equal(t, OtherTenants, l.Label("one-more"))
	require.Equal(t, "t0", l.Label("t0"), "a tenant seen before keeps its label")
}
