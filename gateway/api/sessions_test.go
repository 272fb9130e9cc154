package api

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// storeFactory makes a fresh SessionStore for one test (the fake here; the real memory and
// Redis stores in stores_test.go).
type storeFactory func(t *testing.T) SessionStore

func withStore(f storeFactory, t *testing.T) func(*Config) {
	st := f(t)
	return func(c *Config) { c.Sessions = st }
}

func TestSessionsFakeStore(t *testing.T) {
	runSessionSuite(t, func(t *testing.T) SessionStore { return newFakeStore() })
}

// runSessionSuite is the session behaviour every store must show through the API.
func runSessionSuite(t *testing.T, f storeFactory) {
	t.Run("CRUD", func(t *testing.T) { testSessionCRUD(t, f) })
	t.Run("Turns", func(t *testing.T) { testSessionTurns(t, f) })
	t.Run("Busy", func(t *testing.T) { testSessionBusy(t, f) })
	t.Run("Trim", func(t *testing.T) { testSessionTrim(t, f) })
	t.Run("FailedTurnAppendsNothing", func(t *testing.T) { testSessionFailedTurn(t, f) })
	t.Run("Hammer", func(t *testing.T) { testSessionHammer(t, f) })
}

// testSessionHammer runs many parallel turns against a few sessions: each turn either
// completes or gets 409 session_busy, and every history ends up a clean alternation of
// exactly the completed turns.
func testSessionHammer(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	h.eng.set(func(f *fakeEngine) { f.delay = time.Millisecond })
	ids := []string{createSession(t, h, keyA, map[string]any{}), createSession(t, h, keyA, map[string]any{}), createSession(t, h, keyA, map[string]any{})}
	var mu sync.Mutex
	done := map[string]map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < 9; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				id := ids[(w+i)%len(ids)]
				text := fmt.Sprintf("w%d-i%d", w, i)
				r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "max_tokens": 2,
					"messages": []any{map[string]any{"role": "user", "content": text}}}))
				switch {
				case r.status == 200:
					mu.Lock()
					if done[id] == nil {
						done[id] = map[string]bool{}
					}
					done[id][text] = true
					mu.Unlock()
				case r.status == 409 && r.errCode(t) == CodeSessionBusy:
				default:
					t.Errorf("turn %s: %d %s", text, r.status, r.body)
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, id := range ids {
		g := h.do("GET", "/v1/sessions/"+id, keyA, nil).json(t)
		msgs := g["messages"].([]any)
		if len(msgs) != 2*len(done[id]) {
			t.Fatalf("session %s: %d messages for %d completed turns", id, len(msgs), len(done[id]))
		}
		for i := 0; i < len(msgs); i += 2 {
			u, a := msgs[i].(map[string]any), msgs[i+1].(map[string]any)
			if u["role"] != "user" || a["role"] != "assistant" || !done[id][u["content"].(string)] {
				t.Fatalf("session %s message %d: %v %v", id, i, u, a)
			}
		}
		total += len(done[id])
	}
	if total == 0 {
		t.Fatal("no turn completed")
	}
}

func createSession(t *testing.T, h *harness, key string, body any) string {
	t.Helper()
	r := h.do("POST", "/v1/sessions", key, body)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	return r.json(t)["id"].(string)
}

