package httpapi

import (
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// routeTable knows which methods each route template serves, to answer 405
// with an Allow header for a known path and a method it does not serve.
type routeTable []routeEntry

type routeEntry struct {
	segments []string // ":name" is a parameter
	static   int      // how many segments are literal
	methods  []string
}

// methodOrder lists methods in the order Allow names them.
var methodOrder = []string{
	fiber.MethodGet, fiber.MethodHead, fiber.MethodPost, fiber.MethodPut,
	fiber.MethodPatch, fiber.MethodDelete, fiber.MethodOptions,
}

func newRouteTable(routes []fiber.Route) routeTable {
	byPath := map[string]*routeEntry{}
	var t routeTable
	for _, r := range routes {
		e, ok := byPath[r.Path]
		if !ok {
			e = &routeEntry{segments: strings.Split(r.Path, "/")}
			for _, seg := range e.segments {
				if !strings.HasPrefix(seg, ":") {
					e.static++
				}
			}
			byPath[r.Path] = e
		}
		if !slices.Contains(e.methods, r.Method) {
			e.methods = append(e.methods, r.Method)
		}
	}
	for _, e := range byPath {
		slices.SortFunc(e.methods, func(a, b string) int {
			return slices.Index(methodOrder, a) - slices.Index(methodOrder, b)
		})
		t = append(t, *e)
	}
	return t
}

// allowed returns the methods served at path by its most specific route
// template (the one with the most literal segments: /v1/notifications/batch
// over /v1/notifications/:id), or nil when no template matches.
func (t routeTable) allowed(path string) []string {
	segs := strings.Split(path, "/")
	var best *routeEntry
	for i := range t {
		e := &t[i]
		if !e.matches(segs) {
			continue
		}
		if best == nil || e.static > best.static {
			best = e
		}
	}
	if best == nil {
		return nil
	}
	return best.methods
}

func (e *routeEntry) matches(segs []string) bool {
	if len(segs) != len(e.segments) {
		return false
	}
	for i, seg := range e.segments {
		if strings.HasPrefix(seg, ":") {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if seg != segs[i] {
			return false
		}
	}
	return true
}

// allowMethods answers 405 with Allow when the path is known but the method
// is not served there; an unknown path goes on to the 404 answer.
func (s *Server) allowMethods(c *fiber.Ctx) error {
	allow := s.routes.allowed(c.Path())
	if allow == nil || slices.Contains(allow, c.Method()) {
		return c.Next()
	}
	c.Set(fiber.HeaderAllow, strings.Join(allow, ", "))
	return newProblem(fiber.StatusMethodNotAllowed, typeMethodNotAllowed, "Method not allowed",
		c.Method()+" is not served at "+c.Path()+"; allowed: "+strings.Join(allow, ", "))
}
