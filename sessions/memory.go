package sessions

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Memory is the in-process Store, the embedded default when no Redis URL is configured. Its
// sessions live only as long as the process and are not shared between gateways. It is safe
// for concurrent use. Expired sessions are dropped lazily (on access, and by a sweep that
// Create runs at most every TTL/4), so Memory needs no background goroutine.
type Memory struct {
	opt Options

	// mu guards every field below.
	mu        sync.Mutex
	sessions  map[string]*memEntry       // by id
	owners    map[string]map[string]bool // owner -> ids
	lastSweep time.Time                  // when Create last swept expired sessions
	nextToken uint64                     // busy-mark tokens
	closed    bool
}

// memEntry is one stored session and its busy mark.
type memEntry struct {
	s         Session
	busyToken uint64    // 0: not busy
	busyUntil time.Time // the mark lapses at this time
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(opt Options) *Memory {
	return &Memory{
		opt:      opt.withDefaults(),
		sessions: map[string]*memEntry{},
		owners:   map[string]map[string]bool{},
	}
}

// lookup returns owner's live session id; the caller holds m.mu. An expired session is
// removed and reported missing.
func (m *Memory) lookup(owner, id string, now time.Time) (*memEntry, error) {
	if m.closed {
		return nil, fmt.Errorf("sessions: memory store closed: %w", ErrUnavailable)
	}
	if !validID(id) {
		return nil, fmt.Errorf("sessions: session %q: %w", id, ErrNotFound)
	}
	e, ok := m.sessions[id]
	if ok && m.expired(e, now) {
		m.remove(e)
		ok = false
	}
	if !ok || e.s.Owner != owner {
		return nil, fmt.Errorf("sessions: session %q: %w", id, ErrNotFound)
	}
	return e, nil
}

func (m *Memory) expired(e *memEntry, now time.Time) bool {
	return !now.Before(e.s.Updated.Add(m.opt.TTL))
}

// remove deletes e; the caller holds m.mu.
func (m *Memory) remove(e *memEntry) {
	delete(m.sessions, e.s.ID)
	if ids := m.owners[e.s.Owner]; ids != nil {
		delete(ids, e.s.ID)
		if len(ids) == 0 {
			delete(m.owners, e.s.Owner)
		}
	}
}

// sweep drops every expired session, at most once per TTL/4; the caller holds m.mu.
func (m *Memory) sweep(now time.Time) {
	if now.Sub(m.lastSweep) < m.opt.TTL/4 {
		return
	}
	m.lastSweep = now
	for _, e := range m.sessions {
		if m.expired(e, now) {
			m.remove(e)
		}
	}
}

// Create makes a new empty session for owner.
func (m *Memory) Create(ctx context.Context, owner, system string, metadata map[string]string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions: create: %w", err)
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := m.opt.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("sessions: memory store closed: %w", ErrUnavailable)
	}
	m.sweep(now)
	e := &memEntry{s: Session{
		ID: id, Owner: owner, Created: now, Updated: now,
		System: system, Metadata: cloneMetadata(metadata),
	}}
	m.sessions[id] = e
	if m.owners[owner] == nil {
		m.owners[owner] = map[string]bool{}
	}
	m.owners[owner][id] = true
	return e.s.clone(true), nil
}

// Get returns the session with its turns and marks it used.
func (m *Memory) Get(ctx context.Context, owner, id string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions: get: %w", err)
	}
	now := m.opt.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(owner, id, now)
	if err != nil {
		return nil, err
	}
	e.s.Updated = now
	return e.s.clone(true), nil
}

// List returns owner's sessions by Updated, newest first (ties by id, descending, as Redis
// orders equal scores), without turns.
func (m *Memory) List(ctx context.Context, owner string, limit, offset int) ([]*Session, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("sessions: list: %w", err)
	}
	now := m.opt.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, 0, fmt.Errorf("sessions: memory store closed: %w", ErrUnavailable)
	}
	var all []*memEntry
	for id := range m.owners[owner] {
		e := m.sessions[id]
		if m.expired(e, now) {
			m.remove(e)
			continue
		}
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *memEntry) int {
		if c := b.s.Updated.Compare(a.s.Updated); c != 0 {
			return c
		}
		return cmp.Compare(b.s.ID, a.s.ID)
	})
	total := len(all)
	offset = min(max(offset, 0), total)
	end := total
	if limit > 0 {
		end = min(offset+limit, total)
	}
	out := make([]*Session, 0, end-offset)
	for _, e := range all[offset:end] {
		out = append(out, e.s.clone(false))
	}
	return out, total, nil
}

// Delete removes the session and its busy mark.
func (m *Memory) Delete(ctx context.Context, owner, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sessions: delete: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(owner, id, m.opt.now())
	if err != nil {
		return err
	}
	m.remove(e)
	return nil
}

// SetMetadata replaces the session's metadata and marks it used.
func (m *Memory) SetMetadata(ctx context.Context, owner, id string, md map[string]string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sessions: set metadata: %w", err)
	}
	now := m.opt.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(owner, id, now)
	if err != nil {
		return err
	}
	e.s.Metadata = cloneMetadata(md)
	e.s.Updated = now
	return nil
}

// Acquire marks the session busy for at most BusyTTL and marks it used.
func (m *Memory) Acquire(ctx context.Context, owner, id string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions: acquire: %w", err)
	}
	now := m.opt.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(owner, id, now)
	if err != nil {
		return nil, err
	}
	if e.busyToken != 0 && now.Before(e.busyUntil) {
		return nil, fmt.Errorf("sessions: session %q: %w", id, ErrBusy)
	}
	m.nextToken++
	token := m.nextToken
	e.busyToken, e.busyUntil = token, now.Add(m.opt.BusyTTL)
	e.s.Updated = now
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if cur, ok := m.sessions[id]; ok && cur == e && e.busyToken == token {
				e.busyToken = 0
			}
		})
	}, nil
}

// AppendTurn appends t if the session holds exactly expectedTurns turns.
func (m *Memory) AppendTurn(ctx context.Context, owner, id string, expectedTurns int, t Turn) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sessions: append turn: %w", err)
	}
	now := m.opt.now()
	t = normalizeTurn(t, now)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(owner, id, now)
	if err != nil {
		return err
	}
	if n := len(e.s.Turns); n != expectedTurns {
		return fmt.Errorf("sessions: session %q has %d turns, expected %d: %w", id, n, expectedTurns, ErrConflict)
	}
	e.s.Turns = append(e.s.Turns, t)
	e.s.Updated = now
	return nil
}

// Ping fails only after Close.
func (m *Memory) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("sessions: memory store closed: %w", ErrUnavailable)
	}
	return nil
}

// Close drops every session; later calls fail with ErrUnavailable.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.sessions = map[string]*memEntry{}
	m.owners = map[string]map[string]bool{}
	return nil
}
