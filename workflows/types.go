package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
)

// Names under which the workflow, its activities, signal and query are registered.
const (
	NotificationWorkflow = "Notification"
	DeliverActivity      = "Deliver"
	FailActivity         = "Fail"
	CancelActivity       = "Cancel"
	// RecordAttemptActivity records an attempt that Deliver made but could
	// not record (PostgreSQL unreachable for longer than it could wait).
	RecordAttemptActivity = "RecordAttempt"
	// CancelSignal asks the workflow to stop: it ends a wait at once, aborts
	// an in-flight provider call, and marks the notification CANCELLED.
	CancelSignal = "cancel"
	// StatusQuery answers the workflow's current state (a StatusView).
	StatusQuery = "status"
	// ReceiptSignal brings a provider's receipt (a Receipt) to a workflow
	// waiting for it.
	ReceiptSignal = "receipt"
	// SettleReceiptActivity records a receipt and moves the notification on.
	SettleReceiptActivity = "SettleReceipt"
	// FallbackActivity moves a profile's notification on to the next of
	// its channels that may be tried (a FallbackInput; a FallbackResult).
	FallbackActivity = "Fallback"
	// MarkRetryingActivity shows the notification RETRYING with the time of
	// its next attempt while the workflow waits for it (a RetryingInput).
	MarkRetryingActivity = "MarkRetrying"
	// WakeSignal ends a notification's hold (OutcomeHeld) early: the one
	// before it in its ordering key ended, or its digest's message did. It
	// is a hint: the attempt it leads to reads the row, which decides.
	WakeSignal = "wake"
	// ReleaseOrderingActivity wakes the notification after an ended one in
	// its ordering key (a ReleaseInput).
	ReleaseOrderingActivity = "ReleaseOrdering"
	// SettleDigestActivity ends a digest's members as its message ended and
	// wakes them (a ReleaseInput naming the message).
	SettleDigestActivity = "SettleDigest"
	// DigestWorkflow gathers a digest until its window closes (or it is
	// full: DigestFlushSignal), then makes its message (FlushDigestActivity,
	// a DigestInput).
	DigestWorkflow      = "Digest"
	DigestFlushSignal   = "flush"
	FlushDigestActivity = "FlushDigest"
)

// Search attributes set on every notification workflow, so the Temporal Web
// UI can filter by them. They are registered on the namespace by the worker
// at start and by the dev server's flags.
var (
	SearchStatus   = temporal.NewSearchAttributeKeyKeyword("NotificationStatus")
	SearchChannel  = temporal.NewSearchAttributeKeyKeyword("NotificationChannel")
	SearchPriority = temporal.NewSearchAttributeKeyKeyword("NotificationPriority")
	// SearchTenant is the name of the notification's tenant.
	SearchTenant   = temporal.NewSearchAttributeKeyKeyword("NotificationTenant")
	SearchAttempts = temporal.NewSearchAttributeKeyInt64("NotificationAttempts")
	SearchBatchID  = temporal.NewSearchAttributeKeyKeyword("NotificationBatchId")
	// SearchProvider is the provider of the latest attempt.
	SearchProvider = temporal.NewSearchAttributeKeyKeyword("NotificationProvider")
)

// RetryPolicy shapes the attempts of one notification. It travels in the
// workflow input, so a running workflow keeps the policy it started with.
type RetryPolicy struct {
	MaxAttempts        int
	InitialInterval    time.Duration
	BackoffCoefficient float64
	MaxInterval        time.Duration
}

