package store_test

import (
	"context"
	"testing"

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
// returning the notification with and without the check (the wall time per
// statement over one loopback connection, PostgreSQL's work included):
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
	for _, c := range []struct {
		name     string
		columns  string
		category bool
	}{
		{"without-check", store.NotificationColumnsForTest, false},
		{"with-check", store.BeginColumnsForTest, false},
		{"with-check-and-category", store.BeginColumnsForTest, true},
	} {
		list := ids(c.category)
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				rows, err := pool.Query(ctx, `UPDATE notifications SET attempts = attempts + 1, updated_at = now()
					WHERE id = $1 RETURNING `+c.columns, list[i%len(list)])
				require.NoError(b, err)
				n, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[store.Notification])
				require.NoError(b, err)
				if n.Status != notification.StatusAccepted {
					b.Fatalf("status %s", n.Status)
				}
			}
		})
	}
}
