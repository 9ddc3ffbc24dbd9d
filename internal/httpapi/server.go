// Package httpapi is the REST API: Fiber routes, API-key authentication
// and the tenant each key belongs to, admission to the database (a bounded
// number of requests at once, 503 past it), tenants' acceptance quotas,
// request validation and idempotency, the notification, batch and
// operation resources, cancels and retries, the dead-letter queues, the
// providers and their breakers, providers' receipts, RFC 9457 problem
// answers, health probes and metrics, and each request's trace span
// (tracing.go). openapi.yaml is its contract, and the package's tests hold
// every answer to it.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/health"
	"github.com/dispatch-engine/dispatch-engine/internal/metrics"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/quota"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	tmpl "github.com/dispatch-engine/dispatch-engine/internal/template"
	"github.com/dispatch-engine/dispatch-engine/internal/unsubscribe"
)

// Config configures a Server.
type Config struct {
	// Accepted, when set, is called after notifications were committed (the
	// outbox relay's wake-up).
	Accepted func()
	// APIKeys are the keys accepted on /v1/*. With none, every /v1/* request
	// is refused (cmd/api refuses to start instead).
	APIKeys []string
	// TemporalUIURL and TemporalNamespace build each notification's link to
	// its workflow in the Temporal Web UI.
	TemporalUIURL     string
	TemporalNamespace string
	// BodyLimit bounds the body of a request other than a batch, in bytes.
	// Default 2 MiB: the largest valid notification (256 KiB of email
	// content, even fully \u-escaped) fits.
	BodyLimit int
	// BatchBodyLimit bounds the body of POST /v1/notifications/batch, in
	// bytes. Default 16 MiB: 1,000 sms or push notifications of the largest
	// size fit; batches of large emails must be split.
	BatchBodyLimit int
	// ReadyTimeout bounds each readiness check. Default 2s.
	ReadyTimeout time.Duration
	// SignalTimeout bounds sending the cancel signal to a workflow. Default 5s.
	SignalTimeout time.Duration
	// MaxInFlight bounds the /v1 requests working on the database at once;
	// set it to the pool's size, so the pool never queues. Default 20.
	MaxInFlight int
	// AdmitWait is how long a request waits for its turn when MaxInFlight
	// are working before it is refused with 503 and Retry-After, instead of
	// queueing without bound. Default 2s.
	AdmitWait time.Duration
	// RequestTimeout bounds each /v1 request's work (a database that stopped
	// answering yields 503, not a hung request). Default 10s.
	RequestTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers; larger requests
	// are refused with 431. Default 16 KiB.
	MaxHeaderBytes int
	// ReadTimeout bounds reading one request, so a slow client cannot hold
	// a connection. Default 10s.
	ReadTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no request. Default 60s.
	IdleTimeout time.Duration
	// Providers are the providers (GET /v1/providers, and who may send
	// receipts); Breakers their breakers, nil without a providers file.
	Providers *provider.Set
	Breakers  *breaker.Breakers
	// ReceiptsBaseURL is the API's public base URL, the one providers were
	// given (Twilio signs the full URL it calls).
	ReceiptsBaseURL string
	// Operations starts the workflow of a stored operation; nil refuses
	// POST /v1/operations with 503. A start that fails is left to the
	// worker, which starts the workflows of idle RUNNING operations.
	Operations OperationStarter
	// Quotas enforces tenants' acceptance quotas; nil enforces none.
	Quotas *quota.Quota
	// DeadLetters lists the dead-letter queues and purges their poison
	// messages (/v1/dead-letters); without it those routes answer 503.
	DeadLetters DeadLetterQueues
	// Unsubscribe opens the tokens of one-click unsubscribe links, served
	// at /u/{token} without an API key (unsubscribe.go); nil: those paths
	// answer 404.
	Unsubscribe *unsubscribe.Signer
}

// OperationStarter starts an operation's workflow.
type OperationStarter func(ctx context.Context, id uuid.UUID, summary string) error

// Signaler sends a signal to a Temporal workflow; a client.Client is one.
type Signaler interface {
	SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error
}

