package httpapi

import (
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
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
	typeValidation  = "/problems/validation-error"
	typeMalformed   = "/problems/malformed-request"
	typeNotFound    = "/problems/not-found"
	typeConflict    = "/problems/conflict"
	typeTooLarge    = "/problems/payload-too-large"
	typeUnsupported = "/problems/unsupported-media-type"
	typeInternal    = "/problems/internal-error"
	typeHTTP        = "/problems/http-error"
)

func newProblem(status int, typ, title, detail string) *problemError {
	return &problemError{Problem{Type: typ, Title: title, Status: status, Detail: detail}}
}

func malformed(detail string) error {
	return newProblem(fiber.StatusBadRequest, typeMalformed, "Malformed request", detail)
}

// errorHandler is the one place errors become HTTP answers. A 500 never
// shows the underlying error to the client; it is logged instead.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var (
		p       Problem
		valErr  *ValidationError
		probErr *problemError
		fibErr  *fiber.Error
	)
	switch {
	case errors.As(err, &valErr):
		p = Problem{Type: typeValidation, Title: "Validation failed", Status: fiber.StatusUnprocessableEntity,
			Detail: "one or more fields are invalid", Errors: valErr.Fields}
	case errors.As(err, &probErr):
		p = probErr.Problem
	case errors.As(err, &fibErr):
		p = Problem{Type: typeHTTP, Title: utilsStatusMessage(fibErr.Code), Status: fibErr.Code, Detail: fibErr.Message}
		if fibErr.Code == fiber.StatusRequestEntityTooLarge {
			p.Type = typeTooLarge
		}
	default:
		s.log.Error("request failed", requestFields(c, err)...)
		p = Problem{Type: typeInternal, Title: "Internal server error", Status: fiber.StatusInternalServerError,
			Detail: "the request could not be completed; it has been logged"}
	}
	p.Instance = c.Path()
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(p.Status).JSON(p, "application/problem+json")
}

func utilsStatusMessage(code int) string {
	if m := utils.StatusMessage(code); m != "" {
		return m
	}
	return "Error"
}
