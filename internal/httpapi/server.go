// Package httpapi is the REST API: Fiber routes, request validation, the
// notification resource, RFC 9457 problem answers, health probes and metrics.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"dispatch-engine/internal/health"
	"dispatch-engine/internal/metrics"
	"dispatch-engine/internal/notification"
	"dispatch-engine/internal/store"
)

// Config configures a Server.
type Config struct {
	// TemporalUIURL and TemporalNamespace build each notification's link to
	// its workflow in the Temporal Web UI.
	TemporalUIURL     string
	TemporalNamespace string
	// BodyLimit bounds a request body in bytes. Default 4 MiB.
	BodyLimit int
	// ReadyTimeout bounds each readiness check. Default 2s.
	ReadyTimeout time.Duration
}

// Server is the API.
type Server struct {
	cfg     Config
	pool    *pgxpool.Pool
	metrics *metrics.API
	log     *zap.Logger
	app     *fiber.App
}

// New builds the API; checks are the dependencies /readyz probes.
func New(cfg Config, pool *pgxpool.Pool, checks map[string]health.Check, m *metrics.API, log *zap.Logger) *Server {
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = 4 << 20
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	s := &Server{cfg: cfg, pool: pool, metrics: m, log: log}
	s.app = fiber.New(fiber.Config{
		AppName:               "dispatch-engine",
		BodyLimit:             cfg.BodyLimit,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           60 * time.Second,
		ErrorHandler:          s.errorHandler,
		DisableStartupMessage: true,
	})
	s.app.Use(recover.New())
	s.app.Use(s.requestID, s.observe)

	s.app.Get("/livez", adaptor.HTTPHandler(health.Live()))
	s.app.Get("/readyz", adaptor.HTTPHandler(health.Ready(checks, cfg.ReadyTimeout)))
	s.app.Get("/metrics", adaptor.HTTPHandler(metrics.Handler(m.Registry)))

	v1 := s.app.Group("/v1")
	v1.Post("/notifications", s.createNotification)
	v1.Get("/notifications/:id", s.getNotification)
	s.app.Use(func(c *fiber.Ctx) error {
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "no route "+c.Method()+" "+c.Path())
	})
	return s
}

// App is the Fiber app, for tests (app.Test) and for serving.
func (s *Server) App() *fiber.App { return s.app }

// Listen serves on addr until Shutdown.
func (s *Server) Listen(addr string) error { return s.app.Listen(addr) }

// Shutdown stops accepting connections and waits for in-flight requests,
// up to the context's deadline.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