// Server is the API.
type Server struct {
	cfg      Config
	pool     *pgxpool.Pool
	signaler Signaler
	keys     apiKeys
	tenants  tenantCache
	metrics  *metrics.API
	log      *zap.Logger
	app      *fiber.App
	routes   routeTable
	render   *tmpl.Engine // notification templates (templates.go)
	// slots holds a token per /v1 request working on the database.
	slots chan struct{}
}

// New builds the API. signaler delivers cancel signals to workflows; deps
// are the dependencies /readyz probes (ready while the required ones are up).
func New(cfg Config, pool *pgxpool.Pool, signaler Signaler, deps []health.Dependency, m *metrics.API, log *zap.Logger) *Server {
	orDefault(&cfg.BodyLimit, 2<<20)
	orDefault(&cfg.BatchBodyLimit, 16<<20)
	orDefault(&cfg.ReadyTimeout, 2*time.Second)
	orDefault(&cfg.SignalTimeout, 5*time.Second)
	orDefault(&cfg.MaxInFlight, 20)
	orDefault(&cfg.AdmitWait, 2*time.Second)
	orDefault(&cfg.RequestTimeout, 10*time.Second)
	orDefault(&cfg.MaxHeaderBytes, 16<<10)
	orDefault(&cfg.ReadTimeout, 10*time.Second)
	orDefault(&cfg.IdleTimeout, 60*time.Second)
	if cfg.Providers == nil { // no providers file: the default webhook provider alone
		cfg.Providers, _ = provider.NewSet(nil, provider.Defaults{})
	}
	s := &Server{cfg: cfg, pool: pool, signaler: signaler, keys: newAPIKeys(cfg.APIKeys), metrics: m, log: log,
		slots: make(chan struct{}, cfg.MaxInFlight), render: tmpl.New(tmpl.Limits{})}
	s.app = fiber.New(fiber.Config{
		AppName: "dispatch-engine",
		// The largest any request may send; each request's own limit is set
		// from its headers before its body is read (bodyLimit).
		BodyLimit: max(cfg.BodyLimit, cfg.BatchBodyLimit),
		// The read buffer bounds the request line and headers (431 beyond).
		ReadBufferSize: cfg.MaxHeaderBytes,
		// A client that sends its request slowly, or idles on a kept-alive
		// connection, is cut off rather than holding a connection.
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           cfg.IdleTimeout,
		ErrorHandler:          s.errorHandler,
		DisableStartupMessage: true,
		// Paths match exactly, as openapi.yaml writes them.
		CaseSensitive: true,
		StrictRouting: true,
	})
	// Authenticate and apply the route's limit before the body is read: a
	// body over it is refused (413, or 401 without an accepted key) from its
	// Content-Length, or once the limit is read, never buffered whole.
	s.app.Server().HeaderReceived = func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		return fasthttp.RequestConfig{MaxRequestBodySize: s.bodyLimit(h)}
	}
	s.app.Use(s.requestID, s.observe, s.recoverPanic)

	s.app.Get("/livez", adaptor.HTTPHandler(health.Live()))
	s.app.Get("/readyz", adaptor.HTTPHandler(detached(health.Ready(deps, cfg.ReadyTimeout, health.Reporter(m.DependencyUp, log)))))
	s.app.Get("/metrics", s.metricsPage(m)) // tenant-labelled series for the operator only (visibility.go)

	// Before the routes: GET /v1/notifications/batch must answer 405, not
	// reach GET /v1/notifications/:id. Before authentication too: which
	// methods a path serves is public (openapi.yaml), and a wrong one is a
	// 405 with or without a key (a receipt's path takes none).
	s.app.Use(s.allowMethods)
	// Providers authenticate their receipts by their own scheme, not an API
	// key: this route comes before the group's authentication.
	s.app.Post("/v1/receipts/:provider", s.admit, s.receipt)
	s.unsubscribeRoutes() // keyless too: the link's sealed token is the authority
	v1 := s.app.Group("/v1", s.authenticate, s.admit, s.rateLimitHeaders)
	v1.Get("/notifications", s.listNotifications)
	v1.Post("/notifications", s.createNotification)
	v1.Post("/notifications/batch", s.createBatch)
	v1.Get("/notifications/:id", s.getNotification)
	v1.Get("/notifications/:id/attempts", s.listAttempts)
	v1.Post("/notifications/:id/cancel", s.cancelNotification)
	v1.Post("/notifications/:id/retry", s.retryNotification)
	v1.Get("/operations", s.listOperations)
	v1.Post("/operations", s.createOperation)
	v1.Get("/operations/:id", s.getOperation)
	v1.Post("/operations/:id/cancel", s.cancelOperation)
	v1.Get("/batches/:batchId", s.getBatch)
	v1.Get("/providers", s.listProviders)
	v1.Get("/dead-letters/:channel", s.listDeadLetters)
	v1.Post("/dead-letters/:channel/purge", s.purgeDeadLetters)
	s.recipientRoutes(v1)
	s.templateRoutes(v1)

	s.app.Use(func(c *fiber.Ctx) error {
		return newProblem(fiber.StatusNotFound, typeNotFound, "Not found", "no route "+c.Method()+" "+c.Path())
	})
	s.routes = newRouteTable(s.app.GetRoutes(true))
	return s
}

