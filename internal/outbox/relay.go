// Package outbox relays the transactional outbox to RabbitMQ: rows written
// with their notification are published with publisher confirms and deleted
// only after the broker confirmed them, so a crash anywhere republishes
// rather than loses (at-least-once). The Waker (waker.go) wakes the relays
// after a commit; trace.go carries a traced request's context from its row
// to the published message.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// Config configures a Relay.
type Config struct {
	// BatchSize is the most rows published per round. Default 200.
	BatchSize int
	// PollInterval is how often the relay looks for rows when no NOTIFY
	// wakes it (a missed notification costs at most this). Default 1s.
	PollInterval time.Duration
	// Topology names the exchange.
	Topology queue.Topology
	// Relayed, when set, counts confirmed rows.
	Relayed prometheus.Counter
}

// Relay publishes outbox rows. Several relays may run at once: each claims
// rows with FOR UPDATE SKIP LOCKED.
type Relay struct {
	cfg  Config
	pool *pgxpool.Pool
	pub  Publisher
	log  *zap.Logger
	wake chan struct{}
}

// Publisher publishes messages with the broker's confirms: a
// *queue.Publisher.
type Publisher interface {
	Publish(ctx context.Context, msgs ...queue.Outgoing) error
}

// NewRelay returns a Relay.
func NewRelay(cfg Config, pool *pgxpool.Pool, pub Publisher, log *zap.Logger) *Relay {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 200
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	return &Relay{cfg: cfg, pool: pool, pub: pub, log: log, wake: make(chan struct{}, 1)}
}

// Wake has the relay look for rows now rather than at its next poll (a
// process that wrote outbox rows itself calls it).
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends. It wakes on LISTEN outbox and on a timer.
func (r *Relay) Run(ctx context.Context) error {
	go r.listen(ctx)
	ticker := time.NewTicker(r.cfg.PollInterval)
	defer ticker.Stop()
	backoff := 100 * time.Millisecond
	for {
		n, err := r.RelayOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Warn("outbox relay round failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		case n == r.cfg.BatchSize:
			backoff = 100 * time.Millisecond
			continue // more may be waiting
		}
		backoff = 100 * time.Millisecond
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-ticker.C:
		}
	}
}

type row struct {
	ID             int64                 `db:"id"`
	NotificationID uuid.UUID             `db:"notification_id"`
	Channel        notification.Channel  `db:"channel"`
	Priority       notification.Priority `db:"priority"`
	// DeadLetter, when set, makes the row the notification's dead-letter
	// message instead of its delivery message.
	DeadLetter *notification.DeadLetter `db:"dead_letter"`
	// TraceParent is the trace of the request that wrote the row, carried
	// on in the message's headers; nil when it was not traced.
	TraceParent *string `db:"traceparent"`
}

