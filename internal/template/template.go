// Package template renders a tenant's notification templates: Liquid
// ({{ name }}, {% if vip %}…{% endif %}, filters) through
// github.com/osteele/liquid, sandboxed. A variable the data lacks is an
// error, not an empty string; nothing reaches the disk ({% include %} is
// refused when the template is parsed); output is bounded in size and
// rendering in time; and in an html part every {{ … }} is HTML-escaped
// unless it ends in | raw.
package template

import (
	"context"
	"errors"
	"fmt"
	"html"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/osteele/liquid"
	"github.com/osteele/liquid/parser"
	"github.com/osteele/liquid/render"
)

// The parts of a template, per channel: email has subject, text and html
// (html optional), sms text, push title and text.
const (
	PartSubject = "subject"
	PartText    = "text"
	PartHTML    = "html"
	PartTitle   = "title"
)

// Defaults of Limits.
const (
	DefaultMaxOutput = 256 << 10
	DefaultTimeout   = 250 * time.Millisecond
)

// Limits bound one render.
type Limits struct {
	// MaxOutput bounds each rendered part in bytes (DefaultMaxOutput, the
	// email content limit).
	MaxOutput int
	// Timeout bounds the render of all of a template's parts
	// (DefaultTimeout).
	Timeout time.Duration
}

// Engine parses and renders templates. It is safe for concurrent use.
type Engine struct {
	liquid *liquid.Engine
	limits Limits

	// parsed caches compiled parts by part and source: a template's
	// sources change only with a new version, and parsing costs more than
	// rendering. Bounded by maxParsed; when full it starts again empty.
	mu     sync.Mutex
	parsed map[parsedKey]*liquid.Template
}

type parsedKey struct{ part, source string }

// maxParsed bounds the cache of compiled parts.
const maxParsed = 4096

// escapeFilter is the filter every {{ … }} of an html part ends in.
const escapeFilter = "html_escape_strict"

// New returns an Engine with limits (zero fields take their defaults).
func New(limits Limits) *Engine {
	if limits.MaxOutput <= 0 {
		limits.MaxOutput = DefaultMaxOutput
	}
	if limits.Timeout <= 0 {
		limits.Timeout = DefaultTimeout
	}
	e := liquid.NewEngine()
	e.StrictVariables()
	// include reads files relative to the template's path: the parse
	// refuses it, and should one ever reach a render it fails there too.
	e.RegisterTag("include", func(render.Context) (string, error) {
		return "", errors.New("include is not allowed")
	})
	// raw marks an html part's value as already safe HTML: the parse
	// leaves a {{ … | raw }} unescaped, and the filter itself changes nothing.
	e.RegisterFilter("raw", func(v any) any { return v })
	e.RegisterFilter(escapeFilter, escapeHTML)
	return &Engine{liquid: e, limits: limits, parsed: map[parsedKey]*liquid.Template{}}
}

// Error is a template that does not parse or does not render: Part names
// the part, Variable the variable that is missing (when that is the cause).
type Error struct {
	Part     string
	Variable string
	Message  string
}

func (e *Error) Error() string {
	if e.Variable != "" {
		return fmt.Sprintf("%s: variable %q is not in the data", e.Part, e.Variable)
	}
	return e.Part + ": " + e.Message
}

// Parts are a template's sources, or a render's output, by part.
type Parts map[string]string

// Check parses every part and answers the first that does not parse (in
// the order subject, title, text, html), or nil.
func (e *Engine) Check(parts Parts) error {
	for _, name := range partOrder {
		src, ok := parts[name]
		if !ok {
			continue
		}
		if _, err := e.parse(name, src); err != nil {
			return err
		}
	}
	return nil
}

var partOrder = []string{PartSubject, PartTitle, PartText, PartHTML}

// Render renders every part with data, within the engine's limits. A
// missing variable, an error of the template, output over the bound or a
// render past the deadline is an *Error naming the part.
func (e *Engine) Render(ctx context.Context, parts Parts, data map[string]any) (Parts, error) {
	ctx, cancel := context.WithTimeout(ctx, e.limits.Timeout)
	defer cancel()
	type result struct {
		out Parts
		err error
	}
	done := make(chan result, 1)
	// The library takes no context: the render runs on its own goroutine,
	// and its writer stops it at its next write once the deadline passed.
	go func() {
		out, err := e.render(ctx, parts, data)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		return nil, &Error{Part: "template", Message: fmt.Sprintf("rendering took longer than %s", e.limits.Timeout)}
	}
}