// receiptBodyLimit bounds a receipt's body. A receipt carries no API key
// (its provider signs it), so it is not held to anonymousBodyLimit; a
// Twilio status callback or a webhook receipt with a long reason is a few
// KiB at most.
const receiptBodyLimit = 64 << 10

// isReceiptPath reports whether path is POST /v1/receipts/{provider}'s.
func isReceiptPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v1/receipts/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// orDefault sets *v to def when it is zero or negative (unset).
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// detached serves next with a request context that never reports done. The
// adaptor's request context is fasthttp's RequestCtx, whose Done races with
// the server's shutdown (a data race inside fasthttp) as soon as a context
// is derived from it; the readiness checks are bounded by their own timeout.
func detached(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithoutCancel(r.Context())))
	})
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
	ID                string          `json:"id"`
	Status            string          `json:"status"`
	Channel           string          `json:"channel"`
	Priority          string          `json:"priority"`
	Recipient         string          `json:"recipient"`
	Subject           *string         `json:"subject,omitempty"`
	Content           string          `json:"content"`
	Metadata          json.RawMessage `json:"metadata,omitempty"`
	IdempotencyKey    *string         `json:"idempotencyKey,omitempty"`
	BatchID           *string         `json:"batchId,omitempty"`
	Attempts          int             `json:"attempts"`
	LastError         *string         `json:"lastError,omitempty"`
	FailureReason     *string         `json:"failureReason,omitempty"`
	NextAttemptAt     *time.Time      `json:"nextAttemptAt,omitempty"`
	ScheduledAt       *time.Time      `json:"scheduledAt,omitempty"`
	ExpiresAt         *time.Time      `json:"expiresAt,omitempty"`
	CreatedAt         time.Time       `json:"createdAt"`
	UpdatedAt         time.Time       `json:"updatedAt"`
	DeliveredAt       *time.Time      `json:"deliveredAt,omitempty"`
	CancelRequestedAt *time.Time      `json:"cancelRequestedAt,omitempty"`
	// Provider is who took the latest attempt; Receipt what that
	// provider's receipt said (delivered, failed, none) where one was awaited.
	Provider *string `json:"provider,omitempty"`
	Receipt  *string `json:"receipt,omitempty"`
	// Retries counts the explicit retries (POST .../retry, a retry
	// operation); each was a new run of the workflow. ErasedAt marks a
	// notification whose recipient and content were erased.
	Retries  int        `json:"retries"`
	ErasedAt *time.Time `json:"erasedAt,omitempty"`
	// RecipientID is the recipient profile the notification names
	// (recipient is then the address it resolved to, "" before an attempt
	// did); Channels the channels it falls back along; Category its
	// category; SkipReason why a SKIPPED one was not sent.
	RecipientID *string  `json:"recipientId,omitempty"`
	Channels    []string `json:"channels,omitempty"`
	Category    *string  `json:"category,omitempty"`
	SkipReason  *string  `json:"skipReason,omitempty"`
	// DeferredBy says why it waits, or waited, past its turn (quiet-hours,
	// throttle, digest, ordering; scheduledAt is then when it goes).
	// OrderingKey and MaxHold order it after the tenant's others with that
	// key; OrderingBroken, only ever true, says it went before the one
	// ahead of it ended, its maxHold spent. DigestKey gathers it into a
	// digest, and Digest is that digest once it is a member.
	DeferredBy     *string    `json:"deferredBy,omitempty"`
	OrderingKey    *string    `json:"orderingKey,omitempty"`
	MaxHold        *string    `json:"maxHold,omitempty"`
	OrderingBroken *bool      `json:"orderingBroken,omitempty"`
	DigestKey      *string    `json:"digestKey,omitempty"`
	Digest         *DigestRef `json:"digest,omitempty"`
	// Template, TemplateVersion and Locale: the template the content was
	// rendered from at acceptance; HTML its rendered HTML part, shown by
	// GET /v1/notifications/{id} only (templates.go).
	Template        *string `json:"template,omitempty"`
	TemplateVersion *int    `json:"templateVersion,omitempty"`
	Locale          *string `json:"locale,omitempty"`
	HTML            *string `json:"html,omitempty"`
	WorkflowID      string  `json:"workflowId"`
	Links           Links   `json:"links"`
}

