// Package adapt connects dsgate's rooms (core/engine, core/tokenizer, sessions,
// extensions) to the small interfaces of package api: it converts their types to the
// API's and wraps their sentinel errors with the API's (so that errors.Is maps them to
// stable HTTP codes). It holds no state of its own.
package adapt
