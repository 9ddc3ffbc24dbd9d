// Package workflows holds the notification workflow: one Temporal workflow
// per notification, which runs delivery attempts (the Deliver activity) with
// durable, deterministically jittered backoff timers between them, and hands a
// notification that cannot be delivered to the Fail activity (dead-letter
// record, FAILED). Its run ends as the notification did: Completed when
// delivered, Failed (an application error whose type is the reason) when
// failed, Canceled when cancelled.
//
// The run reads as named stages, one file each: notification.go holds the
// loop and the run's state, and is the only place that moves to the next
// attempt number; wait.go the schedule and the waits of an outage;
// attempt.go one attempt (the fast path's local activity or the channel's
// task queue); settle.go its outcome (delivered, retry, failover,
// permanent); receipt.go the wait for a provider's receipt; end.go the
// final mark, the search attributes and how the run ends; details.go the
// summaries and current details the Temporal Web UI shows; backoff.go the
// deterministic backoff. operation.go is the operations' workflow (paced
// pages of retry, cancel or erase), types.go the names and types both
// sides share.
//
// This package imports only the Temporal SDK: the activities are called by
// name and exchange the plain types defined here, so workflow code stays
// deterministic and free of I/O.
package workflows
