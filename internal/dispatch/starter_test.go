package dispatch_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/dispatch"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// These tests cover only the paths of Starter.Handle that return before
// touching Temporal, so the starter has no Temporal client (nil).

func newStarter(t *testing.T) (*dispatch.Starter, *pgxpool.Pool, *metrics.Worker) {
	t.Helper()
	pool, _ := testenv.Pool(t)
	m := metrics.NewWorker()
	return dispatch.NewStarter(dispatch.StarterConfig{}, pool, nil, nil, m, zap.NewNop()), pool, m
}

func delivery(t *testing.T, body any) amqp.Delivery {
	t.Helper()
	raw, ok := body.(string)
	if !ok {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		raw = string(b)
	}
	return amqp.Delivery{RoutingKey: string(notification.SMS), Body: []byte(raw)}
}

// workflowStarts reads dispatch_workflow_starts_total{channel, result}.
func workflowStarts(t *testing.T, m *metrics.Worker, channel, result string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "dispatch_workflow_starts_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["channel"] == channel && labels["result"] == result {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func requirePoison(t *testing.T, err error, reason string) {
	t.Helper()
	var poison *queue.PoisonError
	require.ErrorAs(t, err, &poison)
	require.Equal(t, reason, poison.Reason)
}

func TestHandleUnparseableBodyIsPoison(t *testing.T) {
	for name, body := range map[string]any{
		"not JSON":       "not json",
		"id not a UUID":  notification.Message{ID: "42", Channel: notification.SMS, Priority: notification.Normal},
		"JSON of a list": `[1, 2]`,
	} {
		t.Run(name, func(t *testing.T) {
			s, _, m := newStarter(t)
			requirePoison(t, s.Handle(context.Background(), delivery(t, body)), "unparseable")
			require.Equal(t, 1.0, workflowStarts(t, m, string(notification.SMS), "poison"))
		})
	}
}

func TestHandleUnknownIDIsPoison(t *testing.T) {
	s, _, m := newStarter(t)
	msg := notification.Message{ID: uuid.NewString(), Channel: notification.SMS, Priority: notification.Normal}
	requirePoison(t, s.Handle(context.Background(), delivery(t, msg)), "unknown-id")
	require.Equal(t, 1.0, workflowStarts(t, m, string(notification.SMS), "poison"))
}

func TestHandleSkipsTerminalNotification(t *testing.T) {
	ctx := context.Background()
	s, pool, m := newStarter(t)
	n := store.NewNotification{
		ID: uuid.Must(uuid.NewV7()), Channel: notification.SMS, Priority: notification.Normal,
		Recipient: "+14155550123", Content: "hello",
	}
	_, err := store.CreateNotification(ctx, pool, n)
	require.NoError(t, err)
	require.NoError(t, store.FinishAttempt(ctx, pool,
		store.Attempt{NotificationID: n.ID, Attempt: 1, StartedAt: time.Now(), DurationMS: 1, Outcome: "delivered"},
		store.Transition{Status: notification.StatusDelivered}))

	msg := notification.Message{ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority}
	require.NoError(t, s.Handle(ctx, delivery(t, msg)), "a terminal notification is acked without a workflow")
	require.Equal(t, 1.0, workflowStarts(t, m, string(notification.SMS), "skipped"))

	status, err := store.GetStatus(ctx, pool, n.ID)
	require.NoError(t, err)
	require.Equal(t, notification.StatusDelivered, status)
}
