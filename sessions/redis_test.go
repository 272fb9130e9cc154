package sessions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/sessions/redistest"
	"github.com/redis/go-redis/v9"
)

func openRedis(t *testing.T, url string, opt Options) *Redis {
	t.Helper()
	s, err := NewRedis(t.Context(), url, opt)
	if err != nil {
		t.Fatalf("NewRedis(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkHistory fails unless s holds exactly want turns, each a user message then the
// assistant reply of the same tag, with the ids mkTurn gives that tag.
func checkHistory(t *testing.T, s *Session, want []string) {
	t.Helper()
	if len(s.Turns) != len(want) {
		t.Fatalf("session has %d turns, want %d (%v)", len(s.Turns), len(want), want)
	}
	for i, tr := range s.Turns {
		if len(tr.Messages) != 2 || tr.Messages[0].Role != "user" || tr.Messages[1].Role != "assistant" ||
			tr.Messages[0].Content != "q "+want[i] || tr.Messages[1].Content != "a "+want[i] ||
			len(tr.PromptIDs) != 3 || len(tr.OutputIDs) != 2 || tr.OutputIDs[0] != tr.PromptIDs[1]*10 {
			t.Fatalf("turn %d = %+v, want tag %q", i, tr, want[i])
		}
	}
}

// TestRedisTwoStores: two gateways (two Store instances) over one Redis see the same
// sessions, turns and busy marks.
func TestRedisTwoStores(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := openRedis(t, srv.URL, Options{})
	b := openRedis(t, srv.URL, Options{})
	s, err := a.Create(ctx, "alice", "sys", map[string]string{"k": "v"})
	wantErr(t, "create on a", err, nil)
	g, err := b.Get(ctx, "alice", s.ID)
	wantErr(t, "get on b", err, nil)
	if g.System != "sys" || g.Metadata["k"] != "v" {
		t.Fatalf("b sees %+v", g)
	}
	rel, err := a.Acquire(ctx, "alice", s.ID)
	wantErr(t, "acquire on a", err, nil)
	_, err = b.Acquire(ctx, "alice", s.ID)
	wantErr(t, "acquire on b while a holds it", err, ErrBusy)
	wantErr(t, "append on a", a.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("0", 0)), nil)
	wantErr(t, "stale append on b", b.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("x", 9)), ErrConflict)
	rel()
	relB, err := b.Acquire(ctx, "alice", s.ID)
	wantErr(t, "acquire on b after release", err, nil)
	_, err = a.Acquire(ctx, "alice", s.ID)
	wantErr(t, "acquire on a while b holds it", err, ErrBusy)
	wantErr(t, "append on b", b.AppendTurn(ctx, "alice", s.ID, 1, mkTurn("1", 1)), nil)
	relB()
	g, err = a.Get(ctx, "alice", s.ID)
	wantErr(t, "get on a", err, nil)
	checkHistory(t, g, []string{"0", "1"})
	list, total, err := b.List(ctx, "alice", 10, 0)
	wantErr(t, "list on b", err, nil)
	if total != 1 || list[0].ID != s.ID {
		t.Fatalf("b lists %v of %d", ids(list), total)
	}
	wantErr(t, "delete on b", b.Delete(ctx, "alice", s.ID), nil)
	_, err = a.Get(ctx, "alice", s.ID)
	wantErr(t, "get on a after delete on b", err, ErrNotFound)
}

// TestRedisKillRestart is the fault test: redis-server (appendonly yes, appendfsync always)
// is SIGKILLed while a writer is appending turns, then restarted on the same port. Every
// acknowledged turn is still there, no half turn exists, calls failed with ErrUnavailable
// while Redis was down, and the same Store works again without being recreated.
func TestRedisKillRestart(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	ctx := t.Context()
	st := openRedis(t, srv.URL, Options{})
	s, err := st.Create(ctx, "alice", "sys", nil)
	wantErr(t, "create", err, nil)

	// A writer appends turns as fast as it can; the turns it saw acknowledged are acked.
	var (
		mu      sync.Mutex // guards acked, failed
		acked   []string
		failed  []error
		stop    = make(chan struct{})
		stopped = make(chan struct{})
		started = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		n := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			tag := fmt.Sprint(n)
			err := st.AppendTurn(ctx, "alice", s.ID, n, mkTurn(tag, int32(n)))
			mu.Lock()
			if err == nil {
				acked = append(acked, tag)
				n++
				if n == 20 {
					close(started)
				}
			} else {
				failed = append(failed, err)
			}
			mu.Unlock()
			if err != nil {
				return // the turn is in doubt; the gateway would report 503 and stop
			}
		}
	}()
	<-started
	srv.Kill() // mid-conversation
	<-stopped
	close(stop)

	mu.Lock()
	if len(failed) != 1 || !errors.Is(failed[0], ErrUnavailable) {
		t.Fatalf("writer failures %v, want one ErrUnavailable", failed)
	}
	committed := slices.Clone(acked)
	mu.Unlock()

	// While Redis is down, everything fails fast with ErrUnavailable.
	down := []struct {
		name string
		err  error
	}{
		{"ping", st.Ping(ctx)},
		{"append", st.AppendTurn(ctx, "alice", s.ID, len(committed), mkTurn("x", 1))},
		{"set metadata", st.SetMetadata(ctx, "alice", s.ID, nil)},
		{"delete", st.Delete(ctx, "alice", s.ID)},
	}
	_, err = st.Get(ctx, "alice", s.ID)
	down = append(down, struct {
		name string
		err  error
	}{"get", err})
	_, _, err = st.List(ctx, "alice", 10, 0)
	down = append(down, struct {
		name string
		err  error
	}{"list", err})
	_, err = st.Acquire(ctx, "alice", s.ID)
	down = append(down, struct {
		name string
		err  error
	}{"acquire", err})
	_, err = st.Create(ctx, "alice", "", nil)
	down = append(down, struct {
		name string
		err  error
	}{"create", err})
	for _, d := range down {
		wantErr(t, d.name+" while redis is down", d.err, ErrUnavailable)
	}

	srv.Restart()
	waitUp(t, st)
	g, err := st.Get(ctx, "alice", s.ID)
	wantErr(t, "get after restart", err, nil)
	// The in-flight turn may have committed before the kill even though its reply was lost:
	// stored = acked, or acked + that one turn. Never fewer, never a half turn.
	want := committed
	if len(g.Turns) == len(committed)+1 {
		want = append(want, fmt.Sprint(len(committed)))
	}
	checkHistory(t, g, want)
	if g.System != "sys" {
		t.Fatalf("system prompt after restart %q", g.System)
	}
	t.Logf("%d turns acknowledged before SIGKILL, %d stored after restart", len(committed), len(g.Turns))
	// The conversation continues on the same Store; a stale expected count still conflicts.
	n := len(g.Turns)
	wantErr(t, "stale append", st.AppendTurn(ctx, "alice", s.ID, n-1, mkTurn("old", 1)), ErrConflict)
	wantErr(t, "append after restart", st.AppendTurn(ctx, "alice", s.ID, n, mkTurn(fmt.Sprint(n), int32(n))), nil)
	g, _ = st.Get(ctx, "alice", s.ID)
	checkHistory(t, g, append(want, fmt.Sprint(n)))
	rel, err := st.Acquire(ctx, "alice", s.ID)
	wantErr(t, "acquire after restart", err, nil)
	rel()
}

