package httpapi

import (
	"strconv"

	"github.com/gofiber/fiber/v2"
	"go.uber.org/zap"

	"dispatch-engine/internal/quota"
	"dispatch-engine/internal/store"
)

// typeQuotaExceeded is a request refused by the tenant's acceptance quota.
const typeQuotaExceeded = "/problems/quota-exceeded"

func limitsOf(t store.Tenant) quota.Limits {
	var l quota.Limits
	if t.AcceptPerSec != nil {
		l.PerSecond = *t.AcceptPerSec
	}
	if t.AcceptPerDay != nil {
		l.PerDay = *t.AcceptPerDay
	}
	return l
}

// takeQuota counts n notifications against the caller's tenant's quotas
// and writes the RateLimit header fields. A request over a quota is a 429
// problem with Retry-After, and stores nothing: the caller stops there.
// Otherwise it returns refund, to call when nothing was stored after all
// (a refusal further on, a replay). A tenant without quotas costs nothing;
// when Redis cannot be reached the quota is not enforced (accepting beats
// refusing what cannot be counted), which is logged.
func (s *Server) takeQuota(c *fiber.Ctx, n int) (refund func(), err error) {
	t := tenant(c)
	l := limitsOf(t)
	if s.cfg.Quotas == nil || l.None() {
		return func() {}, nil
	}
	d, err := s.cfg.Quotas.Take(c.UserContext(), t.ID.String(), l, n)
	if err != nil {
		s.log.Warn("tenant quota not enforced: Redis did not answer", append(requestFields(c, err), zap.Int("count", n))...)
		return func() {}, nil
	}
	setRateLimitHeaders(c, d)
	if !d.Allowed {
		for _, w := range d.Windows {
			if w.Refused {
				s.metrics.QuotaRefused.WithLabelValues(s.metrics.Tenants.Label(t.Name), w.Policy).Add(float64(n))
			}
		}
		if d.TooLarge {
			return nil, newProblem(fiber.StatusTooManyRequests, typeQuotaExceeded, "Quota exceeded",
				"this request holds "+strconv.Itoa(n)+" notifications, more than the tenant's quota allows in one window; split it")
		}
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(d.RetryAfterSeconds(), 10))
		return nil, newProblem(fiber.StatusTooManyRequests, typeQuotaExceeded, "Quota exceeded",
			"the tenant's acceptance quota would be exceeded by "+strconv.Itoa(n)+" notifications; nothing was stored; retry after Retry-After seconds")
	}
	return func() {
		if err := s.cfg.Quotas.Refund(c.UserContext(), t.ID.String(), l, n, d); err != nil {
			s.log.Warn("tenant quota not refunded", requestFields(c, err)...)
			return
		}
		if p, err := s.cfg.Quotas.Peek(c.UserContext(), t.ID.String(), l); err == nil {
			setRateLimitHeaders(c, p)
		}
	}, nil
}

// rateLimitHeaders writes the RateLimit fields on a write answer that
// counts nothing (a cancel, a retry, an operation) for a tenant with
// quotas, so every /v1 write answer tells the tenant where it stands.
func (s *Server) rateLimitHeaders(c *fiber.Ctx) error {
	err := c.Next()
	if c.Method() != fiber.MethodPost || s.cfg.Quotas == nil || len(c.Response().Header.Peek("RateLimit-Policy")) > 0 {
		return err
	}
	t, ok := c.Locals(tenantLocal).(store.Tenant)
	if !ok || limitsOf(t).None() {
		return err
	}
	if d, perr := s.cfg.Quotas.Peek(c.UserContext(), t.ID.String(), limitsOf(t)); perr == nil {
		setRateLimitHeaders(c, d)
	}
	return err
}

func setRateLimitHeaders(c *fiber.Ctx, d quota.Decision) {
	if p := d.Policy(); p != "" {
		c.Set("RateLimit-Policy", p)
		c.Set("RateLimit", d.State())
	}
}
