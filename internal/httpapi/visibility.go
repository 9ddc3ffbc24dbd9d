package httpapi

import (
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"

	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// What a tenant may see and what only the operator may (docs/TENANTS.md):
// the operator is the default tenant (the keys of API_KEYS, or a key made
// for the tenant "default"). Every tenant sees its own resources, the
// providers with their routes and breaker states, and the service-level
// metrics; only the operator sees the dead-letter queues, the providers'
// traffic figures (every tenant's sends together) and the metrics
// labelled by tenant (who the tenants are and how much each sends).

// isOperator reports whether the authenticated caller is the operator.
func isOperator(t store.Tenant) bool { return t.ID == store.DefaultTenantID }

// metricsPage serves /metrics: the service's own series to anyone (the
// probes' port is the API's, and a scraper needs no key for them), and the
// tenant-labelled series as well to a request carrying the operator's key.
// A key that is not valid is refused (401), so a scraper misconfigured with
// a wrong one finds out rather than silently losing series.
func (s *Server) metricsPage(m *metrics.API) fiber.Handler {
	public := adaptor.HTTPHandler(metrics.Handler(m.Registry))
	operator := adaptor.HTTPHandler(m.OperatorHandler())
	return func(c *fiber.Ctx) error {
		if _, err := presentedKey(c); err != nil {
			return public(c)
		}
		t, err := s.authorized(c)
		if err != nil {
			return err
		}
		if isOperator(t) {
			return operator(c)
		}
		return public(c)
	}
}