func (e *Engine) render(ctx context.Context, parts Parts, data map[string]any) (out Parts, err error) {
	if data == nil {
		data = map[string]any{}
	}
	out = make(Parts, len(parts))
	for _, name := range partOrder {
		src, ok := parts[name]
		if !ok {
			continue
		}
		tpl, err := e.compiled(name, src)
		if err != nil {
			return nil, err
		}
		s, err := e.renderOne(ctx, name, tpl, data)
		if err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, nil
}

// renderOne renders one parsed part. The library panics when its writer
// fails (the bound, the deadline): that is recovered into an *Error.
func (e *Engine) renderOne(ctx context.Context, part string, tpl *liquid.Template, data map[string]any) (s string, err error) {
	w := &boundedWriter{ctx: ctx, max: e.limits.MaxOutput}
	defer func() {
		if r := recover(); r != nil {
			if w.err == nil {
				panic(r)
			}
			err = &Error{Part: part, Message: w.err.Error()}
		}
	}()
	if rerr := tpl.FRender(w, data); rerr != nil {
		if w.err != nil {
			return "", &Error{Part: part, Message: w.err.Error()}
		}
		return "", renderError(part, rerr)
	}
	return w.b.String(), nil
}

// compiled is the part compiled, from the cache or parsed now.
func (e *Engine) compiled(part, src string) (*liquid.Template, error) {
	key := parsedKey{part, src}
	e.mu.Lock()
	tpl, ok := e.parsed[key]
	e.mu.Unlock()
	if ok {
		return tpl, nil
	}
	tpl, err := e.parse(part, src)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if len(e.parsed) >= maxParsed {
		clear(e.parsed)
	}
	e.parsed[key] = tpl
	e.mu.Unlock()
	return tpl, nil
}

// parse compiles one part; an html part's {{ … }} are rewritten to end in
// the escaping filter first.
func (e *Engine) parse(part, src string) (*liquid.Template, error) {
	tokens := parser.Scan(src, parser.SourceLoc{}, nil)
	for _, t := range tokens {
		if t.Type == parser.TagTokenType && t.Name == "include" {
			return nil, &Error{Part: part, Message: "{% include %} is not allowed: a template is one text"}
		}
	}
	if part == PartHTML {
		src = escapeObjects(tokens)
	}
	tpl, err := e.liquid.ParseString(src)
	if err != nil {
		return nil, &Error{Part: part, Message: strings.TrimPrefix(err.Error(), "Liquid error: ")}
	}
	return tpl, nil
}

// rawSuffix matches an output that opts out of escaping.
var rawSuffix = regexp.MustCompile(`\|\s*raw\s*$`)

// escapeObjects rebuilds the scanned source with escapeFilter appended to
// every output outside {% raw %} and {% comment %}, but those ending in
// | raw.
func escapeObjects(tokens []parser.Token) string {
	var b strings.Builder
	verbatim := ""
	for _, t := range tokens {
		switch {
		case t.Type == parser.TagTokenType && verbatim == "" && (t.Name == "raw" || t.Name == "comment"):
			verbatim = "end" + t.Name
		case t.Type == parser.TagTokenType && t.Name == verbatim:
			verbatim = ""
		case t.Type == parser.ObjTokenType && verbatim == "" && !rawSuffix.MatchString(t.Args):
			left, right := "{{", "}}"
			if strings.HasPrefix(t.Source, "{{-") {
				left = "{{-"
			}
			if strings.HasSuffix(t.Source, "-}}") {
				right = "-}}"
			}
			b.WriteString(left + " " + t.Args + " | " + escapeFilter + " " + right)
			continue
		}
		b.WriteString(t.Source)
	}
	return b.String()
}

// escapeHTML escapes v for HTML. A nil v is a variable the data lacks: the
// filter keeps the strictness a bare {{ name }} has in the other parts.
func escapeHTML(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", errors.New("undefined variable")
	case string:
		return html.EscapeString(v), nil
	case []any:
		var b strings.Builder
		for _, item := range v {
			if item != nil {
				_, _ = fmt.Fprint(&b, item)
			}
		}
		return html.EscapeString(b.String()), nil
	default:
		return html.EscapeString(fmt.Sprint(v)), nil
	}
}

// objectSource finds the output an error happened in: "… in {{ user.name }}".
var objectSource = regexp.MustCompile(`in \{\{-?\s*(.+?)\s*-?\}\}$`)

// leadingVariable is the variable an output starts with.
var leadingVariable = regexp.MustCompile(`^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\[\d+\])*`)

// renderError turns the library's error into an *Error, naming the
// variable when one is missing.
func renderError(part string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "Liquid error: ")
	if strings.Contains(msg, "undefined variable") {
		if m := objectSource.FindStringSubmatch(msg); m != nil {
			if v := leadingVariable.FindString(m[1]); v != "" {
				return &Error{Part: part, Variable: v, Message: msg}
			}
		}
	}
	return &Error{Part: part, Message: msg}
}

// boundedWriter collects a part's output up to max bytes, and fails once
// over it or once ctx is done.
type boundedWriter struct {
	ctx context.Context
	max int
	b   strings.Builder
	err error
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	if w.err == nil && w.ctx.Err() != nil {
		w.err = errors.New("rendering took too long")
	}
	if w.err == nil && w.b.Len()+len(p) > w.max {
		w.err = fmt.Errorf("output exceeds %d bytes", w.max)
	}
	if w.err != nil {
		return 0, w.err
	}
	return w.b.Write(p)
}

// PickLocale chooses among available the first candidate that is there,
// exactly or by its language alone ("tr-TR", then "tr"), else def.
// Candidates that are empty are skipped.
func PickLocale(available func(string) bool, def string, candidates ...string) string {
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if available(c) {
			return c
		}
		if lang, _, ok := strings.Cut(strings.ReplaceAll(c, "_", "-"), "-"); ok && available(lang) {
			return lang
		}
	}
	return def
}
