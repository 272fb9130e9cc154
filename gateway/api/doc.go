// Package api is dsgate's HTTP layer: an OpenAI-compatible API on echo v4 that composes
// the engine, the tokenizer, the session store and the WASM extension host, each seen
// through a small interface of this package (Engine, Tokenizer, SessionStore,
// Extensions), so that the rooms never know HTTP and this package is tested with fakes.
//
// # Routes
//
//	POST   /v1/chat/completions   chat (JSON or SSE), session_id, extensions
//	POST   /v1/completions        raw prompt text (JSON or SSE)
//	GET    /v1/models             the one served model (Config.ModelName)
//	POST   /chat                  {"prompt": ...}: the original project's endpoint
//	POST   /v1/sessions           create {system, metadata} -> 201
//	GET    /v1/sessions           list, most recently used first (?limit=&offset=)
//	GET    /v1/sessions/{id}      one session with its messages
//	PATCH  /v1/sessions/{id}      merge metadata; {"title": ...} renames
//	DELETE /v1/sessions/{id}
//	POST   /v1/extensions         admin: multipart name, kind (template|sampler), module
//	GET    /v1/extensions[/{name}]
//	DELETE /v1/extensions/{name}  admin
//	GET    /healthz /readyz /metrics, GET / (the chat page)
//
// Every route except /healthz, /readyz and the page needs "Authorization: Bearer KEY".
// The tenant of a key is a hash of it (Tenant); it owns sessions and salts the engine's
// prefix cache. With no keys configured the server is in open dev mode (tenant "dev").
//
// # Errors
//
// Handlers return errors; one echo HTTPErrorHandler maps them (errors.As / errors.Is on
// the sentinels of errors.go) to {"error":{"message","type","code","param"}}. Once an
// SSE stream has started, an error is sent as one "data: {"error":...}" event followed by
// "data: [DONE]". Statuses and stable codes:
//
//	400 invalid_request            malformed JSON, wrong field types, empty messages, bad roles, bad ranges
//	400 context_length_exceeded    prompt + max_tokens beyond the model's context
//	400 invalid_module             upload is not a valid module for the ABI
//	401 invalid_api_key            missing or unknown Bearer key
//	403 permission_denied          admin route without the admin key
//	404 not_found                  no such route
//	404 model_not_found            "model" names another model
//	404 session_not_found          unknown session, or another tenant's
//	404 extension_not_found        unknown extension name
//	405 method_not_allowed
//	409 session_busy               the session is answering another request
//	409 session_conflict           the session changed while the turn ran (turn not stored)
//	409 extension_exists           an extension of that name exists
//	413 request_too_large          body over the limit (Config.MaxBodyBytes)
//	413 module_too_large           module over the host's limit
//	415 unsupported_media_type     a JSON route got another Content-Type
//	422 extension_failed           a module trapped, timed out or broke the ABI
//	500 engine_error               the engine failed a request
//	500 internal_error             a bug (logged with the request id)
//	503 overloaded                 too many concurrent requests, engine queue full, or shutting down (Retry-After)
//	503 session_store_unavailable  the session store is down; requests without session_id still work
//
// # Observability
//
// Every response carries X-Request-Id (the client's when it sent a sane one), which is also
// on every log line of the request. Non-streaming generations carry
// "Server-Timing: engine;dur=MS, gateway;dur=MS"; /metrics has request counts and latency
// by route, method and status code, TTFT and TPOT histograms, the gateway's overhead
// (dsgate_gateway_overhead_seconds: request time minus the engine's time from Submit to the
// final event), token counters, and the engine's Stats as gauges and counters.
//
// # Sessions
//
// With session_id the request's messages hold only the new turn. The prompt is the
// exact token ids of the stored turns followed by the new turn's ids (the template
// rendering of the whole conversation minus that of the history), so a turn reuses the
// engine's prefix cache. When history plus the completion budget exceed the context, the
// oldest turns are left out (the system prompt stays); the number left out is in the
// X-Session-Trimmed-Turns header and in the response's session.trimmed_turns. The
// session is held busy while the turn runs (409 session_busy to a second request); the
// turn is appended only after the reply completed.
package api
