package client

import "context"

// PutTemplate stores t as the next version of the template name (the
// first is 1); every part is parsed, and one that does not parse is an
// *Error naming locales.<locale>.<part>.
func (d *Dispatch) PutTemplate(ctx context.Context, name string, t TemplateInput, editors ...RequestEditorFn) (*Template, error) {
	r, err := d.raw.PutTemplateWithResponse(ctx, name, nil, t, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON201, r.JSON200))
}

// GetTemplate reads the current version of the template name, with the
// list of its versions.
func (d *Dispatch) GetTemplate(ctx context.Context, name string, editors ...RequestEditorFn) (*Template, error) {
	r, err := d.raw.GetTemplateWithResponse(ctx, name, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// DeleteTemplate removes the template name with all its versions.
func (d *Dispatch) DeleteTemplate(ctx context.Context, name string, editors ...RequestEditorFn) error {
	r, err := d.raw.DeleteTemplateWithResponse(ctx, name, nil, editors...)
	if err != nil {
		return err
	}
	return done(r)
}

// ListTemplates reads one page of templates in name order, each its
// current version.
func (d *Dispatch) ListTemplates(ctx context.Context, params *ListTemplatesParams, editors ...RequestEditorFn) (*TemplatePage, error) {
	r, err := d.raw.ListTemplatesWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// RenderTemplate previews the template name rendered with in's data and
// locale, as a notification would be at acceptance; nothing is sent.
func (d *Dispatch) RenderTemplate(ctx context.Context, name string, in RenderInput, editors ...RequestEditorFn) (*RenderedTemplate, error) {
	r, err := d.raw.RenderTemplateWithResponse(ctx, name, nil, in, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}
