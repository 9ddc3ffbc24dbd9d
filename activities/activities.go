// Package activities holds the notification workflow's activities: Deliver
// (one attempt at the provider, recorded in Postgres) and Fail (dead-letter
// queue, then FAILED). Their dependencies come in through Activities.
package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/queue"
	"dispatch-engine/internal/ratelimit"
	"dispatch-engine/internal/store"
	"dispatch-engine/workflows"
)

// Activities carries what the activities need.
type Activities struct {
	Pool       *pgxpool.Pool
	HTTP       *http.Client
	WebhookURL string
	Limiter    *ratelimit.Limiter
	DLQ        *queue.Publisher
	Topology   queue.Topology
	Metrics    *metrics.Worker
	Log        *zap.Logger
	// SigningKey, when set, signs every delivery (Standard Webhooks).
	SigningKey []byte
	// SlotWait, when set, bounds one attempt's wait for a rate-limit slot;
	// it is bounded anyway to leave the provider call (HTTP.Timeout) and
	// callMargin before the attempt's deadline.
	SlotWait time.Duration
}

// excerptLimit bounds the response body kept with an attempt.
const excerptLimit = 512

// Payload is the JSON body POSTed to the provider.
type Payload struct {
	ID        string          `json:"id"`
	Channel   string          `json:"channel"`
	Priority  string          `json:"priority"`
	Recipient string          `json:"recipient"`
	Subject   *string         `json:"subject,omitempty"`
	Content   string          `json:"content"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	BatchID   *uuid.UUID      `json:"batchId,omitempty"`
	CreatedAt time.Time       `json:"createdAt"`
	Attempt   int             `json:"attempt"`
}

// payloadOf is the body sent to the provider (and to the dead-letter queue)
// for attempt of n.
func payloadOf(n store.Notification, attempt int) Payload {
	return Payload{
		ID: n.ID.String(), Channel: n.Channel, Priority: n.Priority, Recipient: n.Recipient,
		Subject: n.Subject, Content: n.Content, Metadata: n.Metadata, BatchID: n.BatchID,
		CreatedAt: n.CreatedAt, Attempt: attempt,
	}
}

// parseID reads an activity input's notification id; a bad one is a bug
// that no retry mends.
func parseID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.UUID{}, temporal.NewNonRetryableApplicationError("bad notification id", "BadInput", err)
	}
	return id, nil
}

// Deliver makes one delivery attempt: it waits for the channel's rate limit
// (not an attempt: nothing is sent meanwhile), marks the notification
// PROCESSING (or finds it terminal and skips), POSTs the notification to the
// provider with a stable webhook-id, classifies the answer, and records the
// attempt with its status change in one statement. A provider failure is a
// result, not an error. When Redis (the limiter fails closed) or PostgreSQL
// cannot be reached before the attempt begins, nothing was sent and nothing
// counted: Deliver answers a NotAttempted error, which the workflow retries
// without spending an attempt. Other errors are infrastructure trouble after
// the attempt began, which the workflow counts as a failed attempt.
func (a *Activities) Deliver(ctx context.Context, in workflows.DeliverInput) (workflows.DeliverResult, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return workflows.DeliverResult{}, err
	}
	// Inputs scheduled before the channel travelled with them wait after
	// BeginAttempt, as they did then.
	waitFirst := !in.Prepaid && in.Channel != ""
	if waitFirst {
		if err := a.waitForSlot(ctx, in.Channel); err != nil {
			return workflows.DeliverResult{}, err
		}
	}
	n, refusal, err := store.BeginAttempt(ctx, a.Pool, id)
	if err != nil {
		if ctx.Err() != nil {
			return workflows.DeliverResult{}, ctx.Err()
		}
		return workflows.DeliverResult{}, notAttempted(err)
	}
	log := a.Log.With(zap.String("notification_id", in.NotificationID), zap.String("workflow_id", notification.WorkflowID(in.NotificationID)),
		zap.String("channel", n.Channel), zap.Int("attempt", n.Attempts))
	switch refusal {
	case store.Terminal:
		log.Info("notification already terminal; nothing sent", zap.String("status", string(n.Status)))
		return workflows.DeliverResult{Outcome: workflows.OutcomeSkipped, Status: string(n.Status)}, nil
	case store.Expired:
		log.Warn("notification expired before the attempt; nothing sent")
		return workflows.DeliverResult{Outcome: workflows.OutcomeExpired, Error: "expired before delivery"}, nil
	}

	if !in.Prepaid && !waitFirst {
		if err := a.waitForSlot(ctx, n.Channel); err != nil {
			return workflows.DeliverResult{}, err
		}
	}

	started := time.Now()
	res, excerpt := a.post(ctx, n, n.Attempts)
	elapsed := time.Since(started)
	a.Metrics.ProviderLatency.WithLabelValues(n.Channel).Observe(elapsed.Seconds())
	if ctx.Err() != nil {
		// Cancelled mid-call: the call was aborted. Record it as it happened;
		// the workflow marks the notification CANCELLED.
		res = workflows.DeliverResult{Outcome: workflows.OutcomeCancelled, Error: "cancelled during the provider call"}
	}
	a.Metrics.Attempts.WithLabelValues(n.Channel, string(res.Outcome)).Inc()

	attempt := store.Attempt{
		NotificationID:  id,
		Attempt:         n.Attempts,
		StartedAt:       started,
		DurationMS:      int(elapsed.Milliseconds()),
		Outcome:         string(res.Outcome),
		ResponseExcerpt: nonEmpty(excerpt),
		Error:           nonEmpty(res.Error),
	}
	if res.StatusCode != 0 {
		attempt.StatusCode = &res.StatusCode
	}
	transition := store.Transition{Status: notification.StatusProcessing, LastError: nonEmpty(res.Error)}
	switch {
	case res.Outcome == workflows.OutcomeDelivered:
		transition.Status = notification.StatusDelivered
	case res.Outcome == workflows.OutcomeRetry && in.Attempt < in.Retry.MaxAttempts:
		next := time.Now().Add(workflows.Backoff(notification.WorkflowID(in.NotificationID), in.Attempt, in.Retry, res.RetryAfter))
		transition.Status = notification.StatusRetrying
		transition.NextAttemptAt = &next
	}
	// The attempt happened; record it even if the workflow is being
	// cancelled, retrying while PostgreSQL is unreachable.
	if err := a.finishAttempt(ctx, attempt, transition); err != nil {
		return workflows.DeliverResult{}, err
	}
	if ctx.Err() != nil {
		log.Info("attempt cancelled during the provider call")
		return workflows.DeliverResult{}, ctx.Err()
	}
	if res.Outcome == workflows.OutcomeDelivered {
		a.Metrics.Terminal.WithLabelValues("delivered", n.Channel, n.Priority, "").Inc()
		a.Metrics.EndToEnd.WithLabelValues(n.Channel, n.Priority).Observe(time.Since(n.CreatedAt).Seconds())
		log.Info("delivered", zap.Int("status_code", res.StatusCode), zap.Duration("duration", elapsed))
	} else {
		log.Warn("delivery attempt failed", zap.String("outcome", string(res.Outcome)), zap.Int("status_code", res.StatusCode), zap.String("error", res.Error))
	}
	return res, nil
}

// callMargin is kept free beyond the provider call's timeout at the end of
// an attempt: a wait for the rate limit gives up early enough that a slot it
// gets still leaves the whole call and its recording inside the attempt's
// deadline, so a long wait ends as NotAttempted, never as a timed-out attempt.
const callMargin = 2 * time.Second

// waitForSlot waits for the channel's rate limit (not an attempt: nothing
// is sent meanwhile), heartbeating so a cancel still gets through. While
// Redis is unreachable the limiter keeps waiting (it fails closed); a wait
// that outlasts the attempt's time ends as NotAttempted.
func (a *Activities) waitForSlot(ctx context.Context, channel string) error {
	waitCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline.Add(-(a.HTTP.Timeout + callMargin)))
		defer cancel()
	}
	if a.SlotWait > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(waitCtx, a.SlotWait)
		defer cancel()
	}
	waited, err := a.Limiter.Wait(waitCtx, channel, func() { activity.RecordHeartbeat(ctx) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return notAttempted(fmt.Errorf("waiting %s for the rate limit: %w", waited.Round(time.Millisecond), err))
	}
	a.Metrics.RateLimitWait.WithLabelValues(channel).Observe(waited.Seconds())
	if waited > 0 {
		a.Metrics.RateLimitWaits.WithLabelValues(channel).Inc()
	}
	return nil
}

// notAttempted marks err as trouble before the attempt began: nothing was
// sent and the attempt was not counted.
func notAttempted(err error) error {
	return temporal.NewApplicationErrorWithCause("not attempted: "+err.Error(), workflows.ErrNotAttempted, err)
}

// finishAttempt records the attempt, retrying with backoff while the
// database is unreachable, until shortly before the activity's deadline
// (the cancel signal does not stop it: the attempt happened).
func (a *Activities) finishAttempt(ctx context.Context, attempt store.Attempt, t store.Transition) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline.Add(-500*time.Millisecond))
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		err := store.FinishAttempt(rctx, a.Pool, attempt, t)
		if err == nil {
			return nil
		}
		a.Log.Warn("recording the attempt failed; retrying", zap.String("notification_id", attempt.NotificationID.String()),
			zap.Int("attempt", attempt.Attempt), zap.Error(err))
		activity.RecordHeartbeat(ctx)
		select {
		case <-rctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// post sends the notification and classifies the provider's answer.
func (a *Activities) post(ctx context.Context, n store.Notification, attempt int) (workflows.DeliverResult, string) {
	body, err := json.Marshal(payloadOf(n, attempt))
	if err != nil {
		return workflows.DeliverResult{Outcome: workflows.OutcomePermanent, Error: "encoding payload: " + err.Error()}, ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return workflows.DeliverResult{Outcome: workflows.OutcomePermanent, Error: "building request: " + err.Error()}, ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dispatch-engine")
	// webhook-id is the same on every attempt, so a receiver can drop duplicates.
	req.Header.Set("webhook-id", n.ID.String())
	ts := time.Now()
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	if a.SigningKey != nil {
		req.Header.Set("webhook-signature", Sign(a.SigningKey, n.ID.String(), ts, body))
	}

	// Heartbeat while the call is in flight: a lost worker is noticed within
	// the heartbeat timeout, and a cancel reaches ctx (aborting the call).
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()

	resp, err := a.HTTP.Do(req)
	if err != nil {
		return workflows.DeliverResult{Outcome: workflows.OutcomeRetry, Error: classifyNetError(err)}, ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, excerptLimit))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	res := workflows.DeliverResult{StatusCode: resp.StatusCode, Outcome: Classify(resp.StatusCode)}
	if res.Outcome != workflows.OutcomeDelivered {
		res.Error = fmt.Sprintf("provider answered %d", resp.StatusCode)
		res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res, strings.ToValidUTF8(string(raw), "")
}

// Classify maps a provider status code to an outcome: 2xx delivered; 408,
// 425, 429 and 5xx retry; any other status permanent.
func Classify(code int) workflows.Outcome {
	switch {
	case code >= 200 && code < 300:
		return workflows.OutcomeDelivered
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return workflows.OutcomeRetry
	default:
		return workflows.OutcomePermanent
	}
}

// maxRetryAfter bounds what a provider can ask for.
const maxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After header, in seconds or as an HTTP date;
// it returns zero when absent or unreadable, and never more than a day.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

func classifyNetError(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout: " + err.Error()
	default:
		return "network: " + err.Error()
	}
}

// Fail publishes the notification to its channel's dead-letter queue (with
// confirms, headers saying why), then marks it FAILED. A crash between the two
// repeats the publish: the DLQ is at-least-once too.
func (a *Activities) Fail(ctx context.Context, in workflows.FailInput) (string, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return "", err
	}
	n, err := store.GetNotification(ctx, a.Pool, id)
	if err != nil {
		return "", err
	}
	if n.Status.Terminal() {
		return string(n.Status), nil
	}
	body, err := json.Marshal(payloadOf(n, in.Attempts))
	if err != nil {
		return "", err
	}
	err = a.DLQ.Publish(ctx, queue.Outgoing{
		Exchange:   a.Topology.DeadLetterExchange(),
		RoutingKey: n.Channel,
		Body:       body,
		MessageID:  n.ID.String(),
		Headers: amqp.Table{
			"x-reason":      in.Reason,
			"x-attempts":    int32(in.Attempts),
			"x-last-status": int32(in.LastStatusCode),
			"x-last-error":  in.LastError,
			"x-failed-at":   time.Now().UTC().Format(time.RFC3339Nano),
			"x-source":      "workflow",
		},
	})
	if err != nil {
		return "", err
	}
	status, err := store.MarkFailed(ctx, a.Pool, id, in.Reason, in.LastError)
	if err != nil {
		return "", err
	}
	if status != notification.StatusFailed {
		return string(status), nil
	}
	a.Metrics.Terminal.WithLabelValues("failed", n.Channel, n.Priority, in.Reason).Inc()
	a.Log.Warn("notification failed and dead-lettered", zap.String("notification_id", in.NotificationID),
		zap.String("workflow_id", notification.WorkflowID(in.NotificationID)), zap.String("channel", n.Channel),
		zap.String("reason", in.Reason), zap.Int("attempt", in.Attempts))
	return string(status), nil
}

// Cancel marks the notification CANCELLED after the workflow stopped on a
// cancel signal, and returns the status it ends with: one that became
// terminal first (delivered just before the cancel) stands.
func (a *Activities) Cancel(ctx context.Context, in workflows.CancelInput) (string, error) {
	id, err := parseID(in.NotificationID)
	if err != nil {
		return "", err
	}
	n, err := store.GetNotification(ctx, a.Pool, id)
	if err != nil {
		return "", err
	}
	status, err := store.MarkCancelled(ctx, a.Pool, id)
	if err != nil {
		return "", err
	}
	if status == notification.StatusCancelled && !n.Status.Terminal() {
		a.Metrics.Terminal.WithLabelValues("cancelled", n.Channel, n.Priority, "").Inc()
		a.Log.Info("notification cancelled", zap.String("notification_id", in.NotificationID),
			zap.String("workflow_id", notification.WorkflowID(in.NotificationID)), zap.String("channel", n.Channel),
			zap.Int("attempt", in.Attempts))
	}
	return string(status), nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
