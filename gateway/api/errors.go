package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Sentinel errors the ports (Engine, SessionStore, Extensions) wrap so that the one error
// handler can map them to stable HTTP statuses and codes with errors.Is.
var (
	ErrOverloaded              = errors.New("server overloaded")
	ErrContextLength           = errors.New("prompt too long for the model's context")
	ErrInvalidRequest          = errors.New("invalid request")
	ErrSessionNotFound         = errors.New("session not found")
	ErrSessionBusy             = errors.New("session busy")
	ErrSessionConflict         = errors.New("session changed concurrently")
	ErrSessionStoreUnavailable = errors.New("session store unavailable")
	ErrExtensionNotFound       = errors.New("extension not found")
	ErrExtensionExists         = errors.New("extension exists")
	ErrInvalidModule           = errors.New("invalid module")
	ErrModuleTooLarge          = errors.New("module too large")
	ErrExtensionFailed         = errors.New("extension failed")
)

// Stable error codes (the "code" field of every error body). The package doc lists them
// with their statuses.
const (
	CodeInvalidRequest          = "invalid_request"
	CodeInvalidAPIKey           = "invalid_api_key"
	CodePermissionDenied        = "permission_denied"
	CodeNotFound                = "not_found"
	CodeMethodNotAllowed        = "method_not_allowed"
	CodeModelNotFound           = "model_not_found"
	CodeSessionNotFound         = "session_not_found"
	CodeSessionBusy             = "session_busy"
	CodeSessionConflict         = "session_conflict"
	CodeSessionStoreUnavailable = "session_store_unavailable"
	CodeExtensionNotFound       = "extension_not_found"
	CodeExtensionExists         = "extension_exists"
	CodeInvalidModule           = "invalid_module"
	CodeModuleTooLarge          = "module_too_large"
	CodeExtensionFailed         = "extension_failed"
	CodeRequestTooLarge         = "request_too_large"
	CodeContextLengthExceeded   = "context_length_exceeded"
	CodeOverloaded              = "overloaded"
	CodeUnsupportedMediaType    = "unsupported_media_type"
	CodeNotReady                = "not_ready"
	CodeEngineError             = "engine_error"
	CodeInternal                = "internal_error"
)

// Error is an error with its HTTP status and OpenAI-shaped body. Handlers return it (or
// errors wrapping the sentinels above); the error handler writes it.
type Error struct {
	Status     int    // HTTP status
	Type       string // OpenAI error type, e.g. "invalid_request_error"
	Code       string // stable code, e.g. "session_busy"
	Message    string // for humans
	Param      string // the offending request field, if any
	RetryAfter int    // seconds; sets Retry-After when > 0
	Err        error  // cause, for logs and errors.Is
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// errorBody is the wire shape {"error":{"message","type","code","param"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Code    string  `json:"code"`
	Param   *string `json:"param"`
}

func (e *Error) body() errorBody {
	d := errorDetail{Message: e.Message, Type: e.Type, Code: e.Code}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	return errorBody{Error: d}
}

func typeFor(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusConflict:
		return "conflict_error"
	case status == http.StatusServiceUnavailable:
		return "service_unavailable_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Type: typeFor(status), Code: code, Message: msg}
}

// invalid returns a 400 invalid_request naming the offending parameter.
func invalid(param, format string, args ...any) *Error {
	e := newError(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf(format, args...))
	e.Param = param
	return e
}

func overloaded(msg string) *Error {
	e := newError(http.StatusServiceUnavailable, CodeOverloaded, msg)
	e.RetryAfter = 1
	return e
}

// toError maps any error a handler returns to an *Error. It is the single place where
// statuses and codes are decided.
func toError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	wrap := func(status int, code, msg string) *Error {
		e := newError(status, code, msg)
		e.Err = err
		return e
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return wrap(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
	}
	switch {
	case errors.Is(err, ErrOverloaded):
		e := wrap(http.StatusServiceUnavailable, CodeOverloaded, "the server is overloaded; retry later")
		e.RetryAfter = 1
		return e
	case errors.Is(err, ErrContextLength):
		return wrap(http.StatusBadRequest, CodeContextLengthExceeded, err.Error())
	case errors.Is(err, ErrInvalidRequest):
		return wrap(http.StatusBadRequest, CodeInvalidRequest, err.Error())
	case errors.Is(err, ErrSessionNotFound):
		return wrap(http.StatusNotFound, CodeSessionNotFound, "session not found")
	case errors.Is(err, ErrSessionBusy):
		return wrap(http.StatusConflict, CodeSessionBusy, "the session is answering another request; retry when it is done")
	case errors.Is(err, ErrSessionConflict):
		return wrap(http.StatusConflict, CodeSessionConflict, "the session changed while this turn ran; the turn was not stored")
	case errors.Is(err, ErrSessionStoreUnavailable):
		e := wrap(http.StatusServiceUnavailable, CodeSessionStoreUnavailable, "the session store is unavailable; requests without session_id still work")
		e.RetryAfter = 1
		return e
	case errors.Is(err, ErrExtensionNotFound):
		return wrap(http.StatusNotFound, CodeExtensionNotFound, err.Error())
	case errors.Is(err, ErrExtensionExists):
		return wrap(http.StatusConflict, CodeExtensionExists, err.Error())
	case errors.Is(err, ErrInvalidModule):
		return wrap(http.StatusBadRequest, CodeInvalidModule, err.Error())
	case errors.Is(err, ErrModuleTooLarge):
		return wrap(http.StatusRequestEntityTooLarge, CodeModuleTooLarge, err.Error())
	case errors.Is(err, ErrExtensionFailed):
		return wrap(http.StatusUnprocessableEntity, CodeExtensionFailed, err.Error())
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		switch he.Code {
		case http.StatusNotFound:
			return wrap(he.Code, CodeNotFound, "no such route")
		case http.StatusMethodNotAllowed:
			return wrap(he.Code, CodeMethodNotAllowed, "method not allowed on this route")
		case http.StatusRequestEntityTooLarge:
			return wrap(he.Code, CodeRequestTooLarge, msg)
		case http.StatusUnauthorized:
			return wrap(he.Code, CodeInvalidAPIKey, msg)
		case http.StatusUnsupportedMediaType:
			return wrap(he.Code, CodeUnsupportedMediaType, msg)
		}
		if he.Code >= 400 && he.Code < 500 {
			return wrap(he.Code, CodeInvalidRequest, msg)
		}
	}
	return wrap(http.StatusInternalServerError, CodeInternal, "internal server error")
}

// handleError is the echo HTTPErrorHandler: one mapping for every route, aware of
// streams (once an SSE response has started it sends an error event and [DONE], never a
// second body).
func (s *Server) handleError(err error, c echo.Context) {
	if err == nil {
		return
	}
	ae := toError(err)
	req := c.Request()
	log := s.reqLogger(c)
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		log.Debug("request cancelled by client", "err", err)
		return
	}
	level := slog.LevelDebug
	if ae.Status >= 500 {
		level = slog.LevelError
	}
	log.Log(req.Context(), level, "request failed", "status", ae.Status, "code", ae.Code, "err", err)
	res := c.Response()
	if res.Committed {
		if strings.HasPrefix(res.Header().Get(echo.HeaderContentType), "text/event-stream") {
			_ = writeSSE(c, ae.body())
			_ = writeSSEDone(c)
		}
		return
	}
	if ae.RetryAfter > 0 {
		res.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if req.Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	_ = c.JSON(ae.Status, ae.body())
}
