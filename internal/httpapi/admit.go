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
//
// A /v1 request is admitted by authenticate, before its key is looked up
// (authentication asks PostgreSQL too); admit then only passes it on.
func (s *Server) admit(c *fiber.Ctx) error {
	if admitted, _ := c.Locals(admittedLocal).(bool); admitted {
		return c.Next()
	}
	return s.admitThen(c, c.Next)
}

// admittedLocal marks a request that holds its slot.
const admittedLocal = "admitted"

// admitThen waits for a slot as admit says, and runs next holding it, with
// the request's context bounded by RequestTimeout.
func (s *Server) admitThen(c *fiber.Ctx, next func() error) error {
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
	c.Locals(admittedLocal, true)
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return next()
}
