package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"
)

// errOverloaded refuses a request that found every database slot taken for
// longer than AdmitWait; it answers 503 with Retry-After.
var errOverloaded = errors.New("at capacity")

// retryAfterSeconds is the Retry-After sent with every 503.
const retryAfterSeconds = "1"

// admit lets at most MaxInFlight /v1 requests work on the database at once.
// A request waits up to AdmitWait for its turn and is then refused, so a
// flood meets a prompt 503 rather than an unbounded queue on the pool. The
// admitted request's work is bounded by RequestTimeout.
func (s *Server) admit(c *fiber.Ctx) error {
	select {
	case s.slots <- struct{}{}:
	default:
		timer := time.NewTimer(s.cfg.AdmitWait)
		select {
		case s.slots <- struct{}{}:
			timer.Stop()
		case <-timer.C:
			return errOverloaded
		}
	}
	defer func() { <-s.slots }()
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return c.Next()
}
