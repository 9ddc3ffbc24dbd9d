package httpapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// FieldError names one invalid field and why.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every invalid field of a request; it answers 422.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%d invalid field(s), first %s: %s", len(e.Fields), e.Fields[0].Field, e.Fields[0].Message)
}

// add records an invalid field.
func (e *ValidationError) add(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// orNil returns e when it holds a field, nil otherwise.
func (e *ValidationError) orNil() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// problemError is an error that already knows its problem.
type problemError struct {
	Problem
}

func (e *problemError) Error() string { return e.Title + ": " + e.Detail }

// Problem types: stable, relative URI references documented in openapi.yaml.
const (
	typeValidation          = "/problems/validation-error"
	typeMalformed           = "/problems/malformed-request"
	typeUnauthorized        = "/problems/unauthorized"
	typeNotFound            = "/problems/not-found"
	typeMethodNotAllowed    = "/problems/method-not-allowed"
	typeConflict            = "/problems/conflict"
	typeIdempotencyConflict = "/problems/idempotency-key-reused"
	typeIdempotencyInUse    = "/problems/idempotency-key-in-use"
	typeNotCancellable      = "/problems/not-cancellable"
	typeNotRetryable        = "/problems/not-retryable"
	typeTooLarge            = "/problems/payload-too-large"
	typeUnsupported         = "/problems/unsupported-media-type"
	typeInternal            = "/problems/internal-error"
	typeUnavailable         = "/problems/service-unavailable"
	typeHeadersTooLarge     = "/problems/headers-too-large"
	typeHTTP                = "/problems/http-error"
)

func newProblem(status int, typ, title, detail string) *problemError {
	return &problemError{Problem{Type: typ, Title: title, Status: status, Detail: detail}}
}

func malformed(detail string) error {
	return newProblem(fiber.StatusBadRequest, typeMalformed, "Malformed request", detail)
}

// explained wraps an error of a known kind (store.ErrNotFound,
// store.ErrConflict) with what the client may read of it; the error handler
// picks the status from the kind.
type explained struct {
	err    error
	typ    string
	detail string
	fields []FieldError
}

func (e *explained) Error() string { return e.detail + ": " + e.err.Error() }
func (e *explained) Unwrap() error { return e.err }

// explain wraps err with a problem type and a detail for the client.
func explain(err error, typ, detail string, fields ...FieldError) error {
	return &explained{err: err, typ: typ, detail: detail, fields: fields}
}

// errorHandler is the one place errors become HTTP answers. A 500 never
// shows the underlying error to the client; it is logged instead.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	p := s.problem(c, err)
	p.Instance = c.Path()
	// A body over the server's limit is refused before any middleware ran.
	if len(c.Response().Header.Peek("X-Request-Id")) == 0 {
		c.Set("X-Request-Id", uuid.NewString())
	}
	if p.Status == fiber.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="dispatch-engine"`)
	}
	if p.Status == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, retryAfterSeconds)
	}
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(p.Status).JSON(p, "application/problem+json")
}

func (s *Server) problem(c *fiber.Ctx, err error) Problem {
	var (
		valErr  *ValidationError
		probErr *problemError
		fibErr  *fiber.Error
		expl    *explained
	)
	if errors.As(err, &expl) {
		switch {
		case errors.Is(err, store.ErrNotFound):
			return Problem{Type: or(expl.typ, typeNotFound), Title: "Not found", Status: fiber.StatusNotFound,
				Detail: expl.detail, Errors: expl.fields}
		case errors.Is(err, store.ErrConflict) && expl.typ == typeIdempotencyConflict:
			// A key reused for another request: 422, as
			// draft-ietf-httpapi-idempotency-key-header asks.
			return Problem{Type: expl.typ, Title: "Idempotency key reused", Status: fiber.StatusUnprocessableEntity,
				Detail: expl.detail, Errors: expl.fields}
		case errors.Is(err, store.ErrConflict):
			return Problem{Type: or(expl.typ, typeConflict), Title: "Conflict", Status: fiber.StatusConflict,
				Detail: expl.detail, Errors: expl.fields}
		}
	}
	switch {
	case errors.As(err, &valErr):
		return Problem{Type: typeValidation, Title: "Validation failed", Status: fiber.StatusUnprocessableEntity,
			Detail: "one or more fields are invalid", Errors: valErr.Fields}
	case errors.As(err, &probErr):
		return probErr.Problem
	case errors.Is(err, errNoAPIKey), errors.Is(err, errInvalidAPIKey):
		return Problem{Type: typeUnauthorized, Title: "Unauthorized", Status: fiber.StatusUnauthorized, Detail: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return Problem{Type: typeNotFound, Title: "Not found", Status: fiber.StatusNotFound, Detail: "the resource does not exist"}
	case errors.Is(err, store.ErrConflict):
		return Problem{Type: typeConflict, Title: "Conflict", Status: fiber.StatusConflict, Detail: "the request conflicts with the resource's state"}
	case errors.Is(err, errOverloaded):
		return Problem{Type: typeUnavailable, Title: "Service unavailable", Status: fiber.StatusServiceUnavailable,
			Detail: "the server is at capacity; retry after the given delay"}
	case store.Unavailable(err):
		s.log.Warn("database unavailable", requestFields(c, err)...)
		return Problem{Type: typeUnavailable, Title: "Service unavailable", Status: fiber.StatusServiceUnavailable,
			Detail: "the database cannot be reached; nothing was changed by this request unless a retry finds it; retry after the given delay"}
	case errors.As(err, &fibErr):
		p := Problem{Type: typeHTTP, Title: utilsStatusMessage(fibErr.Code), Status: fibErr.Code, Detail: fibErr.Message}
		switch fibErr.Code {
		case fiber.StatusRequestEntityTooLarge:
			path := c.Path()
			// A receipt takes no key: its answer is the limit.
			if strings.HasPrefix(path, "/v1/") && !isReceiptPath(path) {
				if _, err := s.authorized(c); err != nil {
					// The key is checked before the body is read: without
					// one, the answer is that, whatever the body.
					return s.problem(c, err)
				}
			}
			p.Type = typeTooLarge
			p.Detail = "the body is larger than this endpoint takes: at most " + strconv.Itoa(s.routeBodyLimit(path)) + " bytes"
		case fiber.StatusRequestHeaderFieldsTooLarge:
			p.Type = typeHeadersTooLarge
			p.Detail = "the request line and headers are larger than this server accepts"
		}
		return p
	case errors.Is(err, errPanic):
		// Logged with the stack where it was recovered.
	default:
		s.log.Error("request failed", requestFields(c, err)...)
	}
	return Problem{Type: typeInternal, Title: "Internal server error", Status: fiber.StatusInternalServerError,
		Detail: "the request could not be completed; it has been logged"}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func utilsStatusMessage(code int) string {
	if m := utils.StatusMessage(code); m != "" {
		return m
	}
	return "Error"
}
