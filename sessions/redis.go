package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// keyPrefix starts every key the Redis store writes.
const keyPrefix = "dsgate:"

func sessionKey(id string) string  { return keyPrefix + "sess:" + id }
func turnsKey(id string) string    { return keyPrefix + "sess:" + id + ":turns" }
func busyKey(id string) string     { return keyPrefix + "sess:" + id + ":busy" }
func ownerKey(owner string) string { return keyPrefix + "owner:" + owner }

// releaseTimeout bounds the release of a busy mark (it runs after the request's context may
// have ended).
const releaseTimeout = 2 * time.Second

// Redis is the Store over a Redis server (go-redis v9), shared by every gateway that uses the
// same server. It is safe for concurrent use. The go-redis client keeps a connection pool and
// redials by itself, so a Redis restart needs no new Store: calls fail with ErrUnavailable
// while the server is down and work again once it is back.
type Redis struct {
	opt    Options
	client *redis.Client
}

var _ Store = (*Redis)(nil)

// NewRedis connects to the Redis server at url: redis://[user:password@]host:port[/db] or
// rediss://... for TLS (server certificate verified against the system roots; go-redis query
// parameters such as dial_timeout, read_timeout, max_retries are accepted). It pings the server
// once: an unreachable server gives an error wrapping ErrUnavailable, a malformed URL another
// error. After a Redis outage the client is usable again within about a second of the server's
// return (the go-redis pool's reconnect probe), with no new Store.
func NewRedis(ctx context.Context, url string, opt Options) (*Redis, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("sessions: redis url: %w", err)
	}
	// go-redis dials 5 times, 100 ms apart, before a command fails; while Redis is down that
	// makes every call wait. Two quick tries are enough on a LAN; after PoolSize failed dials
	// the pool fails fast and probes the server once a second until it is back.
	ro.DialerRetries = 2
	ro.DialerRetryTimeout = 50 * time.Millisecond
	r := &Redis{opt: opt.withDefaults(), client: redis.NewClient(ro)}
	if err := r.Ping(ctx); err != nil {
		_ = r.client.Close()
		return nil, err
	}
	return r, nil
}

// fail wraps a Redis error: the caller's own cancellation stays a context error, anything
// else (refused connection, timeout, closed client, server error) wraps ErrUnavailable.
func fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("sessions: %s: %w", op, cerr)
	}
	return fmt.Errorf("sessions: %s: %w: %w", op, ErrUnavailable, err)
}

func notFound(id string) error { return fmt.Errorf("sessions: session %q: %w", id, ErrNotFound) }

// touchArgs are the ARGV[1..5] shared by the touching scripts (see scripts.go).
func (r *Redis) touchArgs(owner, id string, now time.Time) []any {
	return []any{owner, now.UnixNano(), r.opt.TTL.Milliseconds(), id, now.UnixMicro()}
}

func (r *Redis) keys(owner, id string) []string {
	return []string{sessionKey(id), turnsKey(id), ownerKey(owner)}
}

// Create makes a new empty session for owner.
func (r *Redis) Create(ctx context.Context, owner, system string, metadata map[string]string) (*Session, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	md := cloneMetadata(metadata)
	mdJSON, err := json.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("sessions: create: metadata: %w", err)
	}
	now := r.opt.now()
	args := append(r.touchArgs(owner, id, now), system, mdJSON)
	st, err := createScript.Run(ctx, r.client, r.keys(owner, id), args...).Int()
	if err != nil {
		return nil, fail(ctx, "create", err)
	}
	if st != 1 {
		return nil, fmt.Errorf("sessions: create: id collision on %q: %w", id, ErrConflict)
	}
	return &Session{ID: id, Owner: owner, Created: now, Updated: now, System: system, Metadata: md}, nil
}

// Get returns the session with its turns and marks it used.
func (r *Redis) Get(ctx context.Context, owner, id string) (*Session, error) {
	if !validID(id) {
		return nil, notFound(id)
	}
	now := r.opt.now()
	res, err := getScript.Run(ctx, r.client, r.keys(owner, id), r.touchArgs(owner, id, now)...).Slice()
	if err != nil {
		return nil, fail(ctx, "get", err)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("sessions: get %q: empty reply: %w", id, ErrUnavailable)
	}
	if st, _ := res[0].(int64); st != 1 {
		return nil, notFound(id)
	}
	if len(res) != 6 {
		return nil, fmt.Errorf("sessions: get %q: reply of %d items: %w", id, len(res), ErrUnavailable)
	}
	s, err := decodeSession(id, owner, res[1], res[2], res[3], res[4])
	if err != nil {
		return nil, err
	}
	raw, _ := res[5].([]any)
	if len(raw) == 0 {
		return s, nil
	}
	s.Turns = make([]Turn, len(raw))
	for i, v := range raw {
		str, _ := v.(string)
		if s.Turns[i], err = decodeTurn([]byte(str)); err != nil {
			return nil, fmt.Errorf("sessions: get %q: turn %d: %w: %w", id, i, ErrUnavailable, err)
		}
	}
	return s, nil
}

// decodeSession builds a Session (without turns) from the stored hash fields.
func decodeSession(id, owner string, created, updated, system, metadata any) (*Session, error) {
	c, err1 := parseNanos(created)
	u, err2 := parseNanos(updated)
	sys, _ := system.(string)
	mdStr, _ := metadata.(string)
	md := map[string]string{}
	err3 := json.Unmarshal([]byte(mdStr), &md)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("sessions: session %q: corrupt record: %w: %w", id, ErrUnavailable, err)
	}
	if md == nil {
		md = map[string]string{}
	}
	return &Session{ID: id, Owner: owner, Created: c, Updated: u, System: sys, Metadata: md}, nil
}