// Resource is the notification as the API shows it.
type Resource struct {
	ID             string          `json:"id"`
	Status         string          `json:"status"`
	Channel        string          `json:"channel"`
	Priority       string          `json:"priority"`
	Recipient      string          `json:"recipient"`
	Subject        *string         `json:"subject,omitempty"`
	Content        string          `json:"content"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
	IdempotencyKey *string         `json:"idempotencyKey,omitempty"`
	BatchID        *string         `json:"batchId,omitempty"`
	Attempts       int             `json:"attempts"`
	LastError      *string         `json:"lastError,omitempty"`
	FailureReason  *string         `json:"failureReason,omitempty"`
	NextAttemptAt  *time.Time      `json:"nextAttemptAt,omitempty"`
	ScheduledAt    *time.Time      `json:"scheduledAt,omitempty"`
	ExpiresAt      *time.Time      `json:"expiresAt,omitempty"`
	CreatedAt      time.Time       `json:"createdAt"`
	UpdatedAt      time.Time       `json:"updatedAt"`
	DeliveredAt    *time.Time      `json:"deliveredAt,omitempty"`
	WorkflowID     string          `json:"workflowId"`
	Links          Links           `json:"links"`
}

// Links point at the notification's related pages.
type Links struct {
	Self     string `json:"self"`
	Attempts string `json:"attempts"`
	// Temporal is the workflow's page in the Temporal Web UI.
	Temporal string `json:"temporal"`
}

func (s *Server) resource(n store.Notification) Resource {
	id := n.ID.String()
	wfID := notification.WorkflowID(id)
	r := Resource{
		ID: id, Status: string(n.Status), Channel: n.Channel, Priority: n.Priority, Recipient: n.Recipient,
		Subject: n.Subject, Content: n.Content, Metadata: n.Metadata, IdempotencyKey: n.IdempotencyKey,
		Attempts: n.Attempts, LastError: n.LastError, FailureReason: n.FailureReason,
		NextAttemptAt: n.NextAttemptAt, ScheduledAt: n.ScheduledAt, ExpiresAt: n.ExpiresAt,
		CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt, DeliveredAt: n.DeliveredAt,
		WorkflowID: wfID,
		Links: Links{
			Self:     "/v1/notifications/" + id,
			Attempts: "/v1/notifications/" + id + "/attempts",
			Temporal: s.cfg.TemporalUIURL + "/namespaces/" + url.PathEscape(s.cfg.TemporalNamespace) + "/workflows/" + url.PathEscape(wfID),
		},
	}
	if n.BatchID != nil {
		b := n.BatchID.String()
		r.BatchID = &b
	}
	return r
}

func (s *Server) createNotification(c *fiber.Ctx) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	var req CreateRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	nn, verr := req.validate("", time.Now())
	if verr != nil {
		return verr
	}
	n, err := store.CreateNotification(c.UserContext(), s.pool, nn)
	if errors.Is(err, store.ErrConflict) {
		return newProblem(fiber.StatusConflict, typeConflict, "Conflict", "a notification with this idempotencyKey exists")
	}
	if err != nil {
		return err
	}
	s.metrics.Accepted.WithLabelValues(n.Channel, n.Priority).Inc()
	c.Location("/v1/notifications/" + n.ID.String())
	return c.Status(fiber.StatusAccepted).JSON(s.resource(n))
}

func (s *Server) getNotification(c *fiber.Ctx) error {
	id, err := uuid.Parse(c.Params("id"))
	if err != nil {
		ve := &ValidationError{}
		ve.add("id", "must be a UUID")
		return newProblemFromValidation(fiber.StatusBadRequest, ve)
	}
	n, err := store.GetNotification(c.UserContext(), s.pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "no notification "+id.String())
	}
	if err != nil {
		return err
	}
	return c.JSON(s.resource(n))
}

func newProblemFromValidation(status int, ve *ValidationError) error {
	p := newProblem(status, typeValidation, "Invalid request", ve.Error())
	p.Errors = ve.Fields
	return p
}

func requireJSON(c *fiber.Ctx) error {
	ct := string(c.Request().Header.ContentType())
	if ct == "" || c.Is("json") {
		return nil
	}
	return newProblem(fiber.StatusUnsupportedMediaType, typeUnsupported, "Unsupported media type", "send the body as application/json")
}

func (s *Server) requestID(c *fiber.Ctx) error {
	id := c.Get("X-Request-Id")
	if id == "" || len(id) > 128 {
		id = uuid.NewString()
	}
	c.Locals("request_id", id)
	c.Set("X-Request-Id", id)
	return c.Next()
}

// observe records request count and duration by route template.
func (s *Server) observe(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	if err != nil {
		if herr := s.app.Config().ErrorHandler(c, err); herr != nil {
			_ = c.SendStatus(fiber.StatusInternalServerError)
		}
	}
	route := c.Route().Path
	if route == "/" || route == "" {
		route = "unmatched"
	}
	code := c.Response().StatusCode()
	s.metrics.HTTPRequests.WithLabelValues(route, c.Method(), strconv.Itoa(code)).Inc()
	s.metrics.HTTPDuration.WithLabelValues(route, c.Method()).Observe(time.Since(start).Seconds())
	return nil
}

func requestFields(c *fiber.Ctx, err error) []zap.Field {
	rid, _ := c.Locals("request_id").(string)
	return []zap.Field{zap.String("request_id", rid), zap.String("method", c.Method()), zap.String("path", c.Path()), zap.Error(err)}
}