// NotificationInput starts a notification workflow. Content stays in
// Postgres; the history carries only the id and what routing needs.
type NotificationInput struct {
	NotificationID string
	Channel        string
	Priority       string
	// ActivityTaskQueue is the channel's delivery task queue.
	ActivityTaskQueue string
	Retry             RetryPolicy
	// AttemptTimeout is the Deliver activity's start-to-close timeout; it
	// must exceed the provider call's own timeout.
	AttemptTimeout time.Duration
	// ScheduledAt, when in the future, delays the first attempt (a durable,
	// cancellable timer).
	ScheduledAt *time.Time `json:",omitempty"`
	// ExpiresAt: no attempt starts after it; the notification fails as expired.
	ExpiresAt *time.Time `json:",omitempty"`
	// FastPath: the first attempt runs as a local
	// activity inside the workflow's first task (no activity task, no second
	// workflow task); it takes its rate-limit slot just before the send, and
	// when none is free, or the worker's fast-path calls are all busy, it
	// sends nothing (OutcomeDeferred) and the attempt goes through the
	// channel's activity task queue instead. Retries always go there. The
	// wire name is the one earlier workers wrote, so their histories replay.
	FastPath bool `json:"FirstAttemptLocal,omitempty"`
	// Resume carries a run's progress into the next one after a
	// continue-as-new; nil on the first run.
	Resume *Resume `json:",omitempty"`
	// MaxWaitsPerRun bounds how many attempts that could not begin one run
	// waits for before it continues as new, so a long outage does not grow
	// the history toward Temporal's limit. Zero means DefaultMaxWaitsPerRun.
	MaxWaitsPerRun int `json:",omitempty"`
	// AttemptBase is the attempts made before this generation of the
	// notification (an explicit retry starts a new run with a fresh budget):
	// this run makes attempts AttemptBase+1 to AttemptBase+Retry.MaxAttempts.
	AttemptBase int `json:",omitempty"`
	// Generation counts the notification's explicit retries; each is a new
	// run of the same workflow id.
	Generation int `json:",omitempty"`
	// Fallback: the notification names a recipient profile and more than
	// one channel; when one channel ends without a delivery (exhausted,
	// permanent, undelivered, no receipt), the next is tried in this run,
	// with a fresh budget of attempts.
	Fallback bool `json:",omitempty"`
	// Ordered: the notification has an ordering key; when it ends, the
	// one after it in its key is woken (ReleaseOrderingActivity).
	Ordered bool `json:",omitempty"`
	// DigestMessage: the notification is a digest's message; when it
	// ends, so do the digest's members (SettleDigestActivity).
	DigestMessage bool `json:",omitempty"`
}

// ReleaseInput names a notification that ended, for the step that moves
// on the ones waiting for it.
type ReleaseInput struct {
	NotificationID string
}

// DigestInput starts a digest's workflow: it waits until ClosesAt (or a
// flush signal), then flushes the digest.
type DigestInput struct {
	DigestID string
	ClosesAt time.Time
}

// DigestFlushResult counts the members a flush listed in the message
// (none: nothing is sent).
type DigestFlushResult struct {
	Items int
}

// DefaultMaxWaitsPerRun is MaxWaitsPerRun's default: about 2,000 history
// events, well inside the point where Temporal suggests continuing as new.
const DefaultMaxWaitsPerRun = 200

// Resume is where a continued run picks up.
type Resume struct {
	// Attempt is the attempt to make next (it was not made yet).
	Attempt int
	// Waits counts the attempts that could not begin so far, across runs;
	// it drives the backoff between them.
	Waits     int
	LastError string `json:",omitempty"`
}

// Status is a notification's status as its workflow sees and reports it
// (the status query, the NotificationStatus search attribute, the result):
// the words the notifications table keeps (internal/notification's Status;
// a test holds the two to each other).
type Status string

// The statuses a workflow reports.
const (
	StatusScheduled  Status = "SCHEDULED"
	StatusProcessing Status = "PROCESSING"
	StatusRetrying   Status = "RETRYING"
	StatusSent       Status = "SENT"
	StatusDelivered  Status = "DELIVERED"
	StatusFailed     Status = "FAILED"
	StatusCancelled  Status = "CANCELLED"
	// StatusSkipped: nothing was sent, because the address or the person
	// refused it (suppressed, opted out) or no channel had an address.
	StatusSkipped Status = "SKIPPED"
)

// StatusSuperseded is not a notification's status but how a run ends that
// no longer owns its notification (OutcomeSuperseded): its bookkeeping
// (Fail, Cancel) answers it, and the run ends without a change.
const StatusSuperseded Status = "SUPERSEDED"

// Terminal reports whether s is DELIVERED, FAILED or CANCELLED.
func (s Status) Terminal() bool {
	return s == StatusDelivered || s == StatusFailed || s == StatusCancelled || s == StatusSkipped
}

// The words of receipts: what a provider's receipt says (Receipt.Status),
// what an attempt records of it (SettleInput.Receipt, with ReceiptNone
// when none came in time), and what silence means (OnNoReceipt).
const (
	ReceiptDelivered = "delivered"
	ReceiptFailed    = "failed"
	ReceiptNone      = "none"
)

// Outcome classifies one delivery attempt.
type Outcome string

