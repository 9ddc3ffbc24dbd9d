package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
)

// Refusal says why an attempt may not start.
type Refusal int

// The reasons BeginAttempt refuses an attempt.
const (
	// Allowed: the attempt may start.
	Allowed Refusal = iota
	// Terminal: the notification is DELIVERED, FAILED or CANCELLED already.
	Terminal
	// Expired: expiresAt has passed.
	Expired
	// Begun: an attempt asked to be the first found one begun already.
	Begun
	// Superseded: the notification was retried since the run that asks
	// began; a later generation owns it.
	Superseded
	// Refused: the address is suppressed, or opted out of the
	// notification's category (the notification's SkipReason says which);
	// the attempt begun must be taken back (Skip).
	Refused
)

// beginColumns are the notification's columns as an attempt's begin reads
// them: skip_reason carries the consent check of a notification naming its
// address (consentRefusal); a profile's notification is resolved
// afterwards (ResolveRecipient).
var beginColumns = strings.Replace(notificationColumns, "skip_reason",
	"CASE WHEN recipient_id IS NULL THEN "+consentRefusal+" END AS skip_reason", 1)

// consentRefusal is why the notification in hand must not be sent to its
// address, or NULL: 'suppressed' when the address is on its tenant's
// suppression list; 'opted-out' when its category is not critical and the
// address, or a profile that holds it, opted out of it on the channel. It
// is a few index probes written into the begin's own statement, so it is
// planned (and its plan cached) with it: as a SQL function it was planned
// again on every call, which cost PostgreSQL about 1 ms of CPU a
// notification (make bench-ab). A notification with no category pays one
// probe, of the suppression list's primary key.
const consentRefusal = `(CASE
	WHEN EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = notifications.tenant_id
		AND s.channel = notifications.channel AND s.address = notifications.recipient)
		THEN 'suppressed'
	WHEN notifications.category IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.tenant_id = notifications.tenant_id
			AND c.name = notifications.category AND c.critical)
		AND (EXISTS (SELECT 1 FROM opt_outs o WHERE o.tenant_id = notifications.tenant_id
				AND o.channel = notifications.channel AND o.address = notifications.recipient
				AND o.category = notifications.category)
			OR EXISTS (SELECT 1 FROM recipient_addresses ra
				JOIN recipients r ON r.tenant_id = ra.tenant_id AND r.id = ra.recipient_id
				WHERE ra.tenant_id = notifications.tenant_id AND ra.channel = notifications.channel
					AND ra.address = notifications.recipient
					AND r.preferences -> notifications.category ->> notifications.channel = 'false'))
		THEN 'opted-out'
END)`

// BeginAttempt is BeginGenerationAttempt for whatever generation the
// notification is in.
func BeginAttempt(ctx context.Context, q Querier, id uuid.UUID, attempt int, first bool) (Notification, Refusal, error) {
	return BeginGenerationAttempt(ctx, q, id, nil, attempt, first)
}

