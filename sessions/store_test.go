package sessions

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/sessions/redistest"
)

// fakeClock is the Options.Now of the shared suite: it starts at the real time and moves
// only when a test calls elapse.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one store under test.
type env struct {
	store Store
	clock *fakeClock
	// elapse lets d pass as the store sees it: the fake clock moves, and for Redis (whose
	// key expiry runs on the server's clock) the test also sleeps.
	elapse func(d time.Duration)
	// tick moves only the fake clock, by 1 ms: distinct, ordered Updated times.
	tick func()
}

// backend builds stores of one kind for the shared suite.
type backend struct {
	name string
	open func(t *testing.T, opt Options) env
}

// backends are the two Store implementations; every shared test runs against both.
func backends() []backend {
	return []backend{
		{"memory", func(t *testing.T, opt Options) env {
			c := &fakeClock{t: time.Now()}
			opt.Now = c.Now
			s := NewMemory(opt)
			t.Cleanup(func() { _ = s.Close() })
			return env{store: s, clock: c, elapse: c.add, tick: func() { c.add(time.Millisecond) }}
		}},
		{"redis", func(t *testing.T, opt Options) env {
			srv := redistest.Start(t)
			c := &fakeClock{t: time.Now()}
			opt.Now = c.Now
			s, err := NewRedis(t.Context(), srv.URL, opt)
			if err != nil {
				t.Fatalf("NewRedis: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return env{store: s, clock: c,
				elapse: func(d time.Duration) { c.add(d); time.Sleep(d) },
				tick:   func() { c.add(time.Millisecond) }}
		}},
	}
}

// mkTurn is a complete turn: user message then assistant reply, ids derived from the tag so
// that a test can tell which turn is which.
func mkTurn(tag string, n int32) Turn {
	return Turn{
		Messages: []Message{
			{Role: "user", Content: "q " + tag, Tokens: 3},
			{Role: "assistant", Content: "a " + tag, Tokens: 2},
		},
		PromptIDs: []int32{0, n, n + 1},
		OutputIDs: []int32{n * 10, 1},
	}
}

// wantErr fails unless errors.Is(err, target) (target nil: err must be nil).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if target == nil {
		if err != nil {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
		return
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func ids(ss []*Session) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

// storeCases is the shared, table-driven suite: each case runs against every backend.
var storeCases = []struct {
	name string
	opt  Options
	run  func(t *testing.T, e env)
}{
	{"create and get", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		md := map[string]string{"title": "hi", "lang": "en"}
		s, err := e.store.Create(ctx, "alice", "be brief", md)
		wantErr(t, "create", err, nil)
		if !validID(s.ID) || s.Owner != "alice" || s.System != "be brief" || !maps.Equal(s.Metadata, md) || len(s.Turns) != 0 {
			t.Fatalf("created %+v", s)
		}
		now := e.clock.Now().UTC().Truncate(time.Microsecond)
		if !s.Created.Equal(now) || !s.Updated.Equal(now) {
			t.Fatalf("created times %v %v, want %v", s.Created, s.Updated, now)
		}
		md["title"] = "changed by caller" // the store keeps its own copy
		g, err := e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get", err, nil)
		s.Metadata["title"] = "hi"
		if !reflect.DeepEqual(g, s) {
			t.Fatalf("get = %+v, want %+v", g, s)
		}
		s2, err := e.store.Create(ctx, "alice", "", nil)
		wantErr(t, "create 2", err, nil)
		if s2.ID == s.ID || s2.Metadata == nil {
			t.Fatalf("second session %+v", s2)
		}
	}},
	{"other owner is not found", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		_, err := e.store.Get(ctx, "bob", s.ID)
		wantErr(t, "get", err, ErrNotFound)
		wantErr(t, "delete", e.store.Delete(ctx, "bob", s.ID), ErrNotFound)
		wantErr(t, "set metadata", e.store.SetMetadata(ctx, "bob", s.ID, nil), ErrNotFound)
		wantErr(t, "append", e.store.AppendTurn(ctx, "bob", s.ID, 0, mkTurn("x", 1)), ErrNotFound)
		_, err = e.store.Acquire(ctx, "bob", s.ID)
		wantErr(t, "acquire", err, ErrNotFound)
		list, total, err := e.store.List(ctx, "bob", 10, 0)
		wantErr(t, "list", err, nil)
		if total != 0 || len(list) != 0 {
			t.Fatalf("bob lists %d of %d", len(list), total)
		}
		g, err := e.store.Get(ctx, "alice", s.ID) // untouched by bob's attempts
		wantErr(t, "owner get", err, nil)
		if len(g.Turns) != 0 {
			t.Fatalf("bob appended a turn: %+v", g.Turns)
		}
	}},
	{"malformed ids are not found", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		for _, id := range []string{"", "s_", "x", s.ID + "0", s.ID[:len(s.ID)-1], "S" + s.ID[1:],
			"s_" + "ABCDEF0123456789ABCDEF0123456789", s.ID + ":turns", "../" + s.ID, "dsgate:owner:alice"} {
			_, err := e.store.Get(ctx, "alice", id)
			wantErr(t, fmt.Sprintf("get %q", id), err, ErrNotFound)
			wantErr(t, fmt.Sprintf("append %q", id), e.store.AppendTurn(ctx, "alice", id, 0, mkTurn("x", 1)), ErrNotFound)
			wantErr(t, fmt.Sprintf("delete %q", id), e.store.Delete(ctx, "alice", id), ErrNotFound)
		}
	}},
	{"append turns in order with expected count", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "sys", nil)
		var want []Turn
		for i := range 3 {
			e.tick()
			tr := mkTurn(fmt.Sprint(i), int32(i))
			tr.Messages[0].Time = time.Date(2026, 1, 2, 3, 4, 5, 6+i, time.FixedZone("x", 3600))
			wantErr(t, "append", e.store.AppendTurn(ctx, "alice", s.ID, i, tr), nil)
			tr.Messages[0].Time = tr.Messages[0].Time.UTC()
			tr.Messages[1].Time = e.clock.Now().UTC().Truncate(time.Microsecond) // zero -> store clock
			want = append(want, tr)
		}
		for _, exp := range []int{0, 1, 2, 4, -1} {
			wantErr(t, fmt.Sprintf("append expecting %d", exp), e.store.AppendTurn(ctx, "alice", s.ID, exp, mkTurn("bad", 99)), ErrConflict)
		}
		g, err := e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get", err, nil)
		if len(g.Turns) != 3 {
			t.Fatalf("%d turns after conflicts, want 3", len(g.Turns))
		}
		for i := range want {
			if !reflect.DeepEqual(g.Turns[i], want[i]) {
				t.Fatalf("turn %d = %+v\nwant %+v", i, g.Turns[i], want[i])
			}
		}
	}},
	{"list by last use with paging", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		var made []string
		for i := range 5 {
			e.tick()
			s, err := e.store.Create(ctx, "alice", fmt.Sprint("sys", i), map[string]string{"i": fmt.Sprint(i)})
			wantErr(t, "create", err, nil)
			made = append(made, s.ID)
		}
		e.tick()
		_, _ = e.store.Create(ctx, "bob", "", nil)
		list, total, err := e.store.List(ctx, "alice", 0, 0)
		wantErr(t, "list", err, nil)
		if want := []string{made[4], made[3], made[2], made[1], made[0]}; total != 5 || !slices.Equal(ids(list), want) {
			t.Fatalf("list = %v total %d, want %v", ids(list), total, want)
		}
		for _, s := range list {
			if s.Turns != nil || s.Owner != "alice" || s.Metadata == nil {
				t.Fatalf("listed %+v", s)
			}
		}
		// Using a session moves it to the front: Get, AppendTurn, SetMetadata, Acquire.
		e.tick()
		_, _ = e.store.Get(ctx, "alice", made[0])
		e.tick()
		wantErr(t, "append", e.store.AppendTurn(ctx, "alice", made[2], 0, mkTurn("t", 1)), nil)
		e.tick()
		wantErr(t, "setmeta", e.store.SetMetadata(ctx, "alice", made[1], map[string]string{"k": "v"}), nil)
		e.tick()
		rel, err := e.store.Acquire(ctx, "alice", made[3])
		wantErr(t, "acquire", err, nil)
		rel()
		order := []string{made[3], made[1], made[2], made[0], made[4]}
		for _, tc := range []struct{ limit, offset int }{{0, 0}, {2, 0}, {2, 2}, {2, 4}, {10, 3}, {3, 5}, {1, 9}, {2, -3}} {
			list, total, err := e.store.List(ctx, "alice", tc.limit, tc.offset)
			wantErr(t, "list", err, nil)
			lo := min(max(tc.offset, 0), 5)
			hi := 5
			if tc.limit > 0 {
				hi = min(lo+tc.limit, 5)
			}
			if total != 5 || !slices.Equal(ids(list), order[lo:hi]) {
				t.Fatalf("list(limit %d, offset %d) = %v total %d, want %v", tc.limit, tc.offset, ids(list), total, order[lo:hi])
			}
		}
		list, _, _ = e.store.List(ctx, "alice", 1, 0)
		if list[0].ID != made[3] || !list[0].Updated.Equal(e.clock.Now().UTC().Truncate(time.Microsecond)) {
			t.Fatalf("first listed %+v", list[0])
		}
	}},
	{"delete", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		keep, _ := e.store.Create(ctx, "alice", "", nil)
		_ = e.store.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("x", 1))
		_, err := e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire", err, nil)
		wantErr(t, "delete", e.store.Delete(ctx, "alice", s.ID), nil)
		_, err = e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get deleted", err, ErrNotFound)
		wantErr(t, "delete again", e.store.Delete(ctx, "alice", s.ID), ErrNotFound)
		wantErr(t, "append deleted", e.store.AppendTurn(ctx, "alice", s.ID, 1, mkTurn("y", 2)), ErrNotFound)
		list, total, _ := e.store.List(ctx, "alice", 10, 0)
		if total != 1 || !slices.Equal(ids(list), []string{keep.ID}) {
			t.Fatalf("list after delete = %v total %d", ids(list), total)
		}
	}},
	{"set metadata replaces", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", map[string]string{"a": "1"})
		md := map[string]string{"b": "2", "unicode": "héllo ✓"}
		wantErr(t, "set", e.store.SetMetadata(ctx, "alice", s.ID, md), nil)
		md["b"] = "mutated"
		g, _ := e.store.Get(ctx, "alice", s.ID)
		if !maps.Equal(g.Metadata, map[string]string{"b": "2", "unicode": "héllo ✓"}) {
			t.Fatalf("metadata %v", g.Metadata)
		}
		wantErr(t, "clear", e.store.SetMetadata(ctx, "alice", s.ID, nil), nil)
		g, _ = e.store.Get(ctx, "alice", s.ID)
		if g.Metadata == nil || len(g.Metadata) != 0 {
			t.Fatalf("cleared metadata %#v", g.Metadata)
		}
	}},
	{"acquire and release", Options{}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		other, _ := e.store.Create(ctx, "alice", "", nil)
		rel, err := e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire", err, nil)
		_, err = e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire busy", err, ErrBusy)
		relOther, err := e.store.Acquire(ctx, "alice", other.ID) // marks are per session
		wantErr(t, "acquire other", err, nil)
		relOther()
		// Busy does not block reads or the owner's append (the gateway holds the mark while it appends).
		_, err = e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get busy", err, nil)
		wantErr(t, "append busy", e.store.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("x", 1)), nil)
		rel()
		rel() // idempotent
		rel2, err := e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire after release", err, nil)
		rel() // a stale release never frees someone else's mark
		_, err = e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire after stale release", err, ErrBusy)
		rel2()
	}},
	{"busy mark expires by itself", Options{BusyTTL: time.Second}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		relCrashed, err := e.store.Acquire(ctx, "alice", s.ID) // a gateway that crashes: never released in time
		wantErr(t, "acquire", err, nil)
		e.elapse(1200 * time.Millisecond)
		rel, err := e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "acquire after BusyTTL", err, nil)
		relCrashed() // the crashed holder's late release leaves the new mark alone
		_, err = e.store.Acquire(ctx, "alice", s.ID)
		wantErr(t, "still busy", err, ErrBusy)
		rel()
	}},
	{"ttl refreshed on use then expires", Options{TTL: 2 * time.Second}, func(t *testing.T, e env) {
		ctx := t.Context()
		s, _ := e.store.Create(ctx, "alice", "", nil)
		idle, _ := e.store.Create(ctx, "alice", "", nil)
		wantErr(t, "append", e.store.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("x", 1)), nil)
		e.elapse(1200 * time.Millisecond)
		_, err := e.store.Get(ctx, "alice", s.ID) // refreshes s, not idle
		wantErr(t, "get", err, nil)
		e.elapse(1200 * time.Millisecond)
		g, err := e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get after 1.2 TTL since create, 0.6 since use", err, nil)
		if len(g.Turns) != 1 {
			t.Fatalf("turns expired separately: %+v", g.Turns)
		}
		_, err = e.store.Get(ctx, "alice", idle.ID)
		wantErr(t, "idle session", err, ErrNotFound)
		list, total, _ := e.store.List(ctx, "alice", 10, 0)
		if total != 1 || !slices.Equal(ids(list), []string{s.ID}) {
			t.Fatalf("list = %v total %d, want only %s", ids(list), total, s.ID)
		}
		e.elapse(2100 * time.Millisecond)
		_, err = e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get expired", err, ErrNotFound)
		_, total, _ = e.store.List(ctx, "alice", 10, 0)
		if total != 0 {
			t.Fatalf("total %d after expiry", total)
		}
	}},
	{"cancelled context", Options{}, func(t *testing.T, e env) {
		s, _ := e.store.Create(t.Context(), "alice", "", nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := e.store.Get(ctx, "alice", s.ID)
		wantErr(t, "get", err, context.Canceled)
		wantErr(t, "append", e.store.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("x", 1)), context.Canceled)
		g, _ := e.store.Get(t.Context(), "alice", s.ID)
		if len(g.Turns) != 0 {
			t.Fatalf("cancelled append wrote %+v", g.Turns)
		}
	}},
	{"ping", Options{}, func(t *testing.T, e env) {
		wantErr(t, "ping", e.store.Ping(t.Context()), nil)
	}},
}

// TestStore runs the shared suite against both stores.
func TestStore(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range storeCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, b.open(t, tc.opt))
				})
			}
		})
	}
}

// TestClosed: after Close every call fails with ErrUnavailable.
func TestClosed(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e := b.open(t, Options{})
			s, _ := e.store.Create(t.Context(), "alice", "", nil)
			wantErr(t, "close", e.store.Close(), nil)
			_, err := e.store.Get(t.Context(), "alice", s.ID)
			wantErr(t, "get after close", err, ErrUnavailable)
			wantErr(t, "ping after close", e.store.Ping(t.Context()), ErrUnavailable)
		})
	}
}
