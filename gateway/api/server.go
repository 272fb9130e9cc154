package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything a Server needs. Engine and Tokenizer are required; Sessions and
// Extensions may be nil (their routes then answer 503 / 404).
type Config struct {
	Engine     Engine
	Tokenizer  Tokenizer
	Sessions   SessionStore
	Extensions Extensions

	// ModelName is the id /v1/models lists and responses carry (default "deepseek_v3").
	ModelName string
	// MaxSeqLen is the model's context length in tokens (prompt + completion).
	MaxSeqLen int

	// APIKeys are the accepted Bearer keys (tenant = key); AdminKey may also manage
	// extensions. With neither set the server runs in open dev mode.
	APIKeys  []string
	AdminKey string

	// CORSOrigins lists allowed browser origins ("*" for any); empty disables CORS.
	CORSOrigins []string
	// MaxBodyBytes limits JSON request bodies (default 4 MiB); larger -> 413.
	MaxBodyBytes int64
	// MaxConcurrent limits generation requests in flight (0 = unlimited); beyond it
	// requests get 503 overloaded with Retry-After.
	MaxConcurrent int
	// Static serves "/" (the chat page); nil serves nothing there.
	Static fs.FS
	// ModelHealth, when set, reports a model that can no longer serve (for example a
	// multi-node deployment that lost a node); /readyz then answers 503.
	ModelHealth func() error

	Logger *slog.Logger
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time
}

// Server is the HTTP API. Create it with New; serve Handler(); on shutdown call
// Drain after http.Server.Shutdown's grace period to end the remaining streams.
type Server struct {
	cfg     Config
	e       *echo.Echo
	log     *slog.Logger
	metrics *metrics
	keys    []apiKey
	admin   *apiKey
	openDev bool
	slots   chan struct{} // generation slots when MaxConcurrent > 0

	stopCtx  context.Context // cancelled by Drain: ends every running generation
	stopFunc context.CancelFunc

	mu       sync.Mutex // guards draining and the Add side of wg
	draining bool
	wg       sync.WaitGroup // running generations (Wait in Drain)
}

type apiKey struct {
	sum    [32]byte
	tenant string
}

func hashKey(k string) apiKey {
	sum := sha256.Sum256([]byte(k))
	return apiKey{sum: sum, tenant: "t_" + hex.EncodeToString(sum[:12])}
}

// Tenant returns the tenant id (and prefix-cache salt) of an API key: a hash of the key,
// never the key itself.
func Tenant(key string) string { return hashKey(key).tenant }

// devTenant owns everything in open dev mode.
const devTenant = "dev"

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil || cfg.Tokenizer == nil {
		return nil, errors.New("api: Config.Engine and Config.Tokenizer are required")
	}
	if cfg.MaxSeqLen <= 0 {
		return nil, fmt.Errorf("api: Config.MaxSeqLen must be > 0, got %d", cfg.MaxSeqLen)
	}
	if cfg.ModelName == "" {
		cfg.ModelName = "deepseek_v3"
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 4 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.stopCtx, s.stopFunc = context.WithCancel(context.Background())
	for _, k := range cfg.APIKeys {
		if k = strings.TrimSpace(k); k != "" {
			s.keys = append(s.keys, hashKey(k))
		}
	}
	if cfg.AdminKey != "" {
		a := hashKey(cfg.AdminKey)
		s.admin = &a
	}
	s.openDev = len(s.keys) == 0 && s.admin == nil
	if cfg.MaxConcurrent > 0 {
		s.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	s.metrics = newMetrics(cfg.Engine)

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.requestID, s.observe, s.recoverPanic)
	if len(cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  cfg.CORSOrigins,
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, echo.HeaderXRequestID},
			ExposeHeaders: []string{echo.HeaderXRequestID, HeaderTrimmedTurns, "Retry-After"},
			MaxAge:        600,
		}))
	}
	s.e = e
	s.routes()
	return s, nil
}

// Handler is the HTTP handler serving every route.
func (s *Server) Handler() http.Handler { return s.e }

// OpenDevMode reports whether no keys are configured (every request is accepted).
func (s *Server) OpenDevMode() bool { return s.openDev }

// Registry is the Prometheus registry behind /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Drain ends every generation still running (their streams get a final chunk and
// [DONE]) and waits for their handlers to return or ctx to end. Call it after
// http.Server.Shutdown has given streams their grace period.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.stopFunc()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %w", ctx.Err())
	}
}

func (s *Server) routes() {
	e := s.e
	json := s.bodyLimit(s.cfg.MaxBodyBytes, CodeRequestTooLarge)
	auth := s.authenticate
	admin := s.requireAdmin

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metricsHandler(), auth)

	e.POST("/v1/chat/completions", s.chatCompletions, auth, json)
	e.POST("/v1/completions", s.completions, auth, json)
	e.GET("/v1/models", s.listModels, auth)
	e.GET("/v1/models/:id", s.getModel, auth)
	e.POST("/chat", s.legacyChat, auth, json)

	e.POST("/v1/sessions", s.createSession, auth, json)
	e.GET("/v1/sessions", s.listSessions, auth)
	e.GET("/v1/sessions/:id", s.getSession, auth)
	e.PATCH("/v1/sessions/:id", s.patchSession, auth, json)
	e.DELETE("/v1/sessions/:id", s.deleteSession, auth)

	e.POST("/v1/extensions", s.uploadExtension, auth, admin, s.bodyLimit(s.moduleLimit()+1<<20, CodeModuleTooLarge))
	e.GET("/v1/extensions", s.listExtensions, auth)
	e.GET("/v1/extensions/:name", s.getExtension, auth)
	e.DELETE("/v1/extensions/:name", s.deleteExtension, auth, admin)

	e.GET("/*", s.static)
	e.HEAD("/*", s.static)
}

