// Package workflows holds the notification workflow: one Temporal workflow
// per notification, which runs delivery attempts (the Deliver activity) with
// durable, deterministically jittered backoff timers between them, and hands a
// notification that cannot be delivered to the Fail activity (dead-letter
// queue, FAILED).
//
// This package imports only the Temporal SDK: the activities are called by
// name and exchange the plain types defined here, so workflow code stays
// deterministic and free of I/O.
package workflows