// BeginGenerationAttempt marks a notification PROCESSING for the given
// attempt and returns it, unless an attempt may not start: the notification
// is of a later generation than gen (it was retried since the run that asks
// began: Superseded, and nothing is written), it is terminal, a cancel was
// requested (it is then marked CANCELLED here, so the cancel wins even if its
// signal never reached the workflow), or it expired. The checks and the
// update are one statement. A nil gen (an attempt scheduled by a worker from
// before generations travelled with attempts) checks no generation. A
// notification that no longer exists is ErrNotFound.
//
// The notification's attempts become at least attempt (the workflow numbers
// them): beginning the same attempt again (it could not be made, or the
// first try's answer was lost with its connection) counts it once, and an
// attempt lost with its worker still counts, since the provider may have
// seen it. With first set it begins only a notification no attempt began
// for yet (ACCEPTED, QUEUED) or whose attempt was taken back by a hold
// (SCHEDULED, deferred by one: the fast path makes the attempt after a
// hold), and refuses with Begun otherwise.
func BeginGenerationAttempt(ctx context.Context, q Querier, id uuid.UUID, gen *int, attempt int, first bool) (Notification, Refusal, error) {
	rows, err := q.Query(ctx, `
		UPDATE notifications
		SET status = 'PROCESSING', attempts = GREATEST(attempts, $2), next_attempt_at = NULL, updated_at = now()
		WHERE id = $1 AND status IN `+nonTerminal+`
			AND cancel_requested_at IS NULL AND (expires_at IS NULL OR expires_at > now())
			AND (NOT $3 OR status IN ('ACCEPTED', 'QUEUED') OR (status = 'SCHEDULED' AND deferred_by IS NOT NULL))
			AND ($4::int IS NULL OR generation = $4)
		RETURNING `+beginColumns, id, attempt, first, gen)
	if err != nil {
		return Notification{}, Allowed, fmt.Errorf("beginning attempt: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if err == nil && n.SkipReason != nil {
		return n, Refused, nil
	}
	if err == nil {
		return n, Allowed, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, Allowed, fmt.Errorf("beginning attempt: %w", err)
	}
	n, err = GetNotification(ctx, q, id)
	switch {
	case err != nil:
		return Notification{}, Allowed, err
	case gen != nil && n.Generation != *gen:
		return n, Superseded, nil
	case n.Status.Terminal():
		return n, Terminal, nil
	case n.CancelRequestedAt != nil:
		status, err := MarkGenerationCancelled(ctx, q, id, gen)
		if errors.Is(err, ErrSuperseded) {
			return n, Superseded, nil
		}
		n.Status = status
		return n, Terminal, err
	case first && n.Status != notification.StatusAccepted && n.Status != notification.StatusQueued &&
		(n.Status != notification.StatusScheduled || n.DeferredBy == nil):
		return n, Begun, nil
	default:
		return n, Expired, nil
	}
}

// ErrSuperseded says the notification is of a later generation than the
// run that asked (an explicit retry began a new one): nothing was changed.
var ErrSuperseded = errors.New("the notification was retried since: a later generation owns it")

// MarkCancelled is MarkGenerationCancelled for whatever generation the
// notification is in.
func MarkCancelled(ctx context.Context, q Querier, id uuid.UUID) (Status, error) {
	return MarkGenerationCancelled(ctx, q, id, nil)
}

// MarkGenerationCancelled moves a non-terminal notification of generation
// gen (any generation when nil) to CANCELLED and returns the status it ends
// with (an already terminal status stands). A notification of another
// generation is left alone: ErrSuperseded, with its status. One that no
// longer exists is ErrNotFound.
func MarkGenerationCancelled(ctx context.Context, q Querier, id uuid.UUID, gen *int) (Status, error) {
	var (
		status  Status
		current int
	)
	err := q.QueryRow(ctx, `
		WITH u AS (
			UPDATE notifications
			SET status = 'CANCELLED', next_attempt_at = NULL, updated_at = now(),
				cancel_requested_at = COALESCE(cancel_requested_at, now())
			WHERE id = $1 AND status IN `+nonTerminal+` AND ($2::int IS NULL OR generation = $2)
			RETURNING status, generation
		)
		SELECT status, generation FROM u
		UNION ALL
		SELECT status, generation FROM notifications WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM u)`, id, gen).Scan(&status, &current)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("marking notification cancelled: %w", err)
	}
	if gen != nil && current != *gen {
		return status, ErrSuperseded
	}
	return status, nil
}

