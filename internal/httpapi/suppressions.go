package httpapi

import (
	"bytes"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// maxNote bounds a suppression's note, in bytes.
const maxNote = 1024

// SuppressionBody is the body of PUT /v1/suppressions/{channel}/{recipient};
// the body itself is optional (a manual entry without a note).
type SuppressionBody struct {
	Reason *string `json:"reason"`
	Note   *string `json:"note"`
}

// SuppressionResource is a suppression as the API shows it.
type SuppressionResource struct {
	Channel        string     `json:"channel"`
	Recipient      string     `json:"recipient"`
	Reason         string     `json:"reason"`
	Note           *string    `json:"note,omitempty"`
	NotificationID *uuid.UUID `json:"notificationId,omitempty"`
	CreatedAt      time.Time  `json:"createdAt"`
	Links          SelfLink   `json:"links"`
}

// SuppressionPage is a page of suppressions. NextCursor is null on the last page.
type SuppressionPage struct {
	Data       []SuppressionResource `json:"data"`
	NextCursor *string               `json:"nextCursor"`
}

func suppressionResource(s store.Suppression) SuppressionResource {
	return SuppressionResource{Channel: s.Channel, Recipient: s.Address, Reason: s.Reason, Note: s.Note,
		NotificationID: s.NotificationID, CreatedAt: s.CreatedAt,
		Links: SelfLink{Self: "/v1/suppressions/" + s.Channel + "/" + url.PathEscape(s.Address)}}
}

// pathSuppression reads {channel} and {recipient} (percent-decoded: an
// E.164 number's '+' may come as is or as %2B), the recipient checked as a
// notification's is on that channel.
func pathSuppression(c *fiber.Ctx) (channel, address string, err error) {
	channel, _ = pathParam(c, "channel")
	if !notification.ValidChannel(channel) {
		return "", "", pathProblem("channel", "must be one of sms, email, push")
	}
	address, ok := pathParam(c, "recipient")
	if !ok {
		return "", "", pathProblem("recipient", "is not a valid percent-encoded path segment")
	}
	if why := addressRefusal(channel, address); why != "" {
		return "", "", pathProblem("recipient", "%s", why)
	}
	return channel, address, nil
}

func reasonRefusal(r string) string {
	if store.ValidSuppressionReason(r) {
		return ""
	}
	return "must be one of " + strings.Join(store.SuppressionReasons, ", ")
}

// putSuppression suppresses the address by the tenant's hand: 201 when new;
// 200 when it was suppressed already (its reason and note become the
// body's, its time and source notification stay).
func (s *Server) putSuppression(c *fiber.Ctx) error {
	channel, address, err := pathSuppression(c)
	if err != nil {
		return err
	}
	var body SuppressionBody
	if len(bytes.TrimSpace(c.Body())) > 0 {
		if err := requireJSON(c); err != nil {
			return err
		}
		if err := decodeStrict(c.Body(), &body); err != nil {
			return err
		}
	}
	ve := &ValidationError{}
	reason := store.SuppressManual
	if body.Reason != nil {
		reason = *body.Reason
		if why := reasonRefusal(reason); why != "" {
			ve.add("reason", "%s", why)
		}
	}
	if n := body.Note; n != nil && (len(*n) > maxNote || !validText(*n)) {
		ve.add("note", "must be valid UTF-8 without NUL, at most %d bytes", maxNote)
	}
	if err := ve.orNil(); err != nil {
		return err
	}
	out, created, err := store.PutSuppression(c.UserContext(), s.pool, tenant(c).ID, channel, address, reason, body.Note)
	if err != nil {
		return err
	}
	res := suppressionResource(out)
	c.Location(res.Links.Self)
	if created {
		return c.Status(fiber.StatusCreated).JSON(res)
	}
	return c.JSON(res)
}

func (s *Server) getSuppression(c *fiber.Ctx) error {
	channel, address, err := pathSuppression(c)
	if err != nil {
		return err
	}
	out, err := store.GetSuppression(c.UserContext(), s.pool, tenant(c).ID, channel, address)
	if err != nil {
		return notFoundAs(err, "the address is not suppressed on "+channel)
	}
	return c.JSON(suppressionResource(out))
}

// deleteSuppression lifts the suppression: the address is sent to again.
func (s *Server) deleteSuppression(c *fiber.Ctx) error {
	channel, address, err := pathSuppression(c)
	if err != nil {
		return err
	}
	if err := store.DeleteSuppression(c.UserContext(), s.pool, tenant(c).ID, channel, address); err != nil {
		return notFoundAs(err, "the address is not suppressed on "+channel)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listSuppressions(c *fiber.Ctx) error {
	p, err := parsePageQuery(c, map[string]func(string) string{
		"channel": func(v string) string {
			if !notification.ValidChannel(v) {
				return "must be one of sms, email, push"
			}
			return ""
		},
		"recipient": func(v string) string {
			if v == "" {
				return "must not be empty"
			}
			return ""
		},
		"reason": reasonRefusal,
	})
	if err != nil {
		return err
	}
	f := store.SuppressionFilter{Limit: p.limit + 1}
	for name, dst := range map[string]**string{"channel": &f.Channel, "recipient": &f.Address, "reason": &f.Reason} {
		if v, ok := p.filters[name]; ok {
			*dst = &v
		}
	}
	if p.after != nil && len(p.after.K) == 2 {
		f.After = &store.SuppressionKeyset{CreatedAt: time.UnixMicro(p.after.T), Channel: p.after.K[0], Address: p.after.K[1]}
	}
	rows, err := store.ListSuppressions(c.UserContext(), s.pool, tenant(c).ID, f)
	if err != nil {
		return err
	}
	resp := SuppressionPage{Data: []SuppressionResource{}}
	for _, r := range rows[:min(p.limit, len(rows))] {
		resp.Data = append(resp.Data, suppressionResource(r))
	}
	if len(rows) > p.limit {
		last := rows[p.limit-1]
		resp.NextCursor = p.next(last.CreatedAt.UnixMicro(), last.Channel, last.Address)
	}
	return c.JSON(resp)
}
