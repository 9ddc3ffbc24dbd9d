// Package metrics defines the Prometheus metrics of the API and the worker,
// each on its own registry (plus the Go and process collectors), the
// collectors that read the outbox and queue backlogs at scrape time
// (collectors.go), and the export of the Temporal SDK's own metrics
// (temporal.go).
package metrics

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets resolve 10 ms to 1 h, for end-to-end delivery latency.
var latencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// newDependencyUp is dispatch_dependency_up: each dependency's state at the
// last readiness check, reported whether or not the process needs it to be
// ready.
func newDependencyUp() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dispatch_dependency_up",
		Help: "1 when the dependency answered the last readiness check, 0 when it did not.",
	}, []string{"dependency"})
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// API holds the API process's metrics. Registry holds the service's own
// series, served to anyone who reaches /metrics; TenantRegistry the series
// labelled by tenant (who the tenants are and how much each sends), served
// only to the operator (OperatorHandler).
type API struct {
	Registry       *prometheus.Registry
	TenantRegistry *prometheus.Registry
	HTTPRequests   *prometheus.CounterVec
	HTTPDuration   *prometheus.HistogramVec
	Accepted       *prometheus.CounterVec
	// Cancelled counts notifications the API cancelled itself, before their
	// workflow started an attempt (the worker counts the others).
	Cancelled    *prometheus.CounterVec
	DependencyUp *prometheus.GaugeVec
	// TenantAccepted counts accepted notifications by tenant, QuotaRefused
	// the notifications refused by a tenant's quota; Tenants bounds their
	// label's values.
	TenantAccepted *prometheus.CounterVec
	QuotaRefused   *prometheus.CounterVec
	Tenants        *TenantLabels
}

// NewAPI registers the API's metrics.
func NewAPI() *API {
	m := &API{
		Registry: newRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_http_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dispatch_http_request_duration_seconds",
			Help:    "HTTP request duration by route template and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_notifications_accepted_total",
			Help: "Notifications accepted by channel and priority.",
		}, []string{"channel", "priority"}),
		DependencyUp: newDependencyUp(),
	}
	m.Cancelled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "dispatch_notifications_terminal_total",
		Help:        "Notifications reaching a terminal status (delivered, failed, cancelled, skipped) by channel, priority and reason.",
		ConstLabels: prometheus.Labels{"status": "cancelled", "reason": ""},
	}, []string{"channel", "priority"})
	m.TenantAccepted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispatch_tenant_notifications_accepted_total",
		Help: "Notifications accepted by tenant (the first " + strconv.Itoa(MaxTenantLabels) + " tenants seen by name, the rest as \"" + OtherTenants + "\").",
	}, []string{"tenant"})
	m.QuotaRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispatch_tenant_quota_refused_total",
		Help: "Notifications refused by a tenant's acceptance quota, by tenant and window (sec, day).",
	}, []string{"tenant", "window"})
	m.Tenants = &TenantLabels{}
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.Accepted, m.Cancelled, m.DependencyUp)
	m.TenantRegistry = prometheus.NewRegistry()
	m.TenantRegistry.MustRegister(m.TenantAccepted, m.QuotaRefused)
	return m
}

// OperatorHandler serves every series of the API, the tenant-labelled ones
// included; Handler(m.Registry) serves them without.
func (m *API) OperatorHandler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.Registry, m.TenantRegistry}, promhttp.HandlerOpts{Registry: m.Registry})
}

// MaxTenantLabels bounds the tenant label's values per process: a
// deployment with thousands of tenants keeps a bounded number of series.
const MaxTenantLabels = 100

// OtherTenants is the tenant label of every tenant past MaxTenantLabels.
const OtherTenants = "_other"

// TenantLabels hands out tenant label values: a tenant's name for the first
// MaxTenantLabels tenants seen, OtherTenants for the rest.
type TenantLabels struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

// Label is the tenant label value for the tenant named name.
func (l *TenantLabels) Label(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[name]; ok {
		return name
	}
	if l.seen == nil {
		l.seen = make(map[string]struct{})
	}
	if len(l.seen) >= MaxTenantLabels {
		return OtherTenants
	}
	l.seen[name] = struct{}{}
	return name
}

// Worker holds the worker process's metrics.
type Worker struct {
	Registry        *prometheus.Registry
	Terminal        *prometheus.CounterVec
	Attempts        *prometheus.CounterVec
	ProviderLatency *prometheus.HistogramVec
	EndToEnd        *prometheus.HistogramVec
	RateLimitWait   *prometheus.HistogramVec
	RateLimitWaits  *prometheus.CounterVec
	Relayed         prometheus.Counter
	WorkflowStarts  *prometheus.CounterVec
	InFlight        *prometheus.GaugeVec
	Repaired        *prometheus.CounterVec
	DependencyUp    *prometheus.GaugeVec
	// BreakerState is each provider's breaker as this worker last saw it:
	// 0 closed, 1 half-open, 2 open.
	BreakerState *prometheus.GaugeVec
	// BreakerChanges counts the transitions this worker made.
	BreakerChanges *prometheus.CounterVec
	// DeadLettersRetired counts the dead-letter messages the pruner took out
	// of a DLQ because their notification was retried or erased.
	DeadLettersRetired *prometheus.CounterVec
	// RetentionDeleted counts the rows retention deleted (RETENTION_PERIOD),
	// by table: notifications, delivery_attempts, outbox, batches.
	RetentionDeleted *prometheus.CounterVec
	// OperationNotifications counts the notifications operations visited,
	// by action and result (succeeded, skipped).
	OperationNotifications *prometheus.CounterVec
	// FastPathDeferred counts the fast path's first attempts that sent
	// nothing and went to the channel's activity task queue instead, by
	// channel and reason (busy: every fast-path call of the worker in
	// flight; rate-limit: no slot free). Each costs an activity and a
	// workflow task more than the fast path.
	FastPathDeferred *prometheus.CounterVec
	// Suppressed counts the addresses the delivery side added to a
	// suppression list because a provider said they are dead or refused,
	// by channel and reason (refused, bounced, complained, unsubscribed,
	// invalid, unregistered).
	Suppressed *prometheus.CounterVec
	// Deferred counts the holds of notifications past their turn on their
	// person's side, by reason (quiet-hours, throttle, digest, ordering):
	// each time an attempt found one must wait.
	Deferred *prometheus.CounterVec
	// OrderingBroken counts the notifications that went before the one
	// ahead of them in their ordering key ended, having waited their
	// longest (maxHold).
	OrderingBroken prometheus.Counter
}

