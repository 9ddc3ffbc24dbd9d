package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	tmpl "github.com/dispatch-engine/dispatch-engine/internal/template"
)

// Limits on a template.
const (
	maxTemplateLocales = 50
	// maxTemplateData bounds a notification's or a preview's data.
	maxTemplateData = 64 << 10
)

func (s *Server) templateRoutes(v1 fiber.Router) {
	v1.Get("/templates", s.listTemplates)
	v1.Get("/templates/:name", s.getTemplate)
	v1.Put("/templates/:name", s.putTemplate)
	v1.Delete("/templates/:name", s.deleteTemplate)
	v1.Post("/templates/:name/render", s.renderTemplate)
}

// TemplateBody is the body of PUT /v1/templates/{name}: the template's
// channel, its Liquid parts per locale and its default locale.
type TemplateBody struct {
	Channel       string                        `json:"channel"`
	Locales       map[string]map[string]*string `json:"locales"`
	DefaultLocale string                        `json:"defaultLocale"`
}

// TemplateVersionView is one version in a template's history.
type TemplateVersionView struct {
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
}

// TemplateResource is a template's current version as the API shows it;
// Versions lists its history on GET /v1/templates/{name}.
type TemplateResource struct {
	Name          string                       `json:"name"`
	Version       int                          `json:"version"`
	Channel       string                       `json:"channel"`
	Locales       map[string]map[string]string `json:"locales"`
	DefaultLocale string                       `json:"defaultLocale"`
	CreatedAt     time.Time                    `json:"createdAt"`
	UpdatedAt     time.Time                    `json:"updatedAt"`
	Versions      []TemplateVersionView        `json:"versions,omitempty"`
	Links         SelfLink                     `json:"links"`
}

// TemplatePage is a page of templates. NextCursor is null on the last page.
type TemplatePage struct {
	Data       []TemplateResource `json:"data"`
	NextCursor *string            `json:"nextCursor"`
}

// RenderRequest is the body of POST /v1/templates/{name}/render.
type RenderRequest struct {
	Data   json.RawMessage `json:"data"`
	Locale *string         `json:"locale"`
}

// RenderResult is a preview: the rendered parts, the locale and version used.
type RenderResult struct {
	Template string  `json:"template"`
	Version  int     `json:"version"`
	Locale   string  `json:"locale"`
	Subject  *string `json:"subject,omitempty"`
	Title    *string `json:"title,omitempty"`
	Text     string  `json:"text"`
	HTML     *string `json:"html,omitempty"`
}

func templateResource(t store.Template) TemplateResource {
	return TemplateResource{Name: t.Name, Version: t.Version, Channel: t.Channel, Locales: t.Locales,
		DefaultLocale: t.DefaultLocale, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
		Links: SelfLink{Self: "/v1/templates/" + url.PathEscape(t.Name)}}
}

