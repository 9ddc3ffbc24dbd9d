package client

import (
	"bytes"
	"context"
	"encoding/json"
)

// done returns nil for a 2xx answer without a body (a 204), and the answer
// as a *Problem otherwise.
func done(r answer) error {
	if r.StatusCode()/100 == 2 {
		return nil
	}
	return problemOf(r)
}

// PutRecipient stores p as the whole profile id (PUT replaces it: a field
// left out is removed) and answers the stored profile.
func (d *Dispatch) PutRecipient(ctx context.Context, id string, p RecipientInput, editors ...RequestEditorFn) (*Recipient, error) {
	r, err := d.raw.PutRecipientWithResponse(ctx, id, nil, p, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON201, r.JSON200))
}

// PatchRecipient changes part of the profile id with an RFC 7396 JSON
// merge patch, given as any value that marshals to a JSON object: a member
// set to nil (JSON null) is removed, an object merged member by member,
// anything else replaced. A map[string]any says null where RecipientPatch's
// omitted pointers cannot:
//
//	d.PatchRecipient(ctx, "user-42", map[string]any{"timezone": nil,
//		"preferences": map[string]any{"marketing": map[string]any{"sms": false}}})
func (d *Dispatch) PatchRecipient(ctx context.Context, id string, patch any, editors ...RequestEditorFn) (*Recipient, error) {
	raw, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	r, err := d.raw.PatchRecipientWithBodyWithResponse(ctx, id, nil, "application/merge-patch+json", bytes.NewReader(raw), editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// GetRecipient reads the profile id.
func (d *Dispatch) GetRecipient(ctx context.Context, id string, editors ...RequestEditorFn) (*Recipient, error) {
	r, err := d.raw.GetRecipientWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// DeleteRecipient erases the profile id: its addresses, and the
// suppressions and opt-outs of each of them.
func (d *Dispatch) DeleteRecipient(ctx context.Context, id string, editors ...RequestEditorFn) error {
	r, err := d.raw.DeleteRecipientWithResponse(ctx, id, nil, editors...)
	if err != nil {
		return err
	}
	return done(r)
}

// ListRecipients reads one page of profiles in id order; pass the page's
// NextCursor as params.Cursor for the next.
func (d *Dispatch) ListRecipients(ctx context.Context, params *ListRecipientsParams, editors ...RequestEditorFn) (*RecipientPage, error) {
	r, err := d.raw.ListRecipientsWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// PutCategory stores the category name as c gives it (a full replace).
func (d *Dispatch) PutCategory(ctx context.Context, name string, c CategoryInput, editors ...RequestEditorFn) (*Category, error) {
	r, err := d.raw.PutCategoryWithResponse(ctx, name, nil, c, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON201, r.JSON200))
}

// GetCategory reads the category name.
func (d *Dispatch) GetCategory(ctx context.Context, name string, editors ...RequestEditorFn) (*Category, error) {
	r, err := d.raw.GetCategoryWithResponse(ctx, name, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// DeleteCategory removes the category name; notifications naming it are
// non-critical from then on.
func (d *Dispatch) DeleteCategory(ctx context.Context, name string, editors ...RequestEditorFn) error {
	r, err := d.raw.DeleteCategoryWithResponse(ctx, name, nil, editors...)
	if err != nil {
		return err
	}
	return done(r)
}

// ListCategories reads one page of categories in name order.
func (d *Dispatch) ListCategories(ctx context.Context, params *ListCategoriesParams, editors ...RequestEditorFn) (*CategoryPage, error) {
	r, err := d.raw.ListCategoriesWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// Suppress suppresses recipient on channel (PUT /v1/suppressions/...):
// nothing is sent to it there until Unsuppress. A zero s is a manual entry
// without a note.
func (d *Dispatch) Suppress(ctx context.Context, channel Channel, recipient string, s SuppressionInput, editors ...RequestEditorFn) (*Suppression, error) {
	r, err := d.raw.PutSuppressionWithResponse(ctx, channel, recipient, nil, s, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, firstOf(r.JSON201, r.JSON200))
}

// GetSuppression reads recipient's suppression on channel; a *Problem with
// status 404 when it is not suppressed.
func (d *Dispatch) GetSuppression(ctx context.Context, channel Channel, recipient string, editors ...RequestEditorFn) (*Suppression, error) {
	r, err := d.raw.GetSuppressionWithResponse(ctx, channel, recipient, nil, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}

// Unsuppress lifts recipient's suppression on channel.
func (d *Dispatch) Unsuppress(ctx context.Context, channel Channel, recipient string, editors ...RequestEditorFn) error {
	r, err := d.raw.DeleteSuppressionWithResponse(ctx, channel, recipient, nil, editors...)
	if err != nil {
		return err
	}
	return done(r)
}

// ListSuppressions reads one page of suppressions, newest first, matching
// params' filters (channel, recipient, reason).
func (d *Dispatch) ListSuppressions(ctx context.Context, params *ListSuppressionsParams, editors ...RequestEditorFn) (*SuppressionPage, error) {
	r, err := d.raw.ListSuppressionsWithResponse(ctx, params, editors...)
	if err != nil {
		return nil, err
	}
	return result(r, r.JSON200)
}