func testSessionCRUD(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	id := createSession(t, h, keyA, map[string]any{"system": "be brief", "metadata": map[string]string{"title": "first"}})
	g := h.do("GET", "/v1/sessions/"+id, keyA, nil)
	m := g.json(t)
	if g.status != 200 || m["system"] != "be brief" || m["metadata"].(map[string]any)["title"] != "first" || m["object"] != "session" {
		t.Fatalf("get: %d %s", g.status, g.body)
	}
	// an empty body is fine
	if r := h.do("POST", "/v1/sessions", keyA, nil); r.status != 201 {
		t.Fatalf("empty create: %d %s", r.status, r.body)
	}
	for i := 0; i < 3; i++ {
		createSession(t, h, keyA, map[string]any{})
		time.Sleep(2 * time.Millisecond)
	}
	createSession(t, h, keyB, map[string]any{})
	// paging
	l := h.do("GET", "/v1/sessions?limit=2&offset=0", keyA, nil).json(t)
	if l["total"].(float64) != 5 || len(l["data"].([]any)) != 2 || l["has_more"] != true {
		t.Fatalf("list: %v", l)
	}
	l = h.do("GET", "/v1/sessions?limit=2&offset=4", keyA, nil).json(t)
	if len(l["data"].([]any)) != 1 || l["has_more"] != false {
		t.Fatalf("list page 3: %v", l)
	}
	for _, q := range []string{"limit=0", "limit=1000", "offset=-1", "limit=x"} {
		if r := h.do("GET", "/v1/sessions?"+q, keyA, nil); r.status != 400 || r.errCode(t) != CodeInvalidRequest {
			t.Fatalf("%s: %d", q, r.status)
		}
	}
	if l := h.do("GET", "/v1/sessions", keyB, nil).json(t); l["total"].(float64) != 1 {
		t.Fatalf("tenant B sees %v", l["total"])
	}
	// rename through PATCH; a null value deletes a key
	r := h.do("PATCH", "/v1/sessions/"+id, keyA, map[string]any{"title": "renamed", "metadata": map[string]any{"color": "red"}})
	if r.status != 200 || r.json(t)["metadata"].(map[string]any)["title"] != "renamed" || r.json(t)["metadata"].(map[string]any)["color"] != "red" {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	r = h.do("PATCH", "/v1/sessions/"+id, keyA, map[string]any{"metadata": map[string]any{"color": nil}})
	if _, ok := r.json(t)["metadata"].(map[string]any)["color"]; ok {
		t.Fatalf("null did not delete: %s", r.body)
	}
	if r := h.do("PATCH", "/v1/sessions/"+id, keyA, map[string]any{"title": strings.Repeat("x", 600)}); r.status != 400 {
		t.Fatalf("long title: %d", r.status)
	}
	// another tenant sees nothing
	for _, c := range []struct{ method, path string }{{"GET", "/v1/sessions/" + id}, {"DELETE", "/v1/sessions/" + id}} {
		if r := h.do(c.method, c.path, keyB, nil); r.status != 404 || r.errCode(t) != CodeSessionNotFound {
			t.Fatalf("%s by B: %d %s", c.method, r.status, r.body)
		}
	}
	if r := h.do("PATCH", "/v1/sessions/"+id, keyB, map[string]any{"title": "x"}); r.status != 404 || r.errCode(t) != CodeSessionNotFound {
		t.Fatalf("patch by B: %d", r.status)
	}
	if r := h.do("POST", "/v1/chat/completions", keyB, chatBody(map[string]any{"session_id": id})); r.status != 404 || r.errCode(t) != CodeSessionNotFound {
		t.Fatalf("chat by B: %d %s", r.status, r.body)
	}
	if r := h.do("DELETE", "/v1/sessions/"+id, keyA, nil); r.status != 200 || r.json(t)["deleted"] != true {
		t.Fatalf("delete: %d", r.status)
	}
	if r := h.do("GET", "/v1/sessions/"+id, keyA, nil); r.status != 404 || r.errCode(t) != CodeSessionNotFound {
		t.Fatalf("get deleted: %d", r.status)
	}
	if r := h.do("GET", "/v1/sessions/nonexistent", keyA, nil); r.status != 404 {
		t.Fatalf("get unknown: %d", r.status)
	}
}

func testSessionTurns(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	tk := fakeTok{}
	id := createSession(t, h, keyA, map[string]any{"system": "SYS"})
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "user", "content": "one"}}, "max_tokens": 4}))
	if r.status != 200 || r.header.Get(HeaderTrimmedTurns) != "0" || r.header.Get(HeaderSessionID) != id {
		t.Fatalf("turn 1: %d %s %v", r.status, r.body, r.header)
	}
	sess := r.json(t)["session"].(map[string]any)
	if sess["id"] != id || sess["turns"].(float64) != 1 || sess["trimmed_turns"].(float64) != 0 {
		t.Fatalf("session field %v", sess)
	}
	p1 := h.eng.lastRequest().Prompt
	if fmt.Sprint(p1) != fmt.Sprint(tk.Encode("<bos>SYS<U>one<A>", false)) {
		t.Fatalf("turn 1 prompt %v", p1)
	}
	reply1 := r.json(t)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	out1 := tk.Encode(reply1, false)

	// turn 2 streams; the stored ids of turn 1 are its prefix, then EOS (turn 1 ended by
	// length), then the new turn's ids
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "stream": true, "messages": []any{map[string]any{"role": "user", "content": "two"}}, "max_tokens": 3}))
	chunks, done := parseChunks(t, r.body)
	if r.status != 200 || !done || chunks[len(chunks)-1].Error != nil {
		t.Fatalf("turn 2: %d %s", r.status, r.body)
	}
	var reply2 strings.Builder
	for _, c := range chunks {
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != nil {
			reply2.WriteString(*c.Choices[0].Delta.Content)
		}
	}
	p2 := h.eng.lastRequest().Prompt
	want := append(append(append([]int32{}, p1...), out1...), 1)
	want = append(want, tk.Encode("<U>two<A>", false)...)
	if fmt.Sprint(p2) != fmt.Sprint(want) {
		t.Fatalf("turn 2 prompt\n got %v\nwant %v", p2, want)
	}
	// turn 3 after an EOS-terminated reply: no extra EOS
	h.eng.set(func(f *fakeEngine) { f.stopAfter = 2 })
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "user", "content": "three"}}, "max_tokens": 5}))
	h.eng.set(func(f *fakeEngine) { f.stopAfter = 0 })
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "user", "content": "four"}}, "max_tokens": 2}))
	p3, p4 := h.eng.request(-2).Prompt, h.eng.lastRequest().Prompt
	if fmt.Sprint(p4[len(p3):]) != fmt.Sprint(append(tk.Encode(h.reply(t, id, 2), false), append([]int32{1}, tk.Encode("<U>four<A>", false)...)...)) {
		t.Fatalf("turn 4 prompt tail %v", p4[len(p3):])
	}
	// history: clean alternation with the texts
	g := h.do("GET", "/v1/sessions/"+id, keyA, nil).json(t)
	msgs := g["messages"].([]any)
	if g["turns"].(float64) != 4 || len(msgs) != 8 {
		t.Fatalf("history %v", g)
	}
	for i, m := range msgs {
		role := m.(map[string]any)["role"]
		if (i%2 == 0 && role != "user") || (i%2 == 1 && role != "assistant") {
			t.Fatalf("message %d role %v", i, role)
		}
	}
	if msgs[1].(map[string]any)["content"] != reply1 || msgs[3].(map[string]any)["content"] != reply2.String() || msgs[2].(map[string]any)["content"] != "two" {
		t.Fatalf("history texts %v", msgs)
	}
	// a system message inside a session turn is refused
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "system", "content": "x"}}})); r.status != 400 {
		t.Fatalf("system in turn: %d", r.status)
	}
}