// HeaderRequestID carries the request id (taken from the client when sane, else new).
const HeaderRequestID = echo.HeaderXRequestID

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}

// requestID sets X-Request-Id and a per-request logger carrying it.
func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(HeaderRequestID)
		if !saneRequestID(id) {
			id = newID("req_")
		}
		c.Response().Header().Set(HeaderRequestID, id)
		c.Set("request_id", id)
		c.Set("logger", s.log.With("request_id", id))
		return next(c)
	}
}

func (s *Server) reqLogger(c echo.Context) *slog.Logger {
	if l, ok := c.Get("logger").(*slog.Logger); ok {
		return l
	}
	return s.log
}

// recoverPanic turns a handler panic (a bug) into a logged 500, never a dead process.
func (s *Server) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic in handler: %v", r)
			}
		}()
		return next(c)
	}
}

// observe logs each request and records its count and latency by route and status.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // write the error now so that the status below is the final one
		}
		route := c.Path()
		if route == "" || route == "/*" {
			route = "static"
		}
		status := c.Response().Status
		d := time.Since(start)
		s.metrics.observeRequest(route, c.Request().Method, status, d)
		s.reqLogger(c).Info("http request", "method", c.Request().Method, "route", route,
			"path", c.Request().URL.Path, "status", status, "duration_ms", float64(d.Microseconds())/1000,
			"bytes_out", c.Response().Size, "tenant", c.Get("tenant"))
		return nil
	}
}

// bodyLimit rejects bodies over limit with 413 and the given code.
func (s *Server) bodyLimit(limit int64, code string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.ContentLength > limit {
				return newError(http.StatusRequestEntityTooLarge, code, fmt.Sprintf("request body larger than %d bytes", limit))
			}
			req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
			return next(c)
		}
	}
}

// authenticate resolves the Bearer key to a tenant (constant-time comparison of key
// hashes against every configured key). In open dev mode every request is the dev tenant.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.openDev {
			c.Set("tenant", devTenant)
			c.Set("admin", true)
			return next(c)
		}
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, key, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
			return newError(http.StatusUnauthorized, CodeInvalidAPIKey, "missing API key: send Authorization: Bearer KEY")
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
		var match *apiKey
		for i := range s.keys {
			if subtle.ConstantTimeCompare(sum[:], s.keys[i].sum[:]) == 1 {
				match = &s.keys[i]
			}
		}
		isAdmin := false
		if s.admin != nil && subtle.ConstantTimeCompare(sum[:], s.admin.sum[:]) == 1 {
			match, isAdmin = s.admin, true
		}
		if match == nil {
			return newError(http.StatusUnauthorized, CodeInvalidAPIKey, "invalid API key")
		}
		c.Set("tenant", match.tenant)
		c.Set("admin", isAdmin)
		return next(c)
	}
}

func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if ok, _ := c.Get("admin").(bool); !ok {
			return newError(http.StatusForbidden, CodePermissionDenied, "this route needs the admin key (GATEWAY_ADMIN_KEY)")
		}
		return next(c)
	}
}

func tenantOf(c echo.Context) string {
	t, _ := c.Get("tenant").(string)
	return t
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports whether the model can serve and the session store is reachable.
func (s *Server) readyz(c echo.Context) error {
	checks := map[string]string{"model": "ok"}
	ready := true
	if s.cfg.ModelHealth != nil {
		if err := s.cfg.ModelHealth(); err != nil {
			checks["model"] = "failed: " + err.Error()
			ready = false
		}
	}
	if s.cfg.Sessions != nil {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Sessions.Ping(ctx); err != nil {
			checks["sessions"] = "unavailable: " + err.Error()
			ready = false
		} else {
			checks["sessions"] = "ok"
		}
	}
	if s.stopCtx.Err() != nil {
		checks["server"] = "draining"
		ready = false
	}
	status, code := http.StatusOK, "ready"
	if !ready {
		status, code = http.StatusServiceUnavailable, "not_ready"
	}
	return c.JSON(status, map[string]any{"status": code, "checks": checks})
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) model() modelObject {
	return modelObject{ID: s.cfg.ModelName, Object: "model", Created: 1735084800, OwnedBy: "dsgate"}
}

func (s *Server) listModels(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": []modelObject{s.model()}})
}

func (s *Server) getModel(c echo.Context) error {
	if c.Param("id") != s.cfg.ModelName {
		return newError(http.StatusNotFound, CodeModelNotFound, fmt.Sprintf("model %q not found; this server serves %q", c.Param("id"), s.cfg.ModelName))
	}
	return c.JSON(http.StatusOK, s.model())
}

// static serves the chat page and its assets; API-looking paths get a JSON 404.
func (s *Server) static(c echo.Context) error {
	p := c.Request().URL.Path
	if s.cfg.Static == nil || strings.HasPrefix(p, "/v1/") || p == "/v1" {
		return echo.ErrNotFound
	}
	name := strings.TrimPrefix(p, "/")
	if name == "" {
		name = "index.html"
	}
	f, err := s.cfg.Static.Open(name)
	if err != nil {
		return echo.ErrNotFound
	}
	st, err := f.Stat()
	_ = f.Close()
	if err != nil || st.IsDir() {
		return echo.ErrNotFound
	}
	return echo.StaticFileHandler(name, s.cfg.Static)(c)
}
