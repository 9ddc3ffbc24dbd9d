package app

import (
	"context"
	"errors"
	"net/http"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// apiClient is the client package's Dispatch, and the transport under it
// that notes what each answer's headers said: the request id to quote with a
// problem, and whether an idempotent request was a replay.
type apiClient struct {
	*client.Dispatch
}

func newAPIClient(cfg config, hc *http.Client) (*apiClient, error) {
	d, err := client.New(cfg.url, cfg.apiKey, client.WithHTTPClient(recordingDoer{hc}))
	if err != nil {
		return nil, err
	}
	return &apiClient{d}, nil
}

// answerNote is what the transport saw of the last answer to a call made
// with a context from noting.
type answerNote struct {
	requestID string
	replayed  bool
}

type noteKey struct{}

// noting returns ctx with a fresh note that the answers to requests made
// with it fill in.
func noting(ctx context.Context) (context.Context, *answerNote) {
	n := &answerNote{}
	return context.WithValue(ctx, noteKey{}, n), n
}

type recordingDoer struct{ hc *http.Client }

func (d recordingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.hc.Do(req)
	if err == nil {
		if n, ok := req.Context().Value(noteKey{}).(*answerNote); ok {
			n.requestID = resp.Header.Get("X-Request-Id")
			n.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
		}
	}
	return resp, err
}

// call runs one API call with a note, and returns its note; a problem
// answer comes back as an error that also carries the request id.
func call[T any](ctx context.Context, f func(ctx context.Context) (T, error)) (T, *answerNote, error) {
	ctx, note := noting(ctx)
	v, err := f(ctx)
	if err != nil {
		var p *client.Problem
		if errors.As(err, &p) {
			err = &problemError{p: p, requestID: note.requestID}
		}
	}
	return v, note, err
}

// problemError is a problem answer and the id of the request it answered.
type problemError struct {
	p         *client.Problem
	requestID string
}

func (e *problemError) Error() string { return e.p.Error() }
func (e *problemError) Unwrap() error { return e.p }

// asProblem finds the problem answer in err, if it is one.
func asProblem(err error) (*problem, bool) {
	var (
		pe *problemError
		p  *client.Problem
	)
	requestID := ""
	if errors.As(err, &pe) {
		p, requestID = pe.p, pe.requestID
	} else if !errors.As(err, &p) {
		return nil, false
	}
	out := &problem{Status: p.Status, Title: p.Title, Type: p.Type, Detail: p.Detail, RequestID: requestID}
	for _, fe := range p.Errors {
		out.Errors = append(out.Errors, fieldError{fe.Field, fe.Message})
	}
	return out, true
}

// notedError is an error with lines to print after it: what a batch had
// sent before it failed, how to resume.
type notedError struct {
	err   error
	notes []string
}

func (e *notedError) Error() string { return e.err.Error() }
func (e *notedError) Unwrap() error { return e.err }