func (h *harness) reply(t *testing.T, id string, turn int) string {
	g := h.do("GET", "/v1/sessions/"+id, keyA, nil).json(t)
	return g["messages"].([]any)[2*turn+1].(map[string]any)["content"].(string)
}

func testSessionBusy(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	id := createSession(t, h, keyA, map[string]any{})
	blk := make(chan struct{})
	h.eng.set(func(f *fakeEngine) { f.block, f.started = blk, make(chan struct{}, 1) })
	var wg sync.WaitGroup
	wg.Add(1)
	var first resp
	go func() {
		defer wg.Done()
		first = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id}))
	}()
	<-h.eng.started
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id}))
	if r.status != 409 || r.errCode(t) != CodeSessionBusy {
		t.Fatalf("second turn while busy: %d %s", r.status, r.body)
	}
	// other sessions and session-less chat are not blocked
	h.eng.set(func(f *fakeEngine) { f.block, f.started = nil, nil })
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(nil)); r.status != 200 {
		t.Fatalf("session-less: %d", r.status)
	}
	close(blk)
	wg.Wait()
	if first.status != 200 {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	// released after the turn
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id})); r.status != 200 {
		t.Fatalf("after release: %d %s", r.status, r.body)
	}
}

func testSessionTrim(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	id := createSession(t, h, keyA, map[string]any{"system": "SYS"})
	long := strings.Repeat("q", 50)
	var trimmed string
	for i := 0; i < 5; i++ {
		r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "user", "content": long}}, "max_tokens": 20}))
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i, r.status, r.body)
		}
		trimmed = r.header.Get(HeaderTrimmedTurns)
		if got := r.json(t)["session"].(map[string]any)["trimmed_turns"].(float64); fmt.Sprint(got) != trimmed {
			t.Fatalf("header %s vs field %v", trimmed, got)
		}
		p := h.eng.lastRequest().Prompt
		if len(p)+20 > 256 {
			t.Fatalf("prompt %d + 20 beyond the context", len(p))
		}
		if !strings.HasPrefix(fakeTok{}.Decode(p, false), "<bos>SYS<U>") {
			t.Fatalf("system prompt lost: %q", fakeTok{}.Decode(p, false)[:20])
		}
	}
	if trimmed == "0" || trimmed == "" {
		t.Fatal("five 70-token turns in a 256-token context were not trimmed")
	}
	// all five turns are still stored
	if g := h.do("GET", "/v1/sessions/"+id, keyA, nil).json(t); g["turns"].(float64) != 5 {
		t.Fatalf("turns %v", g["turns"])
	}
	// a new turn that cannot fit even alone
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "messages": []any{map[string]any{"role": "user", "content": strings.Repeat("z", 250)}}, "max_tokens": 20}))
	if r.status != 400 || r.errCode(t) != CodeContextLengthExceeded {
		t.Fatalf("too long turn: %d %s", r.status, r.body)
	}
}