// MarkRetrying shows a notification of generation gen (any when nil) that
// is not terminal and has no cancel request as RETRYING until next: its
// workflow waits before the next attempt (a backoff, an outage, every
// breaker open). It reports whether the row changed.
func MarkRetrying(ctx context.Context, q Querier, id uuid.UUID, gen *int, next time.Time) (bool, error) {
	tag, err := q.Exec(ctx, `
		UPDATE notifications SET status = 'RETRYING', next_attempt_at = $3, updated_at = now()
		WHERE id = $1 AND status IN `+nonTerminal+` AND cancel_requested_at IS NULL
			AND ($2::int IS NULL OR generation = $2)`, id, gen, next)
	if err != nil {
		return false, fmt.Errorf("marking notification retrying: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Attempt is one row of delivery_attempts.
type Attempt struct {
	NotificationID  uuid.UUID `db:"notification_id"`
	Attempt         int       `db:"attempt"`
	StartedAt       time.Time `db:"started_at"`
	DurationMS      int       `db:"duration_ms"`
	StatusCode      *int      `db:"status_code"`
	Outcome         string    `db:"outcome"`
	Error           *string   `db:"error"`
	ResponseExcerpt *string   `db:"response_excerpt"`
	// Provider is who the attempt went to; ProviderMessageID the
	// provider's id for the message. Receipt, ReceiptReason and ReceiptAt
	// are what the provider reported later.
	Provider          *string    `db:"provider"`
	ProviderMessageID *string    `db:"provider_message_id"`
	Receipt           *string    `db:"receipt"`
	ReceiptReason     *string    `db:"receipt_reason"`
	ReceiptAt         *time.Time `db:"receipt_at"`
	// Channel is the channel the attempt went on (nil for attempts recorded
	// before attempts named it).
	Channel *string `db:"channel"`
}

// Transition is the status change that closes an attempt.
type Transition struct {
	Status        Status
	LastError     *string
	FailureReason *string
	NextAttemptAt *time.Time
	// Generation, when set, applies the change only to a notification still
	// of that generation (the attempt row is kept either way: it happened).
	Generation *int
}

// FinishAttempt records an attempt and applies the status change it caused,
// in one statement: the notification's attempts become at least a.Attempt,
// as BeginAttempt does (the workflow's RecordAttempt, too, goes through
// here). The change applies only while the notification is not terminal and
// still of t.Generation (when set), so a late or repeated attempt, or one of
// a generation retried since, never moves it; the attempt row is kept either
// way, as it happened. A DELIVERED or SENT notification keeps no lastError:
// the provider took it, and an earlier attempt's error no longer describes it. Text that a PostgreSQL text column cannot hold (NUL,
// invalid UTF-8: a binary reply) is replaced first (SafeText).
func FinishAttempt(ctx context.Context, q Querier, a Attempt, t Transition) error {
	a.Error, a.ResponseExcerpt, t.LastError = safeTextPtr(a.Error), safeTextPtr(a.ResponseExcerpt), safeTextPtr(t.LastError)
	_, err := q.Exec(ctx, `
		WITH n AS (
			-- Locked first: an erasure committing meanwhile is seen, and its
			-- person's words never reach the attempt log after it.
			-- The attempt went on the channel in hand (a fallback moves on
			-- only after it is recorded).
			SELECT erased_at IS NOT NULL AS erased, channel FROM notifications WHERE id = $1 FOR UPDATE
		), a AS (
			INSERT INTO delivery_attempts (notification_id, attempt, started_at, duration_ms,
				status_code, outcome, error, response_excerpt, provider, provider_message_id, channel)
			SELECT $1, $2, $3, $4, $5, $6, CASE WHEN erased THEN NULL ELSE $7 END,
				CASE WHEN erased THEN NULL ELSE $8 END, $13, $14, n.channel FROM n
			ON CONFLICT (notification_id, attempt) DO NOTHING
		)
		UPDATE notifications
		SET status = $9, attempts = GREATEST(attempts, $2),
			last_error = CASE WHEN erased_at IS NULL AND $9 NOT IN ('DELIVERED', 'SENT') THEN COALESCE($10, last_error) END,
			failure_reason = $11,
			next_attempt_at = $12, updated_at = now(), provider = COALESCE($13, provider),
			delivered_at = CASE WHEN $9 = 'DELIVERED' THEN now() ELSE delivered_at END
		FROM n -- read (and locked) before the update, by either side
		WHERE id = $1 AND status IN `+nonTerminal+` AND ($15::int IS NULL OR generation = $15)`,
		a.NotificationID, a.Attempt, a.StartedAt, a.DurationMS, a.StatusCode, a.Outcome, a.Error,
		a.ResponseExcerpt, t.Status, t.LastError, t.FailureReason, t.NextAttemptAt, a.Provider, safeTextPtr(a.ProviderMessageID),
		t.Generation)
	if err != nil {
		return fmt.Errorf("recording attempt %d: %w", a.Attempt, err)
	}
	return nil
}

// SafeText returns s as a PostgreSQL text value can hold it: invalid UTF-8
// and NUL (which text rejects: "invalid byte sequence for encoding UTF8:
// 0x00") become U+FFFD. A provider may answer anything, binary included.
func SafeText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func safeTextPtr(s *string) *string {
	if s == nil {
		return nil
	}
	v := SafeText(*s)
	return &v
}

// CancelRequested reports whether a cancel was requested for the
// notification (it may not have reached its workflow yet).
func CancelRequested(ctx context.Context, q Querier, id uuid.UUID) (bool, error) {
	var requested bool
	err := q.QueryRow(ctx, `SELECT cancel_requested_at IS NOT NULL FROM notifications WHERE id = $1`, id).Scan(&requested)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("reading the cancel request: %w", err)
	}
	return requested, nil
}

// Fail moves a non-terminal notification to FAILED with d's reason (its
// attempts at least d.Attempts) and, in the same statement, writes d to the
// outbox, from which the relay publishes the notification's dead-letter
// message. It returns the notification as it ends: one already terminal
// (delivered, cancelled) stands, and then nothing is written, so a
// notification is dead-lettered exactly when it failed. The record carries
// the row's generation as this statement finds it, not d.Generation: the
// message is of the generation that failed, which is what a later retry or
// erasure retires.
func Fail(ctx context.Context, q Querier, id uuid.UUID, d notification.DeadLetter) (Notification, error) {
	return FailGeneration(ctx, q, id, nil, d)
}

// FailGeneration is Fail for a notification still of generation gen (any
// when nil): one of another generation (retried since) is answered as it
// is, and nothing is written.
func FailGeneration(ctx context.Context, q Querier, id uuid.UUID, gen *int, d notification.DeadLetter) (Notification, error) {
	d.LastError = SafeText(d.LastError) // jsonb refuses \u0000 too
	record, err := json.Marshal(d)
	if err != nil {
		return Notification{}, fmt.Errorf("encoding the dead-letter record: %w", err)
	}
	rows, err := q.Query(ctx, `
		WITH u AS (
			UPDATE notifications
			SET status = 'FAILED', failure_reason = $2,
				last_error = CASE WHEN erased_at IS NULL THEN COALESCE(NULLIF($3, ''), last_error) END,
				attempts = GREATEST(attempts, $4), next_attempt_at = NULL, updated_at = now()
			WHERE id = $1 AND status IN `+nonTerminal+` AND ($6::int IS NULL OR generation = $6)
			RETURNING `+notificationColumns+`
		), o AS (
			INSERT INTO outbox (notification_id, channel, priority, dead_letter)
			-- An erased notification's record keeps no error text (the
			-- provider's may repeat the recipient).
			SELECT id, channel, priority, jsonb_set(CASE WHEN erased_at IS NULL THEN $5::jsonb ELSE $5::jsonb - 'lastError' END,
				'{generation}', to_jsonb(generation)) FROM u
		)
		SELECT `+notificationColumns+` FROM u
		UNION ALL
		SELECT `+notificationColumns+` FROM notifications WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM u)`,
		id, d.Reason, d.LastError, d.Attempts, record, gen)
	if err != nil {
		return Notification{}, fmt.Errorf("marking notification failed: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, ErrNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("marking notification failed: %w", err)
	}
	return n, nil
}

// MarkScheduled moves a notification that is waiting for its scheduledAt
// from ACCEPTED or QUEUED to SCHEDULED.
func MarkScheduled(ctx context.Context, q Querier, id uuid.UUID) error {
	_, err := q.Exec(ctx, `
		UPDATE notifications SET status = 'SCHEDULED', updated_at = now()
		WHERE id = $1 AND status IN ('ACCEPTED', 'QUEUED')`, id)
	if err != nil {
		return fmt.Errorf("marking notification scheduled: %w", err)
	}
	return nil
}

// ListAttempts returns a notification's attempts in order.
func ListAttempts(ctx context.Context, q Querier, id uuid.UUID) ([]Attempt, error) {
	rows, err := q.Query(ctx, `
		SELECT notification_id, attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt,
			provider, provider_message_id, receipt, receipt_reason, receipt_at, channel
		FROM delivery_attempts WHERE notification_id = $1 ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	attempts, err := pgx.CollectRows(rows, pgx.RowToStructByName[Attempt])
	if err != nil {
		return nil, fmt.Errorf("listing attempts: %w", err)
	}
	return attempts, nil
}

// OutboxBacklog counts the outbox rows not yet relayed and the age of the oldest.
func OutboxBacklog(ctx context.Context, q Querier) (int64, time.Duration, error) {
	var (
		rows int64
		age  float64
	)
	err := q.QueryRow(ctx, `
		SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM outbox`).Scan(&rows, &age)
	if err != nil {
		return 0, 0, fmt.Errorf("measuring the outbox backlog: %w", err)
	}
	return rows, time.Duration(age * float64(time.Second)), nil
}
