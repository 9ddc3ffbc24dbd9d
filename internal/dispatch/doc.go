// Package dispatch joins the broker to Temporal: the Starter turns each
// queued message into its notification workflow, and NewWorkers runs the
// workflow and the per-channel delivery activities.
//
// starter.go reads a message's row and starts its workflow (tenants.go
// caches the tenant's name and fairness weight it puts on the start);
// supersede.go handles a start Temporal refuses because the workflow id has
// a run already; workers.go builds the Temporal workers and register.go
// registers the workflows and activities on them under the names the
// workflows call; searchattrs.go registers the workflows' search
// attributes; operations.go resumes idle operations.
package dispatch