// DigestRef is the digest a notification is a member of: its id (also
// the id of the notification that carries its message) and how many
// members it has.
type DigestRef struct {
	ID    string `json:"id"`
	Items int    `json:"items"`
}

// Links point at the notification's related pages.
type Links struct {
	Self     string `json:"self"`
	Attempts string `json:"attempts"`
	// Batch is the batch summary, for a notification created in a batch.
	Batch string `json:"batch,omitempty"`
	// Temporal is the workflow's page in the Temporal Web UI.
	Temporal string `json:"temporal"`
}

// view is n as the API shows it. A digest member's digest is read for its
// count of items: one lookup, and only for a member.
func (s *Server) view(ctx context.Context, n store.Notification) (Resource, error) {
	r := s.resource(n)
	if d := digestOf(n); d != nil {
		dg, err := store.GetDigest(ctx, s.pool, *d)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return Resource{}, err
		case dg.TenantID == n.TenantID:
			r.Digest = &DigestRef{ID: dg.ID.String(), Items: dg.Items}
		}
	}
	return r, nil
}

// views is ns as the API shows them, each digest read once.
func (s *Server) views(ctx context.Context, ns []store.Notification) ([]Resource, error) {
	out := make([]Resource, len(ns))
	digests := map[uuid.UUID]*DigestRef{}
	for i, n := range ns {
		d := digestOf(n)
		if d == nil {
			out[i] = s.resource(n)
			continue
		}
		if ref, seen := digests[*d]; seen {
			out[i] = s.resource(n)
			out[i].Digest = ref
			continue
		}
		r, err := s.view(ctx, n)
		if err != nil {
			return nil, err
		}
		out[i], digests[*d] = r, r.Digest
	}
	return out, nil
}

// answer writes n as the API shows it, with status.
func (s *Server) answer(c *fiber.Ctx, status int, n store.Notification) error {
	r, err := s.view(c.UserContext(), n)
	if err != nil {
		return err
	}
	return c.Status(status).JSON(r)
}

// digestOf is the digest n is a member of, nil for none. The digest's own
// message (the notification whose id is the digest's) is not a member.
func digestOf(n store.Notification) *uuid.UUID {
	if n.DigestID == nil || *n.DigestID == n.ID {
		return nil
	}
	return n.DigestID
}