func testSessionFailedTurn(t *testing.T, f storeFactory) {
	h := newHarness(t, withStore(f, t))
	id := createSession(t, h, keyA, map[string]any{})
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id}))
	h.eng.set(func(f *fakeEngine) { f.failAt, f.failErr = 2, fmt.Errorf("boom") })
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id})); r.status != 500 {
		t.Fatalf("failing turn: %d", r.status)
	}
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id, "stream": true}))
	if chunks, _ := parseChunks(t, r.body); chunks[len(chunks)-1].Error == nil {
		t.Fatalf("failing streamed turn: %s", r.body)
	}
	h.eng.set(func(f *fakeEngine) { f.failAt = 0 })
	if g := h.do("GET", "/v1/sessions/"+id, keyA, nil).json(t); g["turns"].(float64) != 1 || len(g["messages"].([]any)) != 2 {
		t.Fatalf("a failed turn was stored: %v", g)
	}
}

func TestSessionStoreDown(t *testing.T) {
	h := newHarness(t, nil)
	id := createSession(t, h, keyA, map[string]any{})
	h.store.setDown(true)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/chat/completions", chatBody(map[string]any{"session_id": id})},
		{"POST", "/v1/sessions", map[string]any{}},
		{"GET", "/v1/sessions", nil},
		{"GET", "/v1/sessions/" + id, nil},
	} {
		r := h.do(c.method, c.path, keyA, c.body)
		if r.status != 503 || r.errCode(t) != CodeSessionStoreUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(nil)); r.status != 200 {
		t.Fatalf("session-less chat with the store down: %d", r.status)
	}
	h.store.setDown(false)
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"session_id": id})); r.status != 200 {
		t.Fatalf("after recovery: %d", r.status)
	}
	// no store configured at all
	h2 := newHarness(t, func(c *Config) { c.Sessions = nil })
	if r := h2.do("POST", "/v1/sessions", keyA, map[string]any{}); r.status != 503 {
		t.Fatal(r.status)
	}
}
