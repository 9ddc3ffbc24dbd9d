package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"syscall"
)

// problem is an RFC 9457 answer of the API, with the request id its
// X-Request-Id header carried.
type problem struct {
	Status    int
	Title     string
	Type      string
	Detail    string
	Errors    []fieldError
	RequestID string
}

type fieldError struct{ Field, Message string }

func (p *problem) status() int { return p.Status }

// printProblem writes p as
//
//	error: 422 Validation failed
//	  recipient: must be an E.164 phone number, e.g. +14155550123
//	one or more fields are invalid
//	request id: 3f2c…
func printProblem(w io.Writer, p *problem) {
	title := p.Title
	if title == "" {
		title = "error"
	}
	say(w, "error: %d %s\n", p.Status, title)
	for _, fe := range p.Errors {
		say(w, "  %s: %s\n", fe.Field, fe.Message)
	}
	if p.Detail != "" && p.Detail != p.Title {
		sayln(w, p.Detail)
	}
	if p.RequestID != "" {
		say(w, "request id: %s\n", p.RequestID)
	}
}

// unreachable tells whether err means the API was not reached, or did not
// answer in time: a transport error, not an answer.
func unreachable(err error) bool {
	var ue *url.Error
	if errors.As(err, &ue) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED)
}