func pathTemplate(c *fiber.Ctx) (string, error) {
	name, ok := pathParam(c, "name")
	if !ok || !categoryPattern.MatchString(name) {
		return "", pathProblem("name", "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
	}
	return name, nil
}

// templateParts are the parts each channel's template has, and the ones it requires.
var templateParts = map[string]struct{ allowed, required []string }{
	string(notification.Email): {[]string{tmpl.PartSubject, tmpl.PartText, tmpl.PartHTML}, []string{tmpl.PartSubject, tmpl.PartText}},
	string(notification.SMS):   {[]string{tmpl.PartText}, []string{tmpl.PartText}},
	string(notification.Push):  {[]string{tmpl.PartTitle, tmpl.PartText}, []string{tmpl.PartText}},
}

// validate checks the body and answers the template to store. Every part
// is parsed: a syntax error names locales.<locale>.<part>.
func (b TemplateBody) validate(engine *tmpl.Engine, name string, ve *ValidationError) store.Template {
	parts, ok := templateParts[b.Channel]
	if !ok {
		ve.add("channel", "must be one of sms, email, push")
	}
	switch {
	case len(b.Locales) == 0:
		ve.add("locales", "must hold at least one locale")
	case len(b.Locales) > maxTemplateLocales:
		ve.add("locales", "must hold at most %d locales", maxTemplateLocales)
	}
	if b.DefaultLocale == "" {
		ve.add("defaultLocale", "is required")
	} else if _, ok := b.Locales[b.DefaultLocale]; !ok && len(b.Locales) > 0 {
		ve.add("defaultLocale", "must be one of the locales given")
	}
	out := store.Template{Name: name, Channel: b.Channel, DefaultLocale: b.DefaultLocale, Locales: map[string]map[string]string{}}
	for _, loc := range sortedKeys(b.Locales) {
		field := "locales." + loc
		if !localePattern.MatchString(loc) {
			ve.add(field, "must be a BCP 47 language tag such as en or tr-TR")
			continue
		}
		src := tmpl.Parts{}
		for _, part := range sortedKeys(b.Locales[loc]) {
			v := b.Locales[loc][part]
			switch {
			case ok && !slices.Contains(parts.allowed, part):
				ve.add(field+"."+part, "is not a part of a %s template (%s)", b.Channel, strings.Join(parts.allowed, ", "))
			case v == nil:
			case !utf8.ValidString(*v) || strings.ContainsRune(*v, 0):
				ve.add(field+"."+part, "must be valid UTF-8 without NUL characters")
			case len(*v) > maxContent[string(notification.Email)]:
				ve.add(field+"."+part, "must be at most %d bytes", maxContent[string(notification.Email)])
			default:
				src[part] = *v
			}
		}
		for _, part := range parts.required {
			if strings.TrimSpace(src[part]) == "" {
				ve.add(field+"."+part, "is required for a %s template", b.Channel)
			}
		}
		for _, part := range sortedKeys(src) {
			var te *tmpl.Error
			if err := engine.Check(tmpl.Parts{part: src[part]}); errors.As(err, &te) {
				ve.add(field+"."+part, "does not parse: %s", te.Message)
			}
		}
		out.Locales[loc] = src
	}
	return out
}

// putTemplate stores a new version of the template: 201 when new, 200 otherwise.
func (s *Server) putTemplate(c *fiber.Ctx) error {
	name, err := pathTemplate(c)
	if err != nil {
		return err
	}
	if err := requireJSON(c); err != nil {
		return err
	}
	var body TemplateBody
	if err := decodeStrict(c.Body(), &body); err != nil {
		return err
	}
	ve := &ValidationError{}
	t := body.validate(s.render, name, ve)
	if err := ve.orNil(); err != nil {
		return err
	}
	out, created, err := store.PutTemplate(c.UserContext(), s.pool, tenant(c).ID, t)
	if err != nil {
		return err
	}
	res := templateResource(out)
	c.Location(res.Links.Self)
	if created {
		return c.Status(fiber.StatusCreated).JSON(res)
	}
	return c.JSON(res)
}

func (s *Server) getTemplate(c *fiber.Ctx) error {
	name, err := pathTemplate(c)
	if err != nil {
		return err
	}
	ctx, tid := c.UserContext(), tenant(c).ID
	t, err := store.GetTemplate(ctx, s.pool, tid, name)
	if err != nil {
		return notFoundAs(err, "no template "+name)
	}
	versions, err := store.ListTemplateVersions(ctx, s.pool, tid, name)
	if err != nil {
		return notFoundAs(err, "no template "+name)
	}
	res := templateResource(t)
	for _, v := range versions {
		res.Versions = append(res.Versions, TemplateVersionView{Version: v.Version, CreatedAt: v.CreatedAt})
	}
	return c.JSON(res)
}

func (s *Server) deleteTemplate(c *fiber.Ctx) error {
	name, err := pathTemplate(c)
	if err != nil {
		return err
	}
	if err := store.DeleteTemplate(c.UserContext(), s.pool, tenant(c).ID, name); err != nil {
		return notFoundAs(err, "no template "+name)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listTemplates(c *fiber.Ctx) error {
	p, err := parsePageQuery(c, nil)
	if err != nil {
		return err
	}
	rows, err := store.ListTemplates(c.UserContext(), s.pool, tenant(c).ID, p.afterKey(0), p.limit+1)
	if err != nil {
		return err
	}
	resp := TemplatePage{Data: []TemplateResource{}}
	for _, r := range rows[:min(p.limit, len(rows))] {
		resp.Data = append(resp.Data, templateResource(r))
	}
	if len(rows) > p.limit {
		resp.NextCursor = p.next(0, rows[p.limit-1].Name)
	}
	return c.JSON(resp)
}

// renderTemplate previews the template's current version with data: the
// parts a notification would store, and the locale it would take.
func (s *Server) renderTemplate(c *fiber.Ctx) error {
	name, err := pathTemplate(c)
	if err != nil {
		return err
	}
	if err := requireJSON(c); err != nil {
		return err
	}
	var body RenderRequest
	if err := decodeStrict(c.Body(), &body); err != nil {
		return err
	}
	ve := &ValidationError{}
	data := templateData(body.Data, "data", ve)
	if body.Locale != nil && !localePattern.MatchString(*body.Locale) {
		ve.add("locale", "must be a BCP 47 language tag such as en or tr-TR")
	}
	if err := ve.orNil(); err != nil {
		return err
	}
	t, err := store.GetTemplate(c.UserContext(), s.pool, tenant(c).ID, name)
	if err != nil {
		return notFoundAs(err, "no template "+name)
	}
	var want string
	if body.Locale != nil {
		want = *body.Locale
	}
	r, err := s.renderWith(c, t, data, "", want)
	if err != nil {
		return err
	}
	res := RenderResult{Template: t.Name, Version: t.Version, Locale: r.locale, Text: r.parts[tmpl.PartText],
		Subject: partOf(r.parts, tmpl.PartSubject), Title: partOf(r.parts, tmpl.PartTitle), HTML: partOf(r.parts, tmpl.PartHTML)}
	return c.JSON(res)
}

func partOf(p tmpl.Parts, name string) *string {
	if v, ok := p[name]; ok {
		return &v
	}
	return nil
}

// templateData decodes a notification's or a preview's data: a JSON
// object (null or absent is an empty one), at most maxTemplateData bytes.
func templateData(raw json.RawMessage, field string, ve *ValidationError) map[string]any {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return map[string]any{}
	}
	if trimmed[0] != '{' {
		ve.add(field, "must be a JSON object")
		return nil
	}
	if len(trimmed) > maxTemplateData {
		ve.add(field, "must be at most %d bytes (got %d)", maxTemplateData, len(trimmed))
		return nil
	}
	var data map[string]any
	if err := json.Unmarshal(trimmed, &data); err != nil {
		ve.add(field, "must be a JSON object")
		return nil
	}
	return data
}

// rendered is a template rendered for a notification or a preview.
type rendered struct {
	parts  tmpl.Parts
	locale string
}

// renderWith renders t with data in the first of the locales wanted that
// it has (each tried whole, then by its language), else its default. A
// render that fails is a 422 naming the template, locale and variable,
// under prefix ("" or "notifications[3].").
func (s *Server) renderWith(c *fiber.Ctx, t store.Template, data map[string]any, prefix string, want ...string) (rendered, error) {
	loc := tmpl.PickLocale(func(l string) bool { _, ok := t.Locales[l]; return ok }, t.DefaultLocale, want...)
	out, err := s.render.Render(c.UserContext(), tmpl.Parts(t.Locales[loc]), data)
	var te *tmpl.Error
	switch {
	case errors.As(err, &te):
		ve := &ValidationError{}
		where := fmt.Sprintf("template %s (version %d, locale %s) part %s", t.Name, t.Version, loc, te.Part)
		if te.Variable != "" {
			ve.add(prefix+"data."+te.Variable, "is missing: %s uses variable %s", where, te.Variable)
		} else {
			ve.add(prefix+"template", "%s does not render: %s", where, te.Message)
		}
		return rendered{}, ve
	case err != nil:
		return rendered{}, err
	}
	return rendered{parts: out, locale: loc}, nil
}

// applyTemplate renders nn's template into it at acceptance: content,
// subject (an email's subject, a push's title), html, and the template's
// name, version and locale, so the stored notification is what is sent.
// The locale is the request's, else the recipient profile's, else the
// template's default. templates caches the templates a batch has loaded.
// A template that is missing, for another channel, or does not render is a
// 422 under prefix; nothing is stored.
func (s *Server) applyTemplate(c *fiber.Ctx, nn *store.NewNotification, prefix string, templates map[string]store.Template) error {
	if nn.Template == nil {
		return nil
	}
	ctx, tid := c.UserContext(), tenant(c).ID
	t, ok := templates[*nn.Template]
	if !ok {
		var err error
		t, err = store.GetTemplate(ctx, s.pool, tid, *nn.Template)
		if errors.Is(err, store.ErrNotFound) {
			ve := &ValidationError{}
			ve.add(prefix+"template", "names no template of this tenant: %s", *nn.Template)
			return ve
		}
		if err != nil {
			return err
		}
		templates[t.Name] = t
	}
	channels := nn.Channels
	if len(channels) == 0 {
		channels = []string{string(nn.Channel)}
	}
	if !slices.Contains(channels, t.Channel) {
		ve := &ValidationError{}
		ve.add(prefix+"template", "is a %s template; the notification goes by %s", t.Channel, strings.Join(channels, ", "))
		return ve
	}
	want := make([]string, 0, 2)
	if nn.RequestedLocale != nil {
		want = append(want, *nn.RequestedLocale)
	}
	if nn.RequestedLocale == nil && nn.RecipientID != nil {
		r, err := store.GetRecipient(ctx, s.pool, tid, *nn.RecipientID)
		switch {
		case errors.Is(err, store.ErrNotFound): // the worker skips it; the default locale renders it
		case err != nil:
			return err
		case r.Locale != nil:
			want = append(want, *r.Locale)
		}
	}
	ve := &ValidationError{}
	data := templateData(nn.TemplateData, prefix+"data", ve)
	if err := ve.orNil(); err != nil {
		return err
	}
	r, err := s.renderWith(c, t, data, prefix, want...)
	if err != nil {
		return err
	}
	nn.Content = r.parts[tmpl.PartText]
	nn.Subject = partOf(r.parts, tmpl.PartSubject)
	if title := partOf(r.parts, tmpl.PartTitle); title != nil && *title != "" {
		nn.Subject = title
	}
	if h := r.parts[tmpl.PartHTML]; h != "" {
		nn.HTML = &h
	}
	nn.TemplateVersion, nn.Locale = &t.Version, &r.locale
	where := fmt.Sprintf("template %s (version %d, locale %s)", t.Name, t.Version, r.locale)
	limit, tightest := contentLimit(channels)
	switch {
	case strings.TrimSpace(nn.Content) == "":
		ve.add(prefix+"template", "%s renders an empty text", where)
	case limit > 0 && len(nn.Content) > limit:
		ve.add(prefix+"template", "%s renders a text of %d bytes; at most %d for %s", where, len(nn.Content), limit, tightest)
	}
	if nn.HTML != nil && len(*nn.HTML) > maxContent[string(notification.Email)] {
		ve.add(prefix+"template", "%s renders an html part over %d bytes", where, maxContent[string(notification.Email)])
	}
	if sub := nn.Subject; sub != nil && (len(*sub) > 998 || strings.ContainsAny(*sub, "\r\n")) {
		ve.add(prefix+"template", "%s renders a subject that is not one line of at most 998 bytes", where)
	}
	if slices.Contains(channels, string(notification.Email)) && (nn.Subject == nil || strings.TrimSpace(*nn.Subject) == "") {
		ve.add(prefix+"template", "%s renders an empty subject, which email requires", where)
	}
	return ve.orNil()
}
