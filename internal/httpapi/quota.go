package httpapi

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
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
	ctx, cancel := quotaContext(c)
	defer cancel()
	d, err := s.cfg.Quotas.Take(ctx, t.ID.String(), l, n)
	if err != nil {
		if !errors.Is(err, quota.ErrUnavailable) { // logged once a pause, not once a request
			s.log.Warn("tenant quota not enforced: Redis did not answer", append(requestFields(c, err), zap.Int("count", n))...)
		}
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
			return nil, overQuota(d, n)
		}
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(d.RetryAfterSeconds(), 10))
		return nil, newProblem(fiber.StatusTooManyRequests, typeQuotaExceeded, "Quota exceeded",
			"the tenant's acceptance quota would be exceeded by "+strconv.Itoa(n)+" notifications; nothing was stored; retry after Retry-After seconds")
	}
	return func() {
		ctx, cancel := quotaContext(c)
		defer cancel()
		if err := s.cfg.Quotas.Refund(ctx, t.ID.String(), l, n, d); err != nil {
			s.log.Warn("tenant quota not refunded", requestFields(c, err)...)
			return
		}
		if p, err := s.cfg.Quotas.Peek(ctx, t.ID.String(), l); err == nil {
			setRateLimitHeaders(c, p)
		}
	}, nil
}

// typeBatchOverQuota is a batch larger than one of the tenant's quotas: it
// can never be accepted whole, however long the client waits.
const typeBatchOverQuota = "/problems/batch-over-quota"

// overQuota is the 422 for a request of n notifications larger than a
// quota's whole window, naming each such quota; no Retry-After, since no
// wait lets it pass.
func overQuota(d quota.Decision, n int) error {
	var names []string
	for _, w := range d.Windows {
		if w.Refused && n > w.Quota {
			names = append(names, "the "+w.Policy+" quota of "+strconv.Itoa(w.Quota))
		}
	}
	which := strings.Join(names, " and ")
	return &problemError{Problem{Type: typeBatchOverQuota, Title: "Batch larger than the quota",
		Status: fiber.StatusUnprocessableEntity,
		Detail: "this batch holds " + strconv.Itoa(n) + " notifications, more than " + which +
			" accepts in one window: it can never be accepted whole; split it. Nothing was stored or counted",
		Errors: []FieldError{{Field: "notifications", Message: "holds " + strconv.Itoa(n) + " notifications, more than " + which}}}}
}

// quotaBudget bounds all of one request's calls to Redis together: a Redis
// that stops answering costs a request at most this much (and later
// requests nothing, for quota.Pause), after which its quota is skipped.
const quotaBudget = quota.CallTimeout

// quotaDeadlineLocal holds the end of the request's quotaBudget, set by its
// first call to Redis.
const quotaDeadlineLocal = "quota-deadline"

// quotaContext is the request's context bounded by its quotaBudget.
func quotaContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	deadline, ok := c.Locals(quotaDeadlineLocal).(time.Time)
	if !ok {
		deadline = time.Now().Add(quotaBudget)
		c.Locals(quotaDeadlineLocal, deadline)
	}
	return context.WithDeadline(c.UserContext(), deadline)
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
	ctx, cancel := quotaContext(c)
	defer cancel()
	if d, perr := s.cfg.Quotas.Peek(ctx, t.ID.String(), limitsOf(t)); perr == nil {
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