// resource is n as the API shows it, but for its digest (see view).
func (s *Server) resource(n store.Notification) Resource {
	id := n.ID.String()
	wfID := notification.WorkflowID(id)
	r := Resource{
		ID: id, Status: string(n.Status), Channel: string(n.Channel), Priority: string(n.Priority), Recipient: n.Recipient,
		Subject: n.Subject, Content: n.Content, Metadata: n.Metadata, IdempotencyKey: n.IdempotencyKey,
		Attempts: n.Attempts, LastError: n.LastError, FailureReason: n.FailureReason,
		NextAttemptAt: n.NextAttemptAt, ScheduledAt: n.ScheduledAt, ExpiresAt: n.ExpiresAt,
		CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt, DeliveredAt: n.DeliveredAt,
		CancelRequestedAt: n.CancelRequestedAt,
		Provider:          n.Provider,
		Receipt:           n.Receipt,
		Retries:           n.Generation,
		ErasedAt:          n.ErasedAt,
		RecipientID:       n.RecipientID,
		Channels:          n.Channels,
		Category:          n.Category,
		SkipReason:        n.SkipReason,
		DeferredBy:        n.DeferredBy,
		OrderingKey:       n.OrderingKey,
		DigestKey:         n.DigestKey,
		Template:          n.Template,
		TemplateVersion:   n.TemplateVersion,
		Locale:            n.Locale,
		WorkflowID:        wfID,
		Links: Links{
			Self:     "/v1/notifications/" + id,
			Attempts: "/v1/notifications/" + id + "/attempts",
			Temporal: s.cfg.TemporalUIURL + "/namespaces/" + url.PathEscape(s.cfg.TemporalNamespace) + "/workflows/" + url.PathEscape(wfID),
		},
	}
	if n.MaxHoldMS != nil {
		h := shortDuration(time.Duration(*n.MaxHoldMS) * time.Millisecond)
		r.MaxHold = &h
	}
	if n.OrderingBroken != nil && *n.OrderingBroken {
		r.OrderingBroken = n.OrderingBroken
	}
	if n.BatchID != nil {
		b := n.BatchID.String()
		r.BatchID = &b
		r.Links.Batch = "/v1/batches/" + b
	}
	return r
}

// maxRequestID bounds a client's X-Request-Id; a longer or non-printable one
// is replaced, so it can go into logs as is.
const maxRequestID = 128

func (s *Server) requestID(c *fiber.Ctx) error {
	id := strings.Clone(c.Get("X-Request-Id"))
	if !validRequestID(id) {
		id = uuid.NewString()
	}
	c.Locals("request_id", id)
	c.Set("X-Request-Id", id)
	return c.Next()
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
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
	// Fiber's strings point into buffers reused by the next request; a
	// label value outlives this one.
	method := strings.Clone(c.Method())
	code := c.Response().StatusCode()
	elapsed := time.Since(start)
	s.metrics.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	s.metrics.HTTPDuration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	// One access line per request; probes and scrapes only at debug.
	level := zap.InfoLevel
	if route == "/livez" || route == "/readyz" || route == "/metrics" {
		level = zap.DebugLevel
	}
	if ce := s.log.Check(level, "request"); ce != nil {
		fields := append(requestFields(c, nil), zap.String("route", route), zap.Int("status", code), zap.Duration("duration", elapsed))
		if id := c.Params("id"); id != "" {
			fields = append(fields, zap.String("notification_id", strings.Clone(id)))
		}
		ce.Write(fields...)
	}
	return nil
}

// errPanic is a request whose handler panicked; the panic is logged where
// it is recovered.
var errPanic = errors.New("handler panicked")

// recoverPanic turns a panic into a 500 problem, logged with the request id
// and the stack; the client sees nothing of it.
func (s *Server) recoverPanic(c *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving request", append(requestFields(c, errPanic), zap.Any("panic", r), zap.StackSkip("stack", 2))...)
			err = errPanic
		}
	}()
	return c.Next()
}

// logPath is the request's path as the logs show it: the path of an
// unsubscribe link (its token stands for the person's address and works as
// the link) or of a suppression (it names the address) is cut to its
// route's prefix; any other path is shown whole.
func logPath(c *fiber.Ctx) string {
	p := c.Path()
	for _, private := range []string{"/u/", "/v1/suppressions/"} {
		if strings.HasPrefix(p, private) {
			return private + "…"
		}
	}
	return strings.Clone(p)
}

func requestFields(c *fiber.Ctx, err error) []zap.Field {
	rid, _ := c.Locals("request_id").(string)
	fields := []zap.Field{zap.String("request_id", rid), zap.String("method", strings.Clone(c.Method())),
		zap.String("path", logPath(c)), zap.Error(err)}
	if t, ok := c.Locals(tenantLocal).(store.Tenant); ok {
		fields = append(fields, zap.String("tenant", t.Name))
	}
	return fields
}

func (s *Server) accepted() {
	if s.cfg.Accepted != nil {
		s.cfg.Accepted()
	}
}