// waitUp waits until the same Store answers again after a restart (go-redis's pool probes a
// down server once a second), and fails after 10 s.
func waitUp(t *testing.T, st *Redis) {
	t.Helper()
	start := time.Now()
	for {
		err := st.Ping(t.Context())
		if err == nil {
			t.Logf("store reconnected %v after redis-server answered", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("store did not reconnect within 10s: %v", err)
		}
		wantErr(t, "ping while reconnecting", err, ErrUnavailable)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisRestartWithoutPersistence: with persistence off (the default test server) a
// restart loses the data, but the Store still reconnects by itself.
func TestRedisRestartWithoutPersistence(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	st := openRedis(t, srv.URL, Options{})
	s, _ := st.Create(ctx, "alice", "", nil)
	srv.Kill()
	_, err := st.Get(ctx, "alice", s.ID)
	wantErr(t, "get while down", err, ErrUnavailable)
	srv.Restart()
	waitUp(t, st)
	_, err = st.Get(ctx, "alice", s.ID)
	wantErr(t, "get after empty restart", err, ErrNotFound)
	s2, err := st.Create(ctx, "alice", "", nil)
	wantErr(t, "create after restart", err, nil)
	wantErr(t, "append after restart", st.AppendTurn(ctx, "alice", s2.ID, 0, mkTurn("0", 0)), nil)
}

// TestRedisURLs: password URLs, TLS (rediss://), and unreachable or refused servers.
func TestRedisURLs(t *testing.T) {
	ctx := t.Context()
	pw := redistest.StartWith(t, redistest.Options{Password: "s3cr:et"})
	tlsSrv := redistest.StartWith(t, redistest.Options{TLS: true})
	// rediss:// verifies the server against the system roots; make the test CA one of them.
	// (Go reads SSL_CERT_FILE once, at the first verification in the process.)
	t.Setenv("SSL_CERT_FILE", tlsSrv.CAFile)
	dead := redistest.Start(t)
	dead.Kill()
	for _, tc := range []struct {
		name, url string
		want      error // nil: works
	}{
		{"password", "redis://:s3cr%3Aet@" + pw.Addr + "/0", nil},
		{"password url of the helper", pw.URL, nil},
		{"wrong password", "redis://:nope@" + pw.Addr, ErrUnavailable},
		{"no password", "redis://" + pw.Addr, ErrUnavailable},
		{"tls", tlsSrv.URL, nil},
		{"plain to a tls port", "redis://" + tlsSrv.Addr + "?dial_timeout=1s&read_timeout=1s&max_retries=0", ErrUnavailable},
		{"refused", dead.URL, ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := NewRedis(ctx, tc.url, Options{})
			wantErr(t, "NewRedis", err, tc.want)
			if err != nil {
				return
			}
			defer st.Close()
			s, err := st.Create(ctx, "alice", "", nil)
			wantErr(t, "create", err, nil)
			wantErr(t, "append", st.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("0", 0)), nil)
		})
	}
	for _, bad := range []string{"http://localhost", "redis://host:port:x", "redis://h/notadb", "redis://h?bogus=1"} {
		if _, err := NewRedis(ctx, bad, Options{}); err == nil || errors.Is(err, ErrUnavailable) {
			t.Errorf("NewRedis(%q) = %v, want a URL error", bad, err)
		}
	}
}

// TestRedisKeyLayout checks the keys, types and TTLs the package doc documents.
func TestRedisKeyLayout(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	st := openRedis(t, srv.URL, Options{TTL: time.Hour, BusyTTL: time.Minute})
	s, _ := st.Create(ctx, "alice", "sys", map[string]string{"k": "v"})
	wantErr(t, "append", st.AppendTurn(ctx, "alice", s.ID, 0, mkTurn("0", 0)), nil)
	rel, _ := st.Acquire(ctx, "alice", s.ID)
	defer rel()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	for _, k := range []struct {
		key, typ string
		ttl      time.Duration
	}{
		{"dsgate:sess:" + s.ID, "hash", time.Hour},
		{"dsgate:sess:" + s.ID + ":turns", "list", time.Hour},
		{"dsgate:sess:" + s.ID + ":busy", "string", time.Minute},
		{"dsgate:owner:alice", "zset", time.Hour},
	} {
		typ, err := c.Type(ctx, k.key).Result()
		wantErr(t, "type "+k.key, err, nil)
		ttl, _ := c.PTTL(ctx, k.key).Result()
		if typ != k.typ || ttl <= k.ttl-time.Minute/2 || ttl > k.ttl {
			t.Errorf("%s: type %s ttl %v, want %s ttl %v", k.key, typ, ttl, k.typ, k.ttl)
		}
	}
	h, _ := c.HGetAll(ctx, "dsgate:sess:"+s.ID).Result()
	if h["owner"] != "alice" || h["system"] != "sys" || h["metadata"] != `{"k":"v"}` || h["created"] == "" || h["updated"] == "" || h["last"] == "" {
		t.Errorf("hash fields %v", h)
	}
	if keys, _ := c.Keys(ctx, "*").Result(); len(keys) != 4 {
		t.Errorf("keys %v, want the 4 documented", keys)
	}
}

// TestRedisAppendRetryIdempotent replays the append script with the same nonce, as
// go-redis does after a connection drops between commit and reply.
func TestRedisAppendRetryIdempotent(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	st := openRedis(t, srv.URL, Options{})
	s, _ := st.Create(ctx, "alice", "", nil)
	run := func(nonce string) []any {
		args := append(st.touchArgs("alice", s.ID, st.opt.now()), 0, encodeTurn(mkTurn("0", 0)), nonce)
		res, err := appendScript.Run(ctx, st.client, st.keys("alice", s.ID), args...).Slice()
		wantErr(t, "append script", err, nil)
		return res
	}
	if r := run("n1"); r[0] != int64(1) {
		t.Fatalf("first run %v", r)
	}
	if r := run("n1"); r[0] != int64(1) {
		t.Fatalf("retry with the same nonce %v, want success", r)
	}
	if r := run("n2"); r[0] != int64(2) {
		t.Fatalf("other writer with the same count %v, want conflict", r)
	}
	g, err := st.Get(ctx, "alice", s.ID)
	wantErr(t, "get", err, nil)
	checkHistory(t, g, []string{"0"})
}

// TestRedisContextDeadline: a caller's deadline is reported as such, not as unavailable.
func TestRedisContextDeadline(t *testing.T) {
	srv := redistest.Start(t)
	st := openRedis(t, srv.URL, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err := st.Create(ctx, "alice", "", nil)
	wantErr(t, "create", err, context.DeadlineExceeded)
}

// TestRedisListDropsVanishedSessions: an owner-index entry whose session hash vanished
// without Delete (evicted under maxmemory, or expired early by clock skew) is dropped by List,
// and the page is still filled.
func TestRedisListDropsVanishedSessions(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	clock := &fakeClock{t: time.Now()}
	st := openRedis(t, srv.URL, Options{Now: clock.Now})
	var made []string
	for range 6 {
		clock.add(time.Millisecond)
		s, _ := st.Create(ctx, "alice", "", nil)
		made = append(made, s.ID)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	if err := c.Del(ctx, sessionKey(made[5]), sessionKey(made[3])).Err(); err != nil {
		t.Fatal(err)
	}
	list, total, err := st.List(ctx, "alice", 3, 0)
	wantErr(t, "list", err, nil)
	if want := []string{made[4], made[2], made[1]}; !slices.Equal(ids(list), want) || total != 4 {
		t.Fatalf("list = %v total %d, want %v total 4", ids(list), total, want)
	}
	if n, _ := c.ZCard(ctx, ownerKey("alice")).Result(); n != 4 {
		t.Fatalf("owner index holds %d entries, want 4", n)
	}
}
