package api_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/gateway/api/adapt"
	"github.com/dsgate/dsgate/sessions"
	"github.com/dsgate/dsgate/sessions/redistest"
)

func redisStore(t *testing.T, url string, opt sessions.Options) api.SessionStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := sessions.NewRedis(ctx, url, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return adapt.Sessions(st)
}

func withSessions(st api.SessionStore) func(*api.Config) {
	return func(c *api.Config) { c.Sessions = st }
}

func TestSessionsMemoryStore(t *testing.T) {
	api.RunSessionSuite(t, func(t *testing.T) api.SessionStore {
		return adapt.Sessions(sessions.NewMemory(sessions.Options{}))
	})
}

func TestSessionsRedisStore(t *testing.T) {
	api.RunSessionSuite(t, func(t *testing.T) api.SessionStore {
		return redisStore(t, redistest.Start(t).URL, sessions.Options{})
	})
}

func newSession(t *testing.T, h *api.Harness, key string) string {
	t.Helper()
	r := h.Do("POST", "/v1/sessions", key, map[string]any{"system": "S"})
	if r.Status() != 201 {
		t.Fatalf("create %d", r.Status())
	}
	return r.JSON(t)["id"].(string)
}

func turn(t *testing.T, h *api.Harness, id, text string) api.Resp {
	t.Helper()
	return h.Do("POST", "/v1/chat/completions", api.KeyA, api.ChatBody(map[string]any{"session_id": id,
		"messages": []any{map[string]any{"role": "user", "content": text}}, "max_tokens": 3}))
}

// checkHistory asserts the session holds exactly the user texts given, each answered.
func checkHistory(t *testing.T, h *api.Harness, id string, users ...string) {
	t.Helper()
	g := h.Do("GET", "/v1/sessions/"+id, api.KeyA, nil).JSON(t)
	msgs := g["messages"].([]any)
	if len(msgs) != 2*len(users) {
		t.Fatalf("history has %d messages, want %d: %v", len(msgs), 2*len(users), msgs)
	}
	for i, u := range users {
		um, am := msgs[2*i].(map[string]any), msgs[2*i+1].(map[string]any)
		if um["role"] != "user" || um["content"] != u || am["role"] != "assistant" || am["content"] == "" {
			t.Fatalf("turn %d: %v %v", i, um, am)
		}
	}
}

func TestTwoGatewaysShareRedis(t *testing.T) {
	srv := redistest.Start(t)
	h1 := api.NewHarness(t, withSessions(redisStore(t, srv.URL, sessions.Options{})))
	h2 := api.NewHarness(t, withSessions(redisStore(t, srv.URL, sessions.Options{})))
	id := newSession(t, h1, api.KeyA)
	if r := h2.Do("GET", "/v1/sessions/"+id, api.KeyA, nil); r.Status() != 200 {
		t.Fatalf("gateway 2 does not see gateway 1's session: %d", r.Status())
	}
	if r := turn(t, h1, id, "one"); r.Status() != 200 {
		t.Fatal(r.Status())
	}
	if r := turn(t, h2, id, "two"); r.Status() != 200 {
		t.Fatal(r.Status())
	}
	checkHistory(t, h1, id, "one", "two")
	// busy on one gateway is busy on the other
	started, release := h1.BlockEngine()
	var wg sync.WaitGroup
	wg.Add(1)
	var first api.Resp
	go func() { defer wg.Done(); first = turn(t, h1, id, "three") }()
	<-started
	r := turn(t, h2, id, "clash")
	if r.Status() != 409 || r.ErrCode(t) != api.CodeSessionBusy {
		t.Fatalf("gateway 2 during gateway 1's turn: %d", r.Status())
	}
	release()
	wg.Wait()
	if first.Status() != 200 {
		t.Fatal(first.Status())
	}
	checkHistory(t, h2, id, "one", "two", "three")
	// another tenant on the other gateway sees nothing
	if r := h2.Do("GET", "/v1/sessions/"+id, api.KeyB, nil); r.Status() != 404 {
		t.Fatal(r.Status())
	}
}

func TestRedisKilledMidConversation(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	h := api.NewHarness(t, withSessions(redisStore(t, srv.URL, sessions.Options{BusyTTL: 2 * time.Second})))
	id := newSession(t, h, api.KeyA)
	if r := turn(t, h, id, "one"); r.Status() != 200 {
		t.Fatal(r.Status())
	}
	srv.Kill()
	r := turn(t, h, id, "lost")
	if r.Status() != 503 || r.ErrCode(t) != api.CodeSessionStoreUnavailable {
		t.Fatalf("session turn with Redis dead: %d", r.Status())
	}
	if r := h.Do("POST", "/v1/chat/completions", api.KeyA, api.ChatBody(nil)); r.Status() != 200 {
		t.Fatalf("session-less chat with Redis dead: %d", r.Status())
	}
	if r := h.Do("GET", "/readyz", "", nil); r.Status() != 503 {
		t.Fatalf("readyz with Redis dead: %d", r.Status())
	}
	srv.Restart()
	waitFor(t, func() bool { return turn(t, h, id, "two").Status() == 200 })
	checkHistory(t, h, id, "one", "two")

	// Redis dies while a turn is generating: the turn fails, nothing half-written appears
	started, release := h.BlockEngine()
	done := make(chan api.Resp, 1)
	go func() { done <- turn(t, h, id, "half") }()
	<-started
	srv.Kill()
	release()
	if r := <-done; r.Status() != 503 || r.ErrCode(t) != api.CodeSessionStoreUnavailable {
		t.Fatalf("turn whose commit met a dead Redis: %d", r.Status())
	}
	srv.Restart()
	// the busy mark of the failed turn expires by itself (BusyTTL); then the session works
	waitFor(t, func() bool { return turn(t, h, id, "three").Status() == 200 })
	checkHistory(t, h, id, "one", "two", "three")
	if r := h.Do("GET", "/readyz", "", nil); r.Status() != 200 {
		t.Fatalf("readyz after restart: %d", r.Status())
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