// The outcomes of an attempt.
const (
	// OutcomeDelivered: the provider answered 2xx.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeRetry: 408, 425, 429, 5xx, a network error or a timeout.
	OutcomeRetry Outcome = "retry"
	// OutcomePermanent: any other 4xx; retrying cannot help.
	OutcomePermanent Outcome = "permanent"
	// OutcomeSkipped: the notification was already terminal (e.g. cancelled
	// before its workflow ran); nothing was sent.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeExpired: expiresAt passed before the attempt could start;
	// nothing was sent.
	OutcomeExpired Outcome = "expired"
	// OutcomeCancelled: a cancel aborted the provider call (recorded on the
	// attempt). When the cancel came through Temporal the activity itself
	// ends cancelled; when Deliver saw the request on the row first, it
	// answers this outcome.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomeDeferred: a fast-path attempt found no free rate-limit slot, or
	// every fast-path call of the worker busy; nothing was sent and nothing
	// counted, and the workflow makes the attempt through the channel's
	// activity task queue at once.
	OutcomeDeferred Outcome = "deferred"
	// OutcomeSent: the provider took it (2xx) and its receipt is awaited
	// (DeliverResult.AwaitReceipt); the notification is SENT.
	OutcomeSent Outcome = "sent"
	// OutcomeUnavailable: every provider on the channel's route has its
	// breaker open; nothing was sent and nothing counted. RetryAfter is when
	// one may admit again.
	OutcomeUnavailable Outcome = "unavailable"
	// OutcomeSuperseded: the run no longer owns the notification: it was
	// retried since (a later generation's run owns it) or it no longer
	// exists (retention deleted it). Nothing was sent or written; the run
	// ends (StatusSuperseded) without touching the notification.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeRerouted: the notification names a recipient profile, and the
	// channel it may go on now is another one (DeliverResult.Channel): the
	// person has no address, opted out or is suppressed on the channel in
	// hand. Nothing was sent or counted; the same attempt is made on that
	// channel's task queue.
	OutcomeRerouted Outcome = "rerouted"
	// OutcomeHeld: the notification must wait past its turn on its
	// person's side (DeliverResult.DeferredBy: quiet hours, a throttle, a
	// digest, its ordering key) until DeliverResult.HeldUntil, or a wake
	// signal; nothing was sent or counted, and the row shows it SCHEDULED
	// until then. The same attempt is made again after the wait.
	OutcomeHeld Outcome = "held"
)

// FallbackInput asks to move a profile's notification on from its channel
// in hand to the next one it may be tried on.
type FallbackInput struct {
	NotificationID string
	// Attempts are the attempts made so far.
	Attempts   int
	Generation *int `json:",omitempty"`
}

// FallbackResult is the channel the notification moved on to; empty when
// none is left (the notification then fails as the last channel did).
type FallbackResult struct {
	Channel string `json:",omitempty"`
}

// DeliverInput asks for one delivery attempt.
type DeliverInput struct {
	NotificationID string
	Attempt        int
	// Retry lets the activity record when the next attempt will run.
	Retry RetryPolicy
	// FastPath: this is the fast path's first attempt, run as a local
	// activity; it takes a slot only if one is free right now (see
	// NotificationInput.FirstAttemptLocal). The wire name is the one older
	// workers wrote, when the slot was taken before the workflow started
	// ("prepaid"); either way the slot is now taken just before the send.
	FastPath bool `json:"Prepaid,omitempty"`
	// Channel names the rate limit the attempt waits for.
	Channel string `json:",omitempty"`
	// After is the provider the previous attempt failed at: this attempt
	// tries the route's providers starting with the one after it.
	After string `json:",omitempty"`
	// Exclude names providers whose receipt reported this notification
	// undelivered; the attempt goes to none of them.
	Exclude []string `json:",omitempty"`
	// AttemptBase is NotificationInput.AttemptBase: the attempts of earlier
	// generations, before this run's budget.
	AttemptBase int `json:",omitempty"`
	// Generation is the run's generation (NotificationInput.Generation): the
	// attempt begins, and records its outcome, only while the notification
	// is still of it. Nil in an attempt scheduled by a worker from before
	// it travelled with attempts, which checks no generation.
	Generation *int `json:",omitempty"`
}

// ErrNotAttempted is the type of the Deliver error that says nothing was
// sent and no attempt counted: Redis or PostgreSQL could not be reached
// before the attempt began. The workflow waits and makes the same attempt
// again.
const ErrNotAttempted = "NotAttempted"

// DeliverResult is what one attempt found.
type DeliverResult struct {
	Outcome    Outcome
	StatusCode int
	// RetryAfter is the provider's Retry-After, zero when absent.
	RetryAfter time.Duration
	Error      string
	// Status is the notification's status when Outcome is OutcomeSkipped.
	Status Status
	// Channel is the channel to make the attempt on instead when Outcome
	// is OutcomeRerouted.
	Channel string `json:",omitempty"`
	// Unrecorded, when set, is an attempt that was made but could not be
	// recorded (PostgreSQL unreachable): the workflow records it with the
	// RecordAttempt activity, so bookkeeping never turns a made attempt into
	// another send.
	Unrecorded *AttemptRecord `json:",omitempty"`
	// Provider is who the attempt went to.
	Provider string `json:",omitempty"`
	// Alternatives counts the other providers on the route whose breakers
	// admit sends, after a failure that was the provider's: the workflow
	// then makes the next attempt at once, at the next of them, instead of
	// waiting out a backoff (once per provider in a row).
	Alternatives int `json:",omitempty"`
	// AwaitReceipt and OnNoReceipt go with OutcomeSent: how long to wait
	// for the receipt, and what silence means (delivered or failed).
	AwaitReceipt time.Duration `json:",omitempty"`
	OnNoReceipt  string        `json:",omitempty"`
	// HeldUntil, DeferredBy and HoldSummary go with OutcomeHeld: how long
	// the wait is, why, and the timer's summary in the Web UI.
	HeldUntil   *time.Time `json:",omitempty"`
	DeferredBy  string     `json:",omitempty"`
	HoldSummary string     `json:",omitempty"`
	// RouteExhausted: every provider on the route reported the
	// notification undelivered; nothing was sent.
	RouteExhausted bool `json:",omitempty"`
	// Retrying: the attempt's record made the notification RETRYING with the
	// time of its next attempt, so the workflow's wait needs no marking.
	Retrying bool `json:",omitempty"`
}

