package extensions

import "errors"

// Sentinel errors of the extensions room; match them with errors.Is. The HTTP layer maps them:
// ErrInvalidModule -> 400 invalid_module, ErrExists -> 409 extension_exists, ErrTooLarge -> 413
// module_too_large, ErrNotFound -> 404 extension_not_found, ErrFailed -> 422 extension_failed.
// Every error returned by Host wraps exactly one of them, with a message that says what went wrong.
var (
	// ErrNotFound: no extension of that name (or not of the kind asked for).
	ErrNotFound = errors.New("extension not found")
	// ErrExists: an extension of that name is already registered.
	ErrExists = errors.New("extension already exists")
	// ErrInvalidModule: the upload is not an acceptable module (bad name or kind, not WASM, missing
	// exports, wrong ABI version, forbidden imports, ...).
	ErrInvalidModule = errors.New("invalid extension module")
	// ErrTooLarge: the module is larger than Options.MaxModuleBytes.
	ErrTooLarge = errors.New("extension module too large")
	// ErrFailed: a module trapped, timed out, ran out of memory or broke the ABI during a call.
	ErrFailed = errors.New("extension failed")
	// ErrClosed: the Host was closed.
	ErrClosed = errors.New("extensions host closed")
)
