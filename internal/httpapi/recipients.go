package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// recipientRoutes are the recipient side of the API: a tenant's profiles of
// the people it sends to, its categories, and the addresses it must not
// send to again (docs/RECIPIENTS.md).
func (s *Server) recipientRoutes(v1 fiber.Router) {
	v1.Get("/recipients", s.listRecipients)
	v1.Get("/recipients/:recipientId", s.getRecipient)
	v1.Put("/recipients/:recipientId", s.putRecipient)
	v1.Patch("/recipients/:recipientId", s.patchRecipient)
	v1.Delete("/recipients/:recipientId", s.deleteRecipient)
	v1.Get("/categories", s.listCategories)
	v1.Get("/categories/:name", s.getCategory)
	v1.Put("/categories/:name", s.putCategory)
	v1.Delete("/categories/:name", s.deleteCategory)
	v1.Get("/suppressions", s.listSuppressions)
	v1.Get("/suppressions/:channel/:recipient", s.getSuppression)
	v1.Put("/suppressions/:channel/:recipient", s.putSuppression)
	v1.Delete("/suppressions/:channel/:recipient", s.deleteSuppression)
}

var (
	recipientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,128}$`)
	categoryPattern    = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
	localePattern      = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
)

// Limits on a profile.
const (
	maxPushTokens  = 100
	maxLocale      = 35
	maxTimezone    = 64
	maxPreferences = 100 // categories named in preferences
)

// RecipientBody is the body of PUT /v1/recipients/{recipientId}: the whole
// profile. A field left out is removed from a profile that had it.
type RecipientBody struct {
	Addresses   json.RawMessage `json:"addresses"`
	Timezone    *string         `json:"timezone"`
	Locale      *string         `json:"locale"`
	Preferences json.RawMessage `json:"preferences"`
	// QuietHours is the person's own window, local to Timezone (UTC
	// without one); left out, the tenant's default applies.
	QuietHours json.RawMessage `json:"quietHours"`
}

// RecipientResource is a profile as the API shows it.
type RecipientResource struct {
	ID          string             `json:"id"`
	Addresses   AddressesResource  `json:"addresses"`
	Timezone    *string            `json:"timezone,omitempty"`
	Locale      *string            `json:"locale,omitempty"`
	Preferences store.Preferences  `json:"preferences"`
	QuietHours  *pacing.QuietHours `json:"quietHours,omitempty"`
	CreatedAt   time.Time          `json:"createdAt"`
	UpdatedAt   time.Time          `json:"updatedAt"`
	Links       SelfLink           `json:"links"`
}

// AddressesResource are a profile's addresses.
type AddressesResource struct {
	SMS   *string  `json:"sms,omitempty"`
	Email *string  `json:"email,omitempty"`
	Push  []string `json:"push,omitempty"`
}

// SelfLink points at the resource itself.
type SelfLink struct {
	Self string `json:"self"`
}

// RecipientPage is a page of profiles. NextCursor is null on the last page.
type RecipientPage struct {
	Data       []RecipientResource `json:"data"`
	NextCursor *string             `json:"nextCursor"`
}

func recipientResource(r store.Recipient) RecipientResource {
	return RecipientResource{ID: r.ID, Timezone: r.Timezone, Locale: r.Locale, Preferences: r.Preferences, QuietHours: r.QuietHours,
		Addresses: AddressesResource{SMS: r.Addresses.SMS, Email: r.Addresses.Email, Push: r.Addresses.Push},
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		Links: SelfLink{Self: "/v1/recipients/" + url.PathEscape(r.ID)}}
}

// putRecipient stores the body as the whole profile (a full replace, in one
// transaction): 201 for a new profile, 200 for a replaced one.
func (s *Server) putRecipient(c *fiber.Ctx) error {
	id, err := pathRecipientID(c)
	if err != nil {
		return err
	}
	if err := requireJSON(c); err != nil {
		return err
	}
	var body RecipientBody
	if err := decodeStrict(c.Body(), &body); err != nil {
		return err
	}
	r, ve := body.validate(id)
	if err := ve.orNil(); err != nil {
		return err
	}
	out, created, err := store.PutRecipient(c.UserContext(), s.pool, tenant(c).ID, r)
	if err != nil {
		return err
	}
	res := recipientResource(out)
	c.Location(res.Links.Self)
	if created {
		return c.Status(fiber.StatusCreated).JSON(res)
	}
	return c.JSON(res)
}

// mergePatchType is the media type of an RFC 7396 JSON merge patch.
const mergePatchType = "application/merge-patch+json"

// patchRecipient applies an RFC 7396 JSON merge patch to the profile, as
// PUT's body shows it: a member set to null is removed, an object is merged
// member by member (preferences.marketing.email alone), anything else
// (the push list included) replaced whole. The result is checked as a PUT
// body is, and stored in one transaction that holds the profile, so
// concurrent patches never lose each other's changes. 404 for a profile the
// tenant does not have: a PATCH does not create one.
func (s *Server) patchRecipient(c *fiber.Ctx) error {
	id, err := pathRecipientID(c)
	if err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(string(c.Request().Header.ContentType()))
	if err != nil || mt != mergePatchType || (params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
		return newProblem(fiber.StatusUnsupportedMediaType, typeUnsupported, "Unsupported media type",
			"send the body as "+mergePatchType+" (RFC 7396)")
	}
	var patch map[string]any
	if err := decodeStrict(c.Body(), &patch); err != nil {
		return err
	}
	out, err := store.PatchRecipient(c.UserContext(), s.pool, tenant(c).ID, id, func(cur store.Recipient) (store.Recipient, error) {
		merged, err := json.Marshal(mergePatch(recipientDocument(cur), patch))
		if err != nil {
			return store.Recipient{}, fmt.Errorf("applying the merge patch: %w", err)
		}
		var body RecipientBody
		if err := decodeStrict(merged, &body); err != nil {
			return store.Recipient{}, err
		}
		r, ve := body.validate(id)
		if err := ve.orNil(); err != nil {
			return store.Recipient{}, err
		}
		return r, nil
	})
	if err != nil {
		return notFoundAs(err, "no recipient "+id)
	}
	return c.JSON(recipientResource(out))
}

// recipientDocument is the profile r as a PUT body, in JSON's generic form.
func recipientDocument(r store.Recipient) map[string]any {
	doc := map[string]any{}
	addrs := map[string]any{}
	if r.Addresses.SMS != nil {
		addrs["sms"] = *r.Addresses.SMS
	}
	if r.Addresses.Email != nil {
		addrs["email"] = *r.Addresses.Email
	}
	if len(r.Addresses.Push) > 0 {
		push := make([]any, len(r.Addresses.Push))
		for i, tok := range r.Addresses.Push {
			push[i] = tok
		}
		addrs["push"] = push
	}
	if len(addrs) > 0 {
		doc["addresses"] = addrs
	}
	if r.Timezone != nil {
		doc["timezone"] = *r.Timezone
	}
	if r.Locale != nil {
		doc["locale"] = *r.Locale
	}
	if q := r.QuietHours; q != nil {
		doc["quietHours"] = map[string]any{"start": q.Start, "end": q.End}
	}
	if len(r.Preferences) > 0 {
		prefs := map[string]any{}
		for cat, chans := range r.Preferences {
			m := map[string]any{}
			for ch, v := range chans {
				m[ch] = v
			}
			prefs[cat] = m
		}
		doc["preferences"] = prefs
	}
	return doc
}

// mergePatch applies patch to target as RFC 7396 section 2 says.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for name, v := range p {
		if v == nil {
			delete(t, name)
			continue
		}
		t[name] = mergePatch(t[name], v)
	}
	return t
}

func (s *Server) getRecipient(c *fiber.Ctx) error {
	id, err := pathRecipientID(c)
	if err != nil {
		return err
	}
	r, err := store.GetRecipient(c.UserContext(), s.pool, tenant(c).ID, id)
	if err != nil {
		return notFoundAs(err, "no recipient "+id)
	}
	return c.JSON(recipientResource(r))
}

// deleteRecipient erases the person: the profile, its addresses, and the
// suppressions and opt-outs of each address it held.
func (s *Server) deleteRecipient(c *fiber.Ctx) error {
	id, err := pathRecipientID(c)
	if err != nil {
		return err
	}
	if err := store.DeleteRecipient(c.UserContext(), s.pool, tenant(c).ID, id); err != nil {
		return notFoundAs(err, "no recipient "+id)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listRecipients(c *fiber.Ctx) error {
	p, err := parsePageQuery(c, nil)
	if err != nil {
		return err
	}
	rows, err := store.ListRecipients(c.UserContext(), s.pool, tenant(c).ID, p.afterKey(0), p.limit+1)
	if err != nil {
		return err
	}
	resp := RecipientPage{Data: []RecipientResource{}}
	for _, r := range rows[:min(p.limit, len(rows))] {
		resp.Data = append(resp.Data, recipientResource(r))
	}
	if len(rows) > p.limit {
		resp.NextCursor = p.next(0, rows[p.limit-1].ID)
	}
	return c.JSON(resp)
}

// notFoundAs explains a store.ErrNotFound with detail; other errors pass.
func notFoundAs(err error, detail string) error {
	if errors.Is(err, store.ErrNotFound) {
		return explain(err, typeNotFound, detail)
	}
	return err
}

// pathParam is the path parameter name, percent-decoded (a '+' stays '+').
func pathParam(c *fiber.Ctx, name string) (string, bool) {
	v, err := url.PathUnescape(c.Params(name))
	return v, err == nil
}

func pathRecipientID(c *fiber.Ctx) (string, error) {
	id, ok := pathParam(c, "recipientId")
	if !ok || !recipientIDPattern.MatchString(id) {
		return "", pathProblem("recipientId", "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '@' and '-'")
	}
	return id, nil
}

// pathProblem is a 400 naming the path parameter name.
func pathProblem(name, format string, args ...any) error {
	ve := &ValidationError{}
	ve.add(name, format, args...)
	return newProblemFromValidation(fiber.StatusBadRequest, ve)
}

// validate checks the profile body and returns it as the profile id.
func (b RecipientBody) validate(id string) (store.Recipient, *ValidationError) {
	ve := &ValidationError{}
	r := store.Recipient{ID: id, Preferences: store.Preferences{}}
	if present(b.Addresses) {
		r.Addresses = decodeAddresses(b.Addresses, ve)
	}
	if b.Timezone != nil {
		tz := *b.Timezone
		if _, err := time.LoadLocation(tz); err != nil || tz == "" || tz == "Local" || len(tz) > maxTimezone {
			ve.add("timezone", "must be an IANA time zone name, e.g. Europe/Istanbul")
		}
		r.Timezone = &tz
	}
	if b.Locale != nil {
		if !localePattern.MatchString(*b.Locale) || len(*b.Locale) > maxLocale {
			ve.add("locale", "must be a BCP 47 language tag, e.g. tr-TR")
		}
		r.Locale = b.Locale
	}
	if present(b.Preferences) {
		r.Preferences = decodePreferences(b.Preferences, ve)
	}
	if present(b.QuietHours) {
		r.QuietHours = decodeQuietHours(b.QuietHours, ve)
	}
	return r, ve
}

// present reports whether a raw field was given and is not null.
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// decodeAddresses reads the addresses object, each address checked as a
// notification's recipient on that channel is.
func decodeAddresses(raw json.RawMessage, ve *ValidationError) store.Addresses {
	var a store.Addresses
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		ve.add("addresses", "must be a JSON object of channel to address")
		return a
	}
	for _, ch := range sortedKeys(fields) {
		v := fields[ch]
		field := "addresses." + ch
		if !present(v) {
			continue
		}
		switch notification.Channel(ch) {
		case notification.SMS, notification.Email:
			var addr string
			if json.Unmarshal(v, &addr) != nil {
				ve.add(field, "must be a JSON string")
				continue
			}
			if why := addressRefusal(ch, addr); why != "" {
				ve.add(field, "%s", why)
			}
			if ch == string(notification.SMS) {
				a.SMS = &addr
			} else {
				a.Email = &addr
			}
		case notification.Push:
			var tokens []string
			if json.Unmarshal(v, &tokens) != nil {
				ve.add(field, "must be a JSON array of device tokens")
				continue
			}
			if len(tokens) > maxPushTokens {
				ve.add(field, "must hold at most %d tokens (got %d)", maxPushTokens, len(tokens))
			}
			seen := map[string]bool{}
			for i, tok := range tokens {
				if why := addressRefusal(ch, tok); why != "" {
					ve.add(field+"["+strconv.Itoa(i)+"]", "%s", why)
				} else if seen[tok] {
					ve.add(field+"["+strconv.Itoa(i)+"]", "repeats an earlier token")
				}
				seen[tok] = true
			}
			a.Push = tokens
		default:
			ve.add(field, "unknown channel; the channels are sms, email, push")
		}
	}
	return a
}

// addressRefusal says why addr cannot be a recipient on channel, as
// POST /v1/notifications checks it; "" when it can.
func addressRefusal(channel, addr string) string {
	switch notification.Channel(channel) {
	case notification.SMS:
		if !e164.MatchString(addr) {
			return "must be an E.164 phone number, e.g. +14155550123"
		}
	case notification.Email:
		if parsed, err := mail.ParseAddress(addr); err != nil || parsed.Address != addr {
			return "must be an email address, e.g. user@example.com"
		}
	case notification.Push:
		if !validPushToken(addr) {
			return "must be a device token of 1 to " + strconv.Itoa(maxPushToken) + " visible characters"
		}
	default:
		return "unknown channel"
	}
	return ""
}

// decodePreferences reads category -> channel -> boolean; every other
// shape is named down to the field (preferences.marketing.fax).
func decodePreferences(raw json.RawMessage, ve *ValidationError) store.Preferences {
	prefs := store.Preferences{}
	var cats map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cats); err != nil {
		ve.add("preferences", "must be a JSON object of category to an object of channel to true or false")
		return prefs
	}
	if len(cats) > maxPreferences {
		ve.add("preferences", "must name at most %d categories (got %d)", maxPreferences, len(cats))
	}
	for _, cat := range sortedKeys(cats) {
		field := "preferences." + cat
		if !categoryPattern.MatchString(cat) {
			ve.add(field, "a category is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
			continue
		}
		var channels map[string]json.RawMessage
		if err := json.Unmarshal(cats[cat], &channels); err != nil || channels == nil {
			ve.add(field, "must be a JSON object of channel to true or false")
			continue
		}
		prefs[cat] = map[string]bool{}
		for _, ch := range sortedKeys(channels) {
			if !notification.ValidChannel(ch) {
				ve.add(field+"."+ch, "unknown channel; the channels are sms, email, push")
				continue
			}
			v := bytes.TrimSpace(channels[ch])
			if !bytes.Equal(v, []byte("true")) && !bytes.Equal(v, []byte("false")) {
				ve.add(field+"."+ch, "must be true or false")
				continue
			}
			prefs[cat][ch] = v[0] == 't'

		}
	}
	return prefs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Page sizes of the recipient side's lists.
const (
	defaultPageLimit = 50
	maxPageLimit     = 100
)

// pageCursor is the position after a page of a recipient-side list, opaque
// to clients: base64url of this JSON. T and K are the last row's keyset
// (an instant, and text keys); F binds it to the listing's tenant and
// filters.
type pageCursor struct {
	Version int      `json:"v"`
	T       int64    `json:"t,omitempty"`
	K       []string `json:"k"`
	F       string   `json:"f"`
}

// pageQuery is a list request's paging: its limit, the position its cursor
// names (nil on the first page), and its filters' key.
type pageQuery struct {
	limit     int
	after     *pageCursor
	filterKey string
	// filters are the query's other parameters, by name.
	filters map[string]string
}

// afterKey is the cursor's text key i, "" on the first page.
func (p pageQuery) afterKey(i int) string {
	if p.after == nil || len(p.after.K) <= i {
		return ""
	}
	return p.after.K[i]
}

// next is the cursor after a page whose last row has keyset (t, keys).
func (p pageQuery) next(t int64, keys ...string) *string {
	raw, _ := json.Marshal(pageCursor{Version: cursorVersion, T: t, K: keys, F: p.filterKey})
	s := base64.RawURLEncoding.EncodeToString(raw)
	return &s
}

// parsePageQuery reads limit, cursor and the filters named in filters (the
// only other parameters taken); every bad parameter is named in one 400.
// check validates a filter's value, "" when it is good.
func parsePageQuery(c *fiber.Ctx, filters map[string]func(string) string) (pageQuery, error) {
	ve := &ValidationError{}
	p := pageQuery{limit: defaultPageLimit, filters: map[string]string{}}
	known := append([]string{"limit", "cursor"}, sortedKeys(filters)...)
	values := map[string]string{}
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		name := string(k)
		switch _, seen := values[name]; {
		case !slices.Contains(known, name):
			ve.add(name, "unknown query parameter; known: %s", strings.Join(known, ", "))
		case seen:
			ve.add(name, "given more than once")
		}
		values[name] = string(v)
	})
	for name, check := range filters {
		if v, ok := values[name]; ok {
			if why := check(v); why != "" {
				ve.add(name, "%s", why)
			}
			p.filters[name] = v
		}
	}
	if v, ok := values["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			ve.add("limit", "must be an integer from 1 to %d", maxPageLimit)
		}
		p.limit = n
	}
	// The tenant is part of the filters: a cursor never crosses tenants.
	key, _ := json.Marshal(struct {
		Path    string
		Tenant  string
		Filters map[string]string
	}{c.Route().Path, tenant(c).ID.String(), p.filters})
	sum := sha256.Sum256(key)
	p.filterKey = hex.EncodeToString(sum[:8])
	if v, ok := values["cursor"]; ok {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		var cur pageCursor
		switch {
		case err != nil || json.Unmarshal(raw, &cur) != nil || cur.Version != cursorVersion || len(cur.K) == 0:
			ve.add("cursor", "is not a cursor this API returned; pass nextCursor as it came")
		case cur.F != p.filterKey:
			ve.add("cursor", "belongs to a listing with other filters; keep the first page's filters while paging")
		default:
			p.after = &cur
		}
	}
	if len(ve.Fields) > 0 {
		return pageQuery{}, newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	return p, nil
}