// Receipt is a provider's report on a message it took, signalled by the
// API (ReceiptSignal). The workflow takes the one about the attempt it
// waits on (that attempt's number, from that provider) and drops the rest:
// a late receipt about an earlier attempt, or an earlier generation's,
// changes nothing.
type Receipt struct {
	Provider string
	// Status is delivered or failed.
	Status string
	Reason string `json:",omitempty"`
	// Attempt is the attempt the receipt reports on (the API finds it from
	// the message id the receipt names). Zero only in signals from an API
	// of before receipts named their attempt; those are taken as before.
	Attempt int `json:",omitempty"`
	// MessageID is the message the receipt names: our per-attempt id
	// (notification.MessageID) or the provider's own (a Twilio SID).
	MessageID string `json:",omitempty"`
}

// SettleInput records a receipt (delivered, failed or none) on attempt and
// moves a SENT notification to Next.
type SettleInput struct {
	NotificationID string
	Attempt        int
	Receipt        string
	Reason         string `json:",omitempty"`
	Next           Status
}

// AttemptRecord is one attempt as the attempt log keeps it (without the
// provider's reply: histories carry no content), with the status change it
// causes.
type AttemptRecord struct {
	NotificationID string
	Attempt        int
	StartedAt      time.Time
	Duration       time.Duration
	Outcome        Outcome
	StatusCode     int    `json:",omitempty"`
	Error          string `json:",omitempty"`
	// Status is the notification's status after the attempt (PROCESSING,
	// RETRYING or DELIVERED); NextAttemptAt goes with RETRYING.
	Status        string
	NextAttemptAt *time.Time `json:",omitempty"`
	// Provider and ProviderMessageID: who took the attempt, and its id
	// for the message there.
	Provider          string `json:",omitempty"`
	ProviderMessageID string `json:",omitempty"`
	// Generation is the attempt's (DeliverInput.Generation): the status
	// change applies only while the notification is still of it.
	Generation *int `json:",omitempty"`
}

// Failure reasons, carried to the DLQ's x-reason header and the
// notification's failureReason.
const (
	ReasonExhausted = "exhausted"
	ReasonPermanent = "permanent"
	ReasonExpired   = "expired"
	// ReasonUndelivered: every provider on the route reported it undelivered.
	ReasonUndelivered = "undelivered"
	// ReasonNoReceipt: no receipt came in time from a provider whose
	// silence means failure (onNoReceipt: failed).
	ReasonNoReceipt = "no-receipt"
)

// CancelInput marks a notification CANCELLED.
type CancelInput struct {
	NotificationID string
	Attempts       int
	// Generation is the run's: a notification retried since is left alone
	// (the activity answers StatusSuperseded). Nil checks none.
	Generation *int `json:",omitempty"`
}

// RetryingInput shows a notification of Generation RETRYING until
// NextAttemptAt, while its workflow waits.
type RetryingInput struct {
	NotificationID string
	Generation     *int `json:",omitempty"`
	NextAttemptAt  time.Time
}

// StatusView is what the status query answers: the workflow's view of the
// notification right now.
type StatusView struct {
	Status          Status
	Attempts        int
	NextAttemptAt   *time.Time `json:",omitempty"`
	LastError       string     `json:",omitempty"`
	CancelRequested bool
	// DeferredBy says why a SCHEDULED notification waits past its turn.
	DeferredBy string `json:",omitempty"`
}

// FailInput dead-letters a notification and marks it FAILED.
type FailInput struct {
	NotificationID string
	Channel        string
	Reason         string
	Attempts       int
	LastStatusCode int
	LastError      string
	// Generation is the run's: a notification retried since is left alone
	// (the activity answers StatusSuperseded). Nil checks none.
	Generation *int `json:",omitempty"`
}

// NotificationResult is the workflow's result.
type NotificationResult struct {
	Status   Status
	Attempts int
}
