package httpapi

import (
	"encoding/json"
	"net/url"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// maxDescription bounds a category's description, in bytes.
const maxDescription = 1024

// CategoryBody is the body of PUT /v1/categories/{name}: the whole
// category (critical defaults to false; a description, throttle or digest
// left out is removed). Throttle and Digest pace the category's
// notifications per recipient ({"limit":3,"per":"1h"},
// {"window":"10m","maxItems":50}).
type CategoryBody struct {
	Critical    *bool           `json:"critical"`
	Description *string         `json:"description"`
	Throttle    json.RawMessage `json:"throttle"`
	Digest      json.RawMessage `json:"digest"`
}

// CategoryResource is a category as the API shows it.
type CategoryResource struct {
	Name        string            `json:"name"`
	Critical    bool              `json:"critical"`
	Description *string           `json:"description,omitempty"`
	Throttle    *ThrottleResource `json:"throttle,omitempty"`
	Digest      *DigestResource   `json:"digest,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
	UpdatedAt   time.Time         `json:"updatedAt"`
	Links       SelfLink          `json:"links"`
}

// CategoryPage is a page of categories. NextCursor is null on the last page.
type CategoryPage struct {
	Data       []CategoryResource `json:"data"`
	NextCursor *string            `json:"nextCursor"`
}

func categoryResource(c store.Category) CategoryResource {
	return CategoryResource{Name: c.Name, Critical: c.Critical, Description: c.Description,
		Throttle: throttleResource(c.Throttle), Digest: digestResource(c.Digest),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Links: SelfLink{Self: "/v1/categories/" + url.PathEscape(c.Name)}}
}

func pathCategory(c *fiber.Ctx) (string, error) {
	name, ok := pathParam(c, "name")
	if !ok || !categoryPattern.MatchString(name) {
		return "", pathProblem("name", "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
	}
	return name, nil
}

// putCategory stores the category as given: 201 when new, 200 when replaced.
func (s *Server) putCategory(c *fiber.Ctx) error {
	name, err := pathCategory(c)
	if err != nil {
		return err
	}
	if err := requireJSON(c); err != nil {
		return err
	}
	var body CategoryBody
	if err := decodeStrict(c.Body(), &body); err != nil {
		return err
	}
	ve := &ValidationError{}
	if d := body.Description; d != nil && (len(*d) > maxDescription || !validText(*d)) {
		ve.add("description", "must be valid UTF-8 without NUL, at most %d bytes", maxDescription)
	}
	cat := store.Category{Name: name, Critical: body.Critical != nil && *body.Critical, Description: body.Description}
	if present(body.Throttle) {
		cat.Throttle = decodeThrottle(body.Throttle, ve)
	}
	if present(body.Digest) {
		cat.Digest = decodeDigest(body.Digest, ve)
	}
	if err := ve.orNil(); err != nil {
		return err
	}
	out, created, err := store.PutCategoryRules(c.UserContext(), s.pool, tenant(c).ID, cat)
	if err != nil {
		return err
	}
	res := categoryResource(out)
	c.Location(res.Links.Self)
	if created {
		return c.Status(fiber.StatusCreated).JSON(res)
	}
	return c.JSON(res)
}

func (s *Server) getCategory(c *fiber.Ctx) error {
	name, err := pathCategory(c)
	if err != nil {
		return err
	}
	out, err := store.GetCategory(c.UserContext(), s.pool, tenant(c).ID, name)
	if err != nil {
		return notFoundAs(err, "no category "+name)
	}
	return c.JSON(categoryResource(out))
}

// deleteCategory removes the category: it becomes an unknown one, which is
// non-critical.
func (s *Server) deleteCategory(c *fiber.Ctx) error {
	name, err := pathCategory(c)
	if err != nil {
		return err
	}
	if err := store.DeleteCategory(c.UserContext(), s.pool, tenant(c).ID, name); err != nil {
		return notFoundAs(err, "no category "+name)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listCategories(c *fiber.Ctx) error {
	p, err := parsePageQuery(c, nil)
	if err != nil {
		return err
	}
	rows, err := store.ListCategories(c.UserContext(), s.pool, tenant(c).ID, p.afterKey(0), p.limit+1)
	if err != nil {
		return err
	}
	resp := CategoryPage{Data: []CategoryResource{}}
	for _, r := range rows[:min(p.limit, len(rows))] {
		resp.Data = append(resp.Data, categoryResource(r))
	}
	if len(rows) > p.limit {
		resp.NextCursor = p.next(0, rows[p.limit-1].Name)
	}
	return c.JSON(resp)
}
