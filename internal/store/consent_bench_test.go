package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// BenchmarkBeginStatement measures what the consent check adds to the
// statement that begins an attempt, for a tenant with no profiles or
// suppressions: the same UPDATE of a table of 20,000 notifications,
// returning the notification with and without the check, and with it for a
// notification with a category. It prints each one's wall time per
// statement over one loopback connection, PostgreSQL's work included:
//
//	go test -run '^$' -bench BenchmarkBeginStatement -benchtime 3000x ./internal/store/
func BenchmarkBeginStatement(b *testing.B) {
	ctx := context.Background()
	pool, _ := testenv.Pool(b)
	_, err := pool.Exec(ctx, `INSERT INTO notifications (id, channel, priority, recipient, content, category)
		SELECT gen_random_uuid(), 'sms', 'HIGH', '+1415555' || i, 'x', CASE WHEN i % 2 = 0 THEN 'news' END
		FROM generate_series(1, 20000) i`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `ANALYZE`)
	require.NoError(b, err)
	ids := func(category bool) []uuid.UUID {
		rows, err := pool.Query(ctx, `SELECT id FROM notifications WHERE (category IS NOT NULL) = $1 LIMIT 2000`, category)
		require.NoError(b, err)
		var out []uuid.UUID
		for rows.Next() {
			var id uuid.UUID
			require.NoError(b, rows.Scan(&id))
			out = append(out, id)
		}
		return out
	}
	variants := []struct {
		name    string
		columns string
		ids     []uuid.UUID
	}{
		{"without-check", store.NotificationColumnsForTest, ids(false)},
		{"with-check", store.BeginColumnsForTest, ids(false)},
		{"with-check-and-category", store.BeginColumnsForTest, ids(true)},
	}
	// Interleaved, each iteration running every variant once, so the
	// table's dead rows and the machine's load weigh on all of them alike.
	spent := make([]time.Duration, len(variants))
	b.ResetTimer()
	for i := range b.N {
		for v, c := range variants {
			start := time.Now()
			rows, err := pool.Query(ctx, `UPDATE notifications SET attempts = attempts + 1, updated_at = now()
				WHERE id = $1 RETURNING `+c.columns, c.ids[i%len(c.ids)])
			require.NoError(b, err)
			n, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[store.Notification])
			require.NoError(b, err)
			spent[v] += time.Since(start)
			if n.Status != notification.StatusAccepted {
				b.Fatalf("status %s", n.Status)
			}
		}
	}
	for v, c := range variants {
		b.ReportMetric(float64(spent[v].Microseconds())/float64(b.N), "µs/"+c.name)
	}
	b.ReportMetric(0, "ns/op")
}
