package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Message is one chat message of a turn. Tokens is the number of tokens the message took in
// the prompt (informational; the exact ids live in Turn). Time is when the message was
// written; a zero Time is replaced by the store's clock on AppendTurn.
type Message struct {
	Role    string    `json:"role"`
	Content string    `json:"content"`
	Time    time.Time `json:"time"`
	Tokens  int       `json:"tokens"`
}

// Turn is one completed exchange, stored atomically: the user (and tool) messages followed by
// the assistant reply, together with the exact token ids of the exchange. The next turn's
// prompt is the concatenation of every stored turn's PromptIDs and OutputIDs followed by the
// new turn's ids; re-tokenizing the sampled text could give other ids and defeat prefix reuse.
type Turn struct {
	// Messages: the user (+tool) messages, then the assistant reply, in order.
	Messages []Message `json:"messages"`
	// PromptIDs: the ids prefilled for this turn beyond the previous turns' ids (for the first
	// turn this includes BOS and the rendered system prompt).
	PromptIDs []int32 `json:"prompt_ids"`
	// OutputIDs: the ids sampled for the assistant reply.
	OutputIDs []int32 `json:"output_ids"`
}

// Session is a stored conversation. Values returned by a Store are copies owned by the caller.
type Session struct {
	// ID is random and unguessable (128 bits from crypto/rand): "s_" + 32 lowercase hex digits.
	ID string `json:"id"`
	// Owner is the tenant (derived from the API key) the session belongs to.
	Owner string `json:"owner"`
	// Created is when the session was created.
	Created time.Time `json:"created"`
	// Updated is the session's last use: Create, Get, Acquire, AppendTurn and SetMetadata
	// set it (List and Delete do not). The session expires Options.TTL after it, and List
	// sorts by it, newest first.
	Updated time.Time `json:"updated"`
	// System is the optional system prompt; it is never trimmed.
	System string `json:"system,omitempty"`
	// Metadata is free-form caller data (never nil in returned values).
	Metadata map[string]string `json:"metadata"`
	// Turns are the completed turns, oldest first; nil when there are none. List leaves it nil.
	Turns []Turn `json:"turns,omitempty"`
}

// Store keeps sessions. Implementations (Memory, Redis) are safe for concurrent use by many
// goroutines, and every method that takes an owner treats another owner's session exactly
// like a missing one (ErrNotFound). Errors wrap the sentinels of this package.
type Store interface {
	// Create makes a new empty session for owner.
	Create(ctx context.Context, owner, system string, metadata map[string]string) (*Session, error)
	// Get returns the session with all its turns and refreshes its TTL.
	Get(ctx context.Context, owner, id string) (*Session, error)
	// List returns owner's live sessions by Updated, newest first, skipping offset and
	// returning at most limit (limit <= 0: all), plus the total number of owner's sessions.
	// Turns are omitted. A negative offset counts as 0.
	List(ctx context.Context, owner string, limit, offset int) ([]*Session, int, error)
	// Delete removes the session, its turns and its busy mark.
	Delete(ctx context.Context, owner, id string) error
	// SetMetadata replaces the session's metadata.
	SetMetadata(ctx context.Context, owner, id string, md map[string]string) error
	// Acquire marks the session busy until release is called or Options.BusyTTL passes,
	// whichever comes first; a session already busy gives ErrBusy. release is idempotent,
	// never blocks for long, and only removes this Acquire's own mark.
	Acquire(ctx context.Context, owner, id string) (release func(), err error)
	// AppendTurn appends t as turn number expectedTurns (0-based) in one atomic write; if the
	// session does not hold exactly expectedTurns turns it writes nothing and returns
	// ErrConflict.
	AppendTurn(ctx context.Context, owner, id string, expectedTurns int, t Turn) error
	// Ping reports whether the store is reachable (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// Options tune a Store. Zero fields take the defaults.
type Options struct {
	// TTL: a session unused for this long is deleted. Default DefaultTTL.
	TTL time.Duration
	// BusyTTL: how long an Acquire mark lasts if never released (a crashed gateway). Default
	// DefaultBusyTTL. Set it above the longest turn the gateway allows.
	BusyTTL time.Duration
	// Now is the clock (default time.Now). The Redis store uses it for Created/Updated and the
	// List order; key expiry itself runs on the Redis server's clock.
	Now func() time.Time
}

// Defaults for Options.
const (
	DefaultTTL     = 24 * time.Hour
	DefaultBusyTTL = 10 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.BusyTTL <= 0 {
		o.BusyTTL = DefaultBusyTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// now returns the clock's time in UTC, truncated to the microsecond (the Redis store keeps
// List scores in microseconds: exact in a float64) and without a monotonic reading, so that
// values compare equal after a round trip through Redis.
func (o Options) now() time.Time { return o.Now().UTC().Truncate(time.Microsecond) }

const idPrefix = "s_"

// newID returns a fresh session id: "s_" + 128 random bits in hex.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("sessions: random id: %w", err)
	}
	return idPrefix + hex.EncodeToString(b[:]), nil
}

// validID reports whether id has the shape newID makes. Stores answer ErrNotFound for any
// other id without looking it up, so an id can never address another key.
func validID(id string) bool {
	if len(id) != len(idPrefix)+32 || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for _, c := range []byte(id[len(idPrefix):]) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// normalizeTurn returns a deep copy of t with times in UTC and zero times set to now.
func normalizeTurn(t Turn, now time.Time) Turn {
	out := Turn{
		Messages:  make([]Message, len(t.Messages)),
		PromptIDs: slices.Clone(t.PromptIDs),
		OutputIDs: slices.Clone(t.OutputIDs),
	}
	for i, m := range t.Messages {
		if m.Time.IsZero() {
			m.Time = now
		} else {
			m.Time = m.Time.UTC().Round(0)
		}
		out.Messages[i] = m
	}
	return out
}

func cloneMetadata(md map[string]string) map[string]string {
	if md == nil {
		return map[string]string{}
	}
	return maps.Clone(md)
}

// clone returns a deep copy of s (Turns included when withTurns).
func (s *Session) clone(withTurns bool) *Session {
	c := *s
	c.Metadata = cloneMetadata(s.Metadata)
	c.Turns = nil
	if withTurns && len(s.Turns) > 0 {
		c.Turns = make([]Turn, len(s.Turns))
		for i, t := range s.Turns {
			c.Turns[i] = Turn{
				Messages:  slices.Clone(t.Messages),
				PromptIDs: slices.Clone(t.PromptIDs),
				OutputIDs: slices.Clone(t.OutputIDs),
			}
		}
	}
	return &c
}