// NewWorker registers the worker's metrics.
func NewWorker() *Worker {
	m := &Worker{
		Registry: newRegistry(),
		Terminal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_notifications_terminal_total",
			Help: "Notifications reaching a terminal status (delivered, failed, cancelled, skipped) by channel, priority and reason.",
		}, []string{"status", "channel", "priority", "reason"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_delivery_attempts_total",
			Help: "Delivery attempts by channel, outcome class and provider.",
		}, []string{"channel", "outcome", "provider"}),
		ProviderLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dispatch_provider_request_duration_seconds",
			Help:    "Provider response time by channel and provider.",
			Buckets: prometheus.DefBuckets,
		}, []string{"channel", "provider"}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dispatch_delivery_latency_seconds",
			Help:    "Time from acceptance to delivery by channel and priority.",
			Buckets: latencyBuckets,
		}, []string{"channel", "priority"}),
		RateLimitWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dispatch_rate_limit_wait_seconds",
			Help:    "Time an attempt waited for its channel's rate limit.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30},
		}, []string{"channel"}),
		RateLimitWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_rate_limit_waits_total",
			Help: "Attempts that had to wait for their channel's rate limit.",
		}, []string{"channel"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dispatch_consumer_in_flight_messages",
			Help: "Broker messages being handled by the consumer, by channel.",
		}, []string{"channel"}),
		Repaired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_reconciler_repaired_total",
			Help: "Notifications the reconciler put back on their path (requeued) or failed as abandoned, by action.",
		}, []string{"action"}),
		Relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dispatch_outbox_relayed_total",
			Help: "Outbox rows published to RabbitMQ and confirmed.",
		}),
		WorkflowStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_workflow_starts_total",
			Help: "Workflow starts by the consumer, by channel and result (started, duplicate, skipped, poison; superseded: an earlier generation's run still open, ended so a retry could start).",
		}, []string{"channel", "result"}),
		DependencyUp: newDependencyUp(),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dispatch_provider_breaker_state",
			Help: "A provider's circuit breaker (shared by every worker, kept in Redis) as this process last saw it: 0 closed, 1 half-open, 2 open.",
		}, []string{"provider"}),
		BreakerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_provider_breaker_transitions_total",
			Help: "Breaker transitions this process made, by provider and the state entered.",
		}, []string{"provider", "to"}),
		DeadLettersRetired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_dead_letters_retired_total",
			Help: "Dead-letter messages removed from a channel's DLQ because their notification was retried or erased.",
		}, []string{"channel"}),
		RetentionDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_retention_deleted_total",
			Help: "Rows deleted by retention (terminal notifications older than RETENTION_PERIOD, their attempts and outbox rows, emptied batches), by table.",
		}, []string{"table"}),
		OperationNotifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_operation_notifications_total",
			Help: "Notifications visited by operations (POST /v1/operations), by action and result (succeeded, skipped).",
		}, []string{"action", "result"}),
		FastPathDeferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_fast_path_deferred_total",
			Help: "First attempts the fast path sent to the channel's activity task queue instead, by channel and reason (busy, rate-limit).",
		}, []string{"channel", "reason"}),
		Suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_suppressions_added_total",
			Help: "Addresses added to a suppression list because a provider said they are dead or refused, by channel and reason.",
		}, []string{"channel", "reason"}),
		Deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatch_deferred_total",
			Help: "Holds of notifications past their turn on their person's side, by reason (quiet-hours, throttle, digest, ordering).",
		}, []string{"reason"}),
		OrderingBroken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dispatch_ordering_broken_total",
			Help: "Notifications that went before the one ahead of them in their ordering key ended, after waiting their longest (maxHold).",
		}),
	}
	m.Registry.MustRegister(m.Terminal, m.Attempts, m.ProviderLatency, m.EndToEnd, m.RateLimitWait, m.RateLimitWaits,
		m.Relayed, m.WorkflowStarts, m.InFlight, m.Repaired, m.DependencyUp, m.BreakerState, m.BreakerChanges,
		m.DeadLettersRetired, m.RetentionDeleted, m.OperationNotifications, m.FastPathDeferred, m.Suppressed,
		m.Deferred, m.OrderingBroken)
	return m
}

// InitBreakers makes the transition series of each provider's breaker
// exist, at zero, for every state it may enter (states, as the to label
// spells them): a rate or an alert over them works before the first
// transition.
func (m *Worker) InitBreakers(providers, states []string) {
	for _, p := range providers {
		for _, to := range states {
			m.BreakerChanges.WithLabelValues(p, to)
		}
	}
}

// Handler serves reg in the Prometheus text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