// parseNanos parses a stored unix-nanosecond time.
func parseNanos(v any) (time.Time, error) {
	s, _ := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", s, err)
	}
	return time.Unix(0, n).UTC(), nil
}

// List returns owner's sessions by Updated, newest first (equal times by id, descending),
// without turns.
func (r *Redis) List(ctx context.Context, owner string, limit, offset int) ([]*Session, int, error) {
	cutoff := r.opt.now().Add(-r.opt.TTL).UnixMicro()
	res, err := listScript.Run(ctx, r.client, []string{ownerKey(owner)},
		cutoff, max(offset, 0), max(limit, 0), keyPrefix+"sess:").Slice()
	if err != nil {
		return nil, 0, fail(ctx, "list", err)
	}
	if len(res) == 0 {
		return nil, 0, fmt.Errorf("sessions: list: empty reply: %w", ErrUnavailable)
	}
	total, _ := res[0].(int64)
	rows := res[1:]
	if len(rows)%5 != 0 {
		return nil, 0, fmt.Errorf("sessions: list: reply of %d items: %w", len(res), ErrUnavailable)
	}
	out := make([]*Session, 0, len(rows)/5)
	for i := 0; i < len(rows); i += 5 {
		id, _ := rows[i].(string)
		s, err := decodeSession(id, owner, rows[i+1], rows[i+2], rows[i+3], rows[i+4])
		if err != nil {
			return nil, 0, err
		}
		out = append(out, s)
	}
	return out, int(total), nil
}

// Delete removes the session, its turns and its busy mark.
func (r *Redis) Delete(ctx context.Context, owner, id string) error {
	if !validID(id) {
		return notFound(id)
	}
	keys := []string{sessionKey(id), turnsKey(id), ownerKey(owner), busyKey(id)}
	st, err := deleteScript.Run(ctx, r.client, keys, owner, id).Int()
	if err != nil {
		return fail(ctx, "delete", err)
	}
	if st != 1 {
		return notFound(id)
	}
	return nil
}

// SetMetadata replaces the session's metadata and marks it used.
func (r *Redis) SetMetadata(ctx context.Context, owner, id string, md map[string]string) error {
	if !validID(id) {
		return notFound(id)
	}
	mdJSON, err := json.Marshal(cloneMetadata(md))
	if err != nil {
		return fmt.Errorf("sessions: set metadata: %w", err)
	}
	args := append(r.touchArgs(owner, id, r.opt.now()), mdJSON)
	st, err := setMetaScript.Run(ctx, r.client, r.keys(owner, id), args...).Int()
	if err != nil {
		return fail(ctx, "set metadata", err)
	}
	if st != 1 {
		return notFound(id)
	}
	return nil
}

// randomToken returns 128 random bits in hex, for busy marks and append nonces.
func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("sessions: random token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Acquire sets the busy key with a random token (SET NX PX BusyTTL) and marks the session
// used. release deletes the key only while it still holds this token, so a release after
// the mark lapsed and another gateway took it leaves the other mark alone. If Redis cannot
// be reached at release time the mark lapses after BusyTTL.
func (r *Redis) Acquire(ctx context.Context, owner, id string) (func(), error) {
	if !validID(id) {
		return nil, notFound(id)
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	keys := append(r.keys(owner, id), busyKey(id))
	args := append(r.touchArgs(owner, id, r.opt.now()), token, r.opt.BusyTTL.Milliseconds())
	st, err := acquireScript.Run(ctx, r.client, keys, args...).Int()
	if err != nil {
		return nil, fail(ctx, "acquire", err)
	}
	switch st {
	case 1:
	case 2:
		return nil, fmt.Errorf("sessions: session %q: %w", id, ErrBusy)
	default:
		return nil, notFound(id)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			defer cancel()
			_ = releaseScript.Run(ctx, r.client, []string{busyKey(id)}, token).Err()
		})
	}, nil
}

// AppendTurn appends t (as one JSON list element) if the session holds exactly expectedTurns
// turns, in one Lua script; see the package doc for why a script rather than WATCH/MULTI.
func (r *Redis) AppendTurn(ctx context.Context, owner, id string, expectedTurns int, t Turn) error {
	if !validID(id) {
		return notFound(id)
	}
	now := r.opt.now()
	payload := encodeTurn(normalizeTurn(t, now))
	nonce, err := randomToken()
	if err != nil {
		return err
	}
	args := append(r.touchArgs(owner, id, now), expectedTurns, payload, nonce)
	res, err := appendScript.Run(ctx, r.client, r.keys(owner, id), args...).Slice()
	if err != nil {
		return fail(ctx, "append turn", err)
	}
	if len(res) == 0 {
		return fmt.Errorf("sessions: append turn %q: empty reply: %w", id, ErrUnavailable)
	}
	st, _ := res[0].(int64)
	switch st {
	case 1:
		return nil
	case 2:
		var n int64
		if len(res) > 1 {
			n, _ = res[1].(int64)
		}
		return fmt.Errorf("sessions: session %q has %d turns, expected %d: %w", id, n, expectedTurns, ErrConflict)
	default:
		return notFound(id)
	}
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fail(ctx, "ping", err)
	}
	return nil
}

// Close closes the connection pool; later calls fail with ErrUnavailable.
func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("sessions: close redis client: %w", err)
	}
	return nil
}