// RelayOnce publishes up to BatchSize rows and returns how many. The rows
// stay locked until the broker confirmed them and they are deleted in the
// same transaction.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("beginning relay transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	rows, err := tx.Query(ctx, `
		SELECT id, notification_id, channel, priority, dead_letter, traceparent FROM outbox
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("claiming outbox rows: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return 0, fmt.Errorf("claiming outbox rows: %w", err)
	}
	if len(claimed) == 0 {
		return 0, nil
	}

	msgs := make([]queue.Outgoing, len(claimed))
	ids := make([]int64, len(claimed))
	var queued, dead []uuid.UUID
	var spans publishSpans
	for _, c := range claimed {
		if c.DeadLetter != nil {
			dead = append(dead, c.NotificationID)
		}
	}
	payloads, err := r.payloads(ctx, tx, dead, claimed)
	if err != nil {
		return 0, err
	}
	for i, c := range claimed {
		ids[i] = c.ID
		if c.DeadLetter != nil {
			msgs[i] = r.cfg.Topology.DeadLetterMessage(string(c.Channel), c.NotificationID.String(), payloads[c.NotificationID], *c.DeadLetter)
			continue
		}
		body, err := json.Marshal(notification.Message{ID: c.NotificationID.String(), Channel: c.Channel, Priority: c.Priority})
		if err != nil {
			return 0, fmt.Errorf("encoding message: %w", err)
		}
		msgs[i] = queue.Outgoing{
			Exchange:   r.cfg.Topology.Exchange(),
			RoutingKey: string(c.Channel),
			Body:       body,
			Priority:   notification.BrokerPriority(c.Priority),
			MessageID:  c.NotificationID.String(),
			Headers:    spans.start(ctx, c),
		}
		queued = append(queued, c.NotificationID)
	}
	err = r.pub.Publish(ctx, msgs...)
	spans.end(err)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("deleting relayed outbox rows: %w", err)
	}
	held, err := markQueued(ctx, tx, queued)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("committing relay transaction: %w", err)
	}
	if len(held) > 0 {
		// Holding nothing now, it may wait for them.
		if err := store.MarkQueued(ctx, r.pool, held); err != nil {
			r.log.Warn("could not mark relayed notifications queued", zap.Int("count", len(held)), zap.Error(err))
		}
	}
	if r.cfg.Relayed != nil {
		r.cfg.Relayed.Add(float64(len(claimed)))
	}
	r.log.Debug("relayed outbox rows", zap.Int("count", len(claimed)), zap.Int("dead_letters", len(dead)))
	return len(claimed), nil
}

// markQueued moves the ACCEPTED notifications among ids to QUEUED, inside
// the relay's transaction, without waiting for a notification another
// transaction holds: it returns those, to be marked after the commit.
//
// Everything else takes a notification's lock before its outbox rows (an
// operation page locks its notifications, then drops their dead-letter
// records; a retry the same), while the relay holds outbox rows already:
// waiting here for a notification would close a cycle PostgreSQL can
// only break by aborting one side (40P01). So the relay takes no lock on
// notifications it would have to wait for while it holds outbox rows.
func markQueued(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (held []uuid.UUID, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	// The statement's snapshot still sees the rows it updates as ACCEPTED:
	// those ACCEPTED and not updated are the ones held.
	rows, err := tx.Query(ctx, `
		WITH free AS (
			SELECT id FROM notifications WHERE id = ANY($1) AND status = 'ACCEPTED'
			FOR UPDATE SKIP LOCKED
		), u AS (
			UPDATE notifications n SET status = 'QUEUED', updated_at = now()
			FROM free WHERE n.id = free.id
			RETURNING n.id
		)
		SELECT id FROM notifications
		WHERE id = ANY($1) AND status = 'ACCEPTED' AND id NOT IN (SELECT id FROM u)`, ids)
	if err != nil {
		return nil, fmt.Errorf("marking notifications queued: %w", err)
	}
	held, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("marking notifications queued: %w", err)
	}
	return held, nil
}

// payloads builds the dead-letter bodies of the dead notifications: the
// payload a provider would get, with the attempts made. A row that is gone
// gets the bare delivery message.
func (r *Relay) payloads(ctx context.Context, q store.Querier, dead []uuid.UUID, claimed []row) (map[uuid.UUID][]byte, error) {
	if len(dead) == 0 {
		return nil, nil
	}
	found, err := store.GetNotifications(ctx, q, dead)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID][]byte, len(dead))
	for _, c := range claimed {
		if c.DeadLetter == nil {
			continue
		}
		var v any = notification.Message{ID: c.NotificationID.String(), Channel: c.Channel, Priority: c.Priority}
		if n, ok := found[c.NotificationID]; ok {
			v = n.Payload(c.DeadLetter.Attempts)
		}
		body, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding dead-letter body: %w", err)
		}
		out[c.NotificationID] = body
	}
	return out, nil
}

// listen holds a connection in LISTEN outbox and signals wake on every
// notification, reconnecting with backoff when the connection drops.
func (r *Relay) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("outbox listener disconnected; polling until it reconnects", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (r *Relay) listenOnce(ctx context.Context) error {
	pooled, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring listen connection: %w", err)
	}
	// A LISTENing connection must not go back to the pool.
	conn := pooled.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN outbox"); err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		r.Wake()
	}
}
