package sessions

import "errors"

// Sentinel errors returned (wrapped with context) by every Store. Match them with errors.Is.
var (
	// ErrNotFound: no such session, it expired, or it belongs to another owner. The HTTP layer
	// maps it to 404 session_not_found; an owner can never tell another owner's session from a
	// missing one.
	ErrNotFound = errors.New("session not found")
	// ErrBusy: Acquire found the session marked busy by another turn (409 session_busy).
	ErrBusy = errors.New("session busy")
	// ErrConflict: AppendTurn's expectedTurns did not match the stored number of turns, so another
	// writer committed a turn first; nothing was written.
	ErrConflict = errors.New("session turn conflict")
	// ErrUnavailable: the backing store could not be reached or failed (503
	// session_store_unavailable). The Redis store reconnects by itself; retrying later may succeed.
	ErrUnavailable = errors.New("session store unavailable")
)
