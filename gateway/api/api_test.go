package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

const (
	keyA     = "sk-tenant-a"
	keyB     = "sk-tenant-b"
	keyAdmin = "sk-admin"
)

type harness struct {
	t     *testing.T
	srv   *Server
	eng   *fakeEngine
	store *fakeStore
	ext   *fakeExt
	ts    *httptest.Server
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	h := newHarnessTB(t, mod)
	h.t = t
	return h
}

// newHarnessTB builds the harness for any testing.TB (fuzz targets, benchmarks).
func newHarnessTB(t testing.TB, mods ...func(*Config)) *harness {
	t.Helper()
	h := &harness{eng: newFakeEngine(), store: newFakeStore(), ext: newFakeExt()}
	cfg := Config{
		Engine: h.eng, Tokenizer: fakeTok{}, Sessions: h.store, Extensions: h.ext,
		MaxSeqLen: 256, APIKeys: []string{keyA, keyB}, AdminKey: keyAdmin,
		MaxBodyBytes: 8 << 10, CORSOrigins: []string{"https://chat.example"},
		Static: fstest.MapFS{"index.html": {Data: []byte("<html>dsgate</html>")}, "app.js": {Data: []byte("let x")}},
	}
	for _, mod := range mods {
		if mod != nil {
			mod(&cfg)
		}
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(h.ts.Close)
	return h
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	return m
}

func (r resp) errCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", r.body)
	}
	for _, f := range []string{"message", "type", "code"} {
		if s, _ := e[f].(string); s == "" {
			t.Fatalf("error.%s missing in %s", f, r.body)
		}
	}
	return e["code"].(string)
}

func (h *harness) do(method, path, key string, body any, hdr ...string) resp {
	h.t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.ts.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func chatBody(extra map[string]any) map[string]any {
	m := map[string]any{"model": "deepseek_v3", "messages": []map[string]any{{"role": "user", "content": "hi"}}, "seed": 3, "max_tokens": 5}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

// sseEvents splits an SSE body into its data payloads.
func sseEvents(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "data: ") {
			t.Fatalf("unexpected SSE line %q", line)
		}
		out = append(out, strings.TrimPrefix(line, "data: "))
	}
	return out
}

func TestHealthAndReady(t *testing.T) {
	h := newHarness(t, nil)
	if r := h.do("GET", "/healthz", "", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := h.do("GET", "/readyz", "", nil); r.status != 200 || r.json(t)["status"] != "ready" {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
	h.store.setDown(true)
	r := h.do("GET", "/readyz", "", nil)
	if r.status != 503 || !strings.Contains(string(r.body), "sessions") {
		t.Fatalf("readyz with store down: %d %s", r.status, r.body)
	}
	var modelErr error
	hm := newHarness(t, func(c *Config) { c.ModelHealth = func() error { return modelErr } })
	if r := hm.do("GET", "/readyz", "", nil); r.status != 200 {
		t.Fatalf("readyz with a healthy model: %d %s", r.status, r.body)
	}
	modelErr = errors.New("cluster: lost node 1")
	if r := hm.do("GET", "/readyz", "", nil); r.status != 503 || !strings.Contains(string(r.body), "lost node 1") {
		t.Fatalf("readyz with a failed model: %d %s", r.status, r.body)
	}
}

func TestAuth(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name, method, path, key string
		body                    any
		status                  int
		code                    string
	}{
		{"no key", "GET", "/v1/models", "", nil, 401, CodeInvalidAPIKey},
		{"wrong key", "GET", "/v1/models", "sk-nope", nil, 401, CodeInvalidAPIKey},
		{"tenant key", "GET", "/v1/models", keyA, nil, 200, ""},
		{"admin key works as a tenant", "GET", "/v1/models", keyAdmin, nil, 200, ""},
		{"chat needs key", "POST", "/v1/chat/completions", "", chatBody(nil), 401, CodeInvalidAPIKey},
		{"metrics needs key", "GET", "/metrics", "", nil, 401, CodeInvalidAPIKey},
		{"sessions need key", "GET", "/v1/sessions", "", nil, 401, CodeInvalidAPIKey},
		{"upload needs admin", "POST", "/v1/extensions", keyA, "x", 403, CodePermissionDenied},
		{"delete ext needs admin", "DELETE", "/v1/extensions/echo", keyA, nil, 403, CodePermissionDenied},
		{"healthz open", "GET", "/healthz", "", nil, 200, ""},
		{"page open", "GET", "/", "", nil, 200, ""},
		{"asset open", "GET", "/app.js", "", nil, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(c.method, c.path, c.key, c.body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if c.code != "" && r.errCode(t) != c.code {
				t.Fatalf("code %s, want %s", r.errCode(t), c.code)
			}
			if r.header.Get(HeaderRequestID) == "" {
				t.Fatal("no X-Request-Id")
			}
		})
	}
	if Tenant(keyA) == Tenant(keyB) || strings.Contains(Tenant(keyA), keyA) {
		t.Fatal("tenant ids must differ per key and not contain the key")
	}
}

func TestOpenDevMode(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.APIKeys, c.AdminKey = nil, "" })
	if !h.srv.OpenDevMode() {
		t.Fatal("want open dev mode")
	}
	if r := h.do("GET", "/v1/models", "", nil); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestModelsAndStatic(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ModelName = "my-model" })
	m := h.do("GET", "/v1/models", keyA, nil).json(t)
	data := m["data"].([]any)
	if m["object"] != "list" || len(data) != 1 || data[0].(map[string]any)["id"] != "my-model" {
		t.Fatalf("models: %v", m)
	}
	if r := h.do("GET", "/v1/models/my-model", keyA, nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := h.do("GET", "/v1/models/other", keyA, nil); r.status != 404 || r.errCode(t) != CodeModelNotFound {
		t.Fatal(r.status)
	}
	r := h.do("GET", "/", "", nil)
	if r.status != 200 || string(r.body) != "<html>dsgate</html>" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %q %s", r.status, r.body, r.header.Get("Content-Type"))
	}
	if r := h.do("GET", "/nope.js", "", nil); r.status != 404 || r.errCode(t) != CodeNotFound {
		t.Fatalf("missing asset: %d", r.status)
	}
	if r := h.do("GET", "/v1/unknown", keyA, nil); r.status != 404 || r.errCode(t) != CodeNotFound {
		t.Fatalf("unknown route: %d %s", r.status, r.body)
	}
	if r := h.do("PUT", "/v1/models", keyA, nil); r.status != 405 || r.errCode(t) != CodeMethodNotAllowed {
		t.Fatalf("405: %d %s", r.status, r.body)
	}
}

func TestChatNonStreaming(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(nil))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var cc struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Index        int `json:"index"`
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal(r.body, &cc); err != nil {
		t.Fatal(err)
	}
	if cc.Object != "chat.completion" || !strings.HasPrefix(cc.ID, "chatcmpl-") || cc.Model != "deepseek_v3" || len(cc.Choices) != 1 {
		t.Fatalf("shape: %s", r.body)
	}
	ch := cc.Choices[0]
	if ch.Message.Role != "assistant" || len(ch.Message.Content) != 5 || ch.FinishReason != "length" {
		t.Fatalf("choice: %+v", ch)
	}
	// prompt = template rendering of the messages, tokenized
	wantPrompt := fakeTok{}.Encode("<bos><U>hi<A>", false)
	req := h.eng.lastRequest()
	if fmt.Sprint(req.Prompt) != fmt.Sprint(wantPrompt) || req.MaxTokens != 5 || req.Tenant != Tenant(keyA) {
		t.Fatalf("engine request: %+v", req)
	}
	if st := r.header.Get("Server-Timing"); !strings.Contains(st, "engine;dur=") || !strings.Contains(st, "gateway;dur=") {
		t.Fatalf("Server-Timing %q", st)
	}
	if cc.Usage.PromptTokens != len(wantPrompt) || cc.Usage.CompletionTokens != 5 || cc.Usage.TotalTokens != len(wantPrompt)+5 {
		t.Fatalf("usage %+v", cc.Usage)
	}
	// sampling fields reach the engine
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
		"repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5, "stop": "zz", "max_tokens": nil, "max_completion_tokens": 7}))
	req = h.eng.lastRequest()
	sp := req.Sampling
	if sp.Temperature != 0.5 || sp.TopP != 0.9 || sp.TopK != 40 || sp.MinP != 0.05 || sp.RepetitionPenalty != 1.1 ||
		sp.PresencePenalty != 0.5 || sp.FrequencyPenalty != -0.5 || *sp.Seed != 3 || req.MaxTokens != 7 || fmt.Sprint(req.StopStrings) != "[zz]" {
		t.Fatalf("sampling %+v %+v", sp, req)
	}
	// max_tokens absent: the rest of the context
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"max_tokens": nil}))
	if req := h.eng.lastRequest(); req.MaxTokens != 256-len(wantPrompt) {
		t.Fatalf("default max tokens %d", req.MaxTokens)
	}
	// EOS stop -> finish_reason stop
	h.eng.set(func(f *fakeEngine) { f.stopAfter = 2 })
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(nil))
	if fr := r.json(t)["choices"].([]any)[0].(map[string]any)["finish_reason"]; fr != "stop" {
		t.Fatalf("finish %v", fr)
	}
}

type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Logprobs     any     `json:"logprobs"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct{ Code, Message string } `json:"error"`
}

func parseChunks(t *testing.T, body []byte) ([]chunk, bool) {
	t.Helper()
	evs := sseEvents(t, body)
	done := len(evs) > 0 && evs[len(evs)-1] == "[DONE]"
	if done {
		evs = evs[:len(evs)-1]
	}
	var out []chunk
	for _, e := range evs {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %q: %v", e, err)
		}
		out = append(out, c)
	}
	return out, done
}

func TestChatStreaming(t *testing.T) {
	h := newHarness(t, nil)
	full := h.do("POST", "/v1/chat/completions", keyA, chatBody(nil)).json(t)
	want := full["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)

	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %s", r.status, r.header)
	}
	chunks, done := parseChunks(t, r.body)
	if !done {
		t.Fatalf("no [DONE]: %s", r.body)
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Fatalf("first delta has no role: %s", r.body)
	}
	var sb strings.Builder
	var finish string
	for i, c := range chunks {
		if c.Object != "chat.completion.chunk" || c.ID != chunks[0].ID {
			t.Fatalf("chunk %d: %+v", i, c)
		}
		if len(c.Choices) == 1 {
			if c.Choices[0].Delta.Content != nil {
				sb.WriteString(*c.Choices[0].Delta.Content)
			}
			if c.Choices[0].FinishReason != nil {
				finish = *c.Choices[0].FinishReason
			}
		}
	}
	if sb.String() != want || finish != "length" {
		t.Fatalf("streamed %q finish %q, non-streamed %q", sb.String(), finish, want)
	}
	last := chunks[len(chunks)-1]
	if last.Usage == nil || len(last.Choices) != 0 || last.Usage.CompletionTokens != 5 {
		t.Fatalf("usage chunk: %+v", last)
	}
	// without include_usage: no usage chunk
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true}))
	chunks, _ = parseChunks(t, r.body)
	for _, c := range chunks {
		if c.Usage != nil {
			t.Fatal("usage without include_usage")
		}
	}
}

func TestLogprobs(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"logprobs": true, "top_logprobs": 2}))
	var cc struct {
		Choices []struct {
			Logprobs struct {
				Content []struct {
					Token       string  `json:"token"`
					Logprob     float64 `json:"logprob"`
					Bytes       []int   `json:"bytes"`
					TopLogprobs []struct {
						Token   string  `json:"token"`
						Logprob float64 `json:"logprob"`
					} `json:"top_logprobs"`
				} `json:"content"`
			} `json:"logprobs"`
			Message struct{ Content string }
		}
	}
	if err := json.Unmarshal(r.body, &cc); err != nil {
		t.Fatal(err)
	}
	lp := cc.Choices[0].Logprobs.Content
	if len(lp) != 5 || len(lp[0].TopLogprobs) != 2 || lp[0].Logprob != -0.5 || lp[0].Token != cc.Choices[0].Message.Content[:1] || len(lp[0].Bytes) != 1 {
		t.Fatalf("logprobs %s", r.body)
	}
	if req := h.eng.lastRequest(); !req.Logprobs || req.TopLogprobs != 2 {
		t.Fatalf("engine request %+v", req)
	}
	r = h.do("POST", "/v1/completions", keyA, map[string]any{"prompt": "abc", "max_tokens": 3, "logprobs": 2})
	var cp struct {
		Choices []struct {
			Logprobs struct {
				Tokens        []string             `json:"tokens"`
				TokenLogprobs []float64            `json:"token_logprobs"`
				TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			} `json:"logprobs"`
		}
	}
	if err := json.Unmarshal(r.body, &cp); err != nil {
		t.Fatal(err)
	}
	if l := cp.Choices[0].Logprobs; len(l.Tokens) != 3 || len(l.TokenLogprobs) != 3 || len(l.TopLogprobs[0]) != 2 {
		t.Fatalf("completion logprobs %s", r.body)
	}
}

func TestCompletions(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/completions", keyA, map[string]any{"model": "deepseek_v3", "prompt": "once upon", "seed": 1})
	m := r.json(t)
	if r.status != 200 || m["object"] != "text_completion" || !strings.HasPrefix(m["id"].(string), "cmpl-") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	text := m["choices"].([]any)[0].(map[string]any)["text"].(string)
	if len(text) != 16 {
		t.Fatalf("default max_tokens should be 16, got %q", text)
	}
	if req := h.eng.lastRequest(); fmt.Sprint(req.Prompt) != fmt.Sprint(fakeTok{}.Encode("once upon", true)) {
		t.Fatalf("prompt %v", req.Prompt)
	}
	for _, p := range []any{[]string{"once upon"}, []int{2, 3, 4}} {
		if r := h.do("POST", "/v1/completions", keyA, map[string]any{"prompt": p, "max_tokens": 2}); r.status != 200 {
			t.Fatalf("prompt %v: %d %s", p, r.status, r.body)
		}
	}
	r = h.do("POST", "/v1/completions", keyA, map[string]any{"prompt": "once upon", "seed": 1, "stream": true, "stream_options": map[string]any{"include_usage": true}})
	chunks, done := parseChunks(t, r.body)
	var sb strings.Builder
	for _, c := range chunks {
		if c.Object != "text_completion" {
			t.Fatalf("object %q", c.Object)
		}
		if len(c.Choices) > 0 {
			sb.WriteString(c.Choices[0].Text)
		}
	}
	if !done || sb.String() != text || chunks[len(chunks)-1].Usage == nil {
		t.Fatalf("stream %q vs %q: %s", sb.String(), text, r.body)
	}
}

func TestLegacyChat(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", "/chat", keyA, map[string]any{"prompt": "hello", "max_tokens": 4})
	m := r.json(t)
	if r.status != 200 || m["object"] != "chat.completion" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	c := m["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	if len(c) != 4 || m["usage"].(map[string]any)["completion_tokens"].(float64) != 4 {
		t.Fatalf("%s", r.body)
	}
	if fmt.Sprint(h.eng.lastRequest().Prompt) != fmt.Sprint(fakeTok{}.Encode("<bos><U>hello<A>", false)) {
		t.Fatal("legacy prompt is not one user turn")
	}
	for _, b := range []any{map[string]any{}, map[string]any{"prompt": ""}, map[string]any{"prompt": 3}, "{"} {
		r := h.do("POST", "/chat", keyA, b)
		if r.status != 400 || r.errCode(t) != CodeInvalidRequest {
			t.Fatalf("%v: %d %s", b, r.status, r.body)
		}
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, nil)
	big := strings.Repeat("x", 9<<10)
	cases := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"malformed JSON", "/v1/chat/completions", `{"messages": [`, 400, CodeInvalidRequest},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, CodeInvalidRequest},
		{"trailing data", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]} {}`, 400, CodeInvalidRequest},
		{"empty body", "/v1/chat/completions", ``, 400, CodeInvalidRequest},
		{"max_tokens wrong type", "/v1/chat/completions", chatBody(map[string]any{"max_tokens": "ten"}), 400, CodeInvalidRequest},
		{"messages wrong type", "/v1/chat/completions", chatBody(map[string]any{"messages": "hi"}), 400, CodeInvalidRequest},
		{"content wrong type", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{map[string]any{"role": "user", "content": 5}}}), 400, CodeInvalidRequest},
		{"empty messages", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{}}), 400, CodeInvalidRequest},
		{"missing messages", "/v1/chat/completions", chatBody(map[string]any{"messages": nil}), 400, CodeInvalidRequest},
		{"bad role", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{map[string]any{"role": "wizard", "content": "x"}}}), 400, CodeInvalidRequest},
		{"missing content", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{map[string]any{"role": "user"}}}), 400, CodeInvalidRequest},
		{"image part", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "image_url"}}}}}), 400, CodeInvalidRequest},
		{"n=2", "/v1/chat/completions", chatBody(map[string]any{"n": 2}), 400, CodeInvalidRequest},
		{"max_tokens 0", "/v1/chat/completions", chatBody(map[string]any{"max_tokens": 0}), 400, CodeInvalidRequest},
		{"max_tokens beyond context", "/v1/chat/completions", chatBody(map[string]any{"max_tokens": 1000}), 400, CodeContextLengthExceeded},
		{"prompt+max_tokens beyond context", "/v1/chat/completions", chatBody(map[string]any{"max_tokens": 250}), 400, CodeContextLengthExceeded},
		{"prompt beyond context", "/v1/chat/completions", chatBody(map[string]any{"max_tokens": nil, "messages": []any{map[string]any{"role": "user", "content": strings.Repeat("y", 300)}}}), 400, CodeContextLengthExceeded},
		{"temperature range", "/v1/chat/completions", chatBody(map[string]any{"temperature": 3}), 400, CodeInvalidRequest},
		{"top_p range", "/v1/chat/completions", chatBody(map[string]any{"top_p": 1.5}), 400, CodeInvalidRequest},
		{"top_k negative", "/v1/chat/completions", chatBody(map[string]any{"top_k": -1}), 400, CodeInvalidRequest},
		{"top_logprobs without logprobs", "/v1/chat/completions", chatBody(map[string]any{"top_logprobs": 2}), 400, CodeInvalidRequest},
		{"top_logprobs range", "/v1/chat/completions", chatBody(map[string]any{"logprobs": true, "top_logprobs": 21}), 400, CodeInvalidRequest},
		{"stop wrong type", "/v1/chat/completions", chatBody(map[string]any{"stop": 5}), 400, CodeInvalidRequest},
		{"too many stops", "/v1/chat/completions", chatBody(map[string]any{"stop": []string{"a", "b", "c", "d", "e"}}), 400, CodeInvalidRequest},
		{"stream_options without stream", "/v1/chat/completions", chatBody(map[string]any{"stream_options": map[string]any{"include_usage": true}}), 400, CodeInvalidRequest},
		{"other model", "/v1/chat/completions", chatBody(map[string]any{"model": "gpt-4"}), 404, CodeModelNotFound},
		{"body too large", "/v1/chat/completions", chatBody(map[string]any{"messages": []any{map[string]any{"role": "user", "content": big}}}), 413, CodeRequestTooLarge},
		{"unknown extension", "/v1/chat/completions", chatBody(map[string]any{"extensions": map[string]any{"template": "nope"}}), 404, CodeExtensionNotFound},
		{"unknown sampler", "/v1/chat/completions", chatBody(map[string]any{"extensions": map[string]any{"sampler": "nope"}}), 404, CodeExtensionNotFound},
		{"sampler_args alone", "/v1/chat/completions", chatBody(map[string]any{"extensions": map[string]any{"sampler_args": map[string]any{"a": 1}}}), 400, CodeInvalidRequest},
		{"completions no prompt", "/v1/completions", map[string]any{"max_tokens": 2}, 400, CodeInvalidRequest},
		{"completions bad prompt", "/v1/completions", map[string]any{"prompt": map[string]any{}}, 400, CodeInvalidRequest},
		{"completions two prompts", "/v1/completions", map[string]any{"prompt": []string{"a", "b"}}, 400, CodeInvalidRequest},
		{"completions echo", "/v1/completions", map[string]any{"prompt": "a", "echo": true}, 400, CodeInvalidRequest},
		{"completions logprobs range", "/v1/completions", map[string]any{"prompt": "a", "logprobs": 9}, 400, CodeInvalidRequest},
		{"session bad body", "/v1/sessions", `{"system": 4}`, 400, CodeInvalidRequest},
		{"session metadata type", "/v1/sessions", `{"metadata": {"a": 1}}`, 400, CodeInvalidRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do("POST", c.path, keyA, c.body)
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	// Content-Type other than JSON
	req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Content-Type", "application/xml")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 415 {
		t.Fatalf("application/xml: %d", res.StatusCode)
	}
	// curl -d sends application/x-www-form-urlencoded; a JSON body is still accepted
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain; charset=utf-8", ""} {
		b, _ := json.Marshal(chatBody(nil))
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+keyA)
		req.Header.Set("Content-Type", ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("Content-Type %q: %d", ct, res.StatusCode)
		}
	}
}

func TestOverloaded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConcurrent = 1 })
	h.eng.set(func(f *fakeEngine) { f.block = make(chan struct{}) })
	h.eng.set(func(f *fakeEngine) { f.started = make(chan struct{}, 1) })
	var wg sync.WaitGroup
	wg.Add(1)
	var first resp
	go func() { defer wg.Done(); first = h.do("POST", "/v1/chat/completions", keyA, chatBody(nil)) }()
	<-h.eng.started
	r := h.do("POST", "/v1/chat/completions", keyB, chatBody(nil))
	if r.status != 503 || r.errCode(t) != CodeOverloaded || r.header.Get("Retry-After") == "" {
		t.Fatalf("%d %s %v", r.status, r.body, r.header)
	}
	close(h.eng.block)
	wg.Wait()
	if first.status != 200 {
		t.Fatalf("first: %d", first.status)
	}
	// the engine's own queue-full error
	h.eng.set(func(f *fakeEngine) { f.overloaded = true })
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(nil))
	if r.status != 503 || r.errCode(t) != CodeOverloaded || r.header.Get("Retry-After") != "1" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestStreamErrorAfterStart(t *testing.T) {
	h := newHarness(t, nil)
	h.eng.set(func(f *fakeEngine) { f.failAt, f.failErr = 2, fmt.Errorf("device lost") })
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true}))
	chunks, done := parseChunks(t, r.body)
	if r.status != 200 || !done {
		t.Fatalf("%d %s", r.status, r.body)
	}
	last := chunks[len(chunks)-1]
	if last.Error == nil || last.Error.Code != CodeEngineError {
		t.Fatalf("want an error event before [DONE]: %s", r.body)
	}
	if n := strings.Count(string(r.body), "[DONE]"); n != 1 {
		t.Fatalf("%d [DONE]s", n)
	}
	// the same failure without streaming is one JSON error
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(nil))
	if r.status != 500 || r.errCode(t) != CodeEngineError {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestExtensionsInChat(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"extensions": map[string]any{"template": "echo", "sampler": "first", "sampler_args": map[string]any{"k": 1}}}))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if c := r.json(t)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != "ZZZ" {
		t.Fatalf("sampler output %q", c)
	}
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"extensions": map[string]any{"sampler": "trap"}}))
	if r.status != 422 || r.errCode(t) != CodeExtensionFailed {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true, "extensions": map[string]any{"sampler": "trap"}}))
	chunks, done := parseChunks(t, r.body)
	if !done || chunks[len(chunks)-1].Error == nil || chunks[len(chunks)-1].Error.Code != CodeExtensionFailed {
		t.Fatalf("stream: %s", r.body)
	}
	// the server is fine for everyone else
	if r := h.do("POST", "/v1/chat/completions", keyB, chatBody(nil)); r.status != 200 {
		t.Fatal(r.status)
	}
}

func multipartBody(t *testing.T, fields map[string]string, module []byte) (string, []byte) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	if module != nil {
		fw, _ := w.CreateFormFile("module", "m.wasm")
		_, _ = fw.Write(module)
	}
	_ = w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

func TestExtensionRoutes(t *testing.T) {
	h := newHarness(t, nil)
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	upload := func(key string, fields map[string]string, module []byte) resp {
		ct, body := multipartBody(t, fields, module)
		return h.do("POST", "/v1/extensions", key, body, "Content-Type", ct)
	}
	r := upload(keyAdmin, map[string]string{"name": "mine", "kind": "sampler"}, wasm)
	if r.status != 201 || r.json(t)["name"] != "mine" || r.json(t)["abi_version"].(float64) != 1 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cases := []struct {
		name   string
		key    string
		fields map[string]string
		module []byte
		status int
		code   string
	}{
		{"exists", keyAdmin, map[string]string{"name": "mine", "kind": "sampler"}, wasm, 409, CodeExtensionExists},
		{"not wasm", keyAdmin, map[string]string{"name": "bad", "kind": "sampler"}, []byte("hello"), 400, CodeInvalidModule},
		{"too large", keyAdmin, map[string]string{"name": "big", "kind": "sampler"}, append(wasm, make([]byte, 2000)...), 413, CodeModuleTooLarge},
		{"way too large", keyAdmin, map[string]string{"name": "big", "kind": "sampler"}, make([]byte, 2<<20), 413, CodeModuleTooLarge},
		{"bad kind", keyAdmin, map[string]string{"name": "k", "kind": "shader"}, wasm, 400, CodeInvalidRequest},
		{"bad name", keyAdmin, map[string]string{"name": "../x", "kind": "sampler"}, wasm, 400, CodeInvalidRequest},
		{"no module", keyAdmin, map[string]string{"name": "m2", "kind": "sampler"}, nil, 400, CodeInvalidRequest},
		{"tenant key", keyA, map[string]string{"name": "m3", "kind": "sampler"}, wasm, 403, CodePermissionDenied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := upload(c.key, c.fields, c.module)
			if r.status != c.status || r.errCode(t) != c.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	if r := h.do("POST", "/v1/extensions", keyAdmin, "{}"); r.status != 400 {
		t.Fatalf("json upload: %d", r.status)
	}
	list := h.do("GET", "/v1/extensions", keyA, nil).json(t)["data"].([]any)
	if len(list) != 4 {
		t.Fatalf("list %v", list)
	}
	if r := h.do("GET", "/v1/extensions/mine", keyA, nil); r.status != 200 || r.json(t)["kind"] != "sampler" {
		t.Fatal(r.status)
	}
	if r := h.do("GET", "/v1/extensions/none", keyA, nil); r.status != 404 || r.errCode(t) != CodeExtensionNotFound {
		t.Fatal(r.status)
	}
	if r := h.do("DELETE", "/v1/extensions/mine", keyAdmin, nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := h.do("DELETE", "/v1/extensions/mine", keyAdmin, nil); r.status != 404 || r.errCode(t) != CodeExtensionNotFound {
		t.Fatal(r.status)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, nil)
	h.do("POST", "/v1/chat/completions", keyA, chatBody(nil))
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true}))
	h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"n": 3}))
	r := h.do("GET", "/metrics", keyA, nil)
	body := string(r.body)
	for _, want := range []string{
		`dsgate_http_requests_total{code="200",method="POST",route="/v1/chat/completions"} 2`,
		`dsgate_http_requests_total{code="400",method="POST",route="/v1/chat/completions"} 1`,
		`dsgate_http_request_duration_seconds_bucket{code="200",method="POST",route="/v1/chat/completions"`,
		`dsgate_time_to_first_token_seconds_count{route="/v1/chat/completions"} 2`,
		`dsgate_time_per_output_token_seconds_count{route="/v1/chat/completions"} 2`,
		`dsgate_engine_kv_blocks_used 3`,
		`dsgate_engine_generated_tokens_total 7`,
		`dsgate_tokens_total{kind="completion"} 10`,
		`dsgate_gateway_overhead_seconds_count{route="/v1/chat/completions"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestRequestIDAndCORS(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("GET", "/v1/models", keyA, nil, HeaderRequestID, "abc-123")
	if r.header.Get(HeaderRequestID) != "abc-123" {
		t.Fatalf("request id not echoed: %v", r.header)
	}
	r = h.do("GET", "/v1/models", keyA, nil, HeaderRequestID, "bad id")
	if id := r.header.Get(HeaderRequestID); id == "" || strings.Contains(id, " ") {
		t.Fatalf("insane id kept: %q", id)
	}
	r = h.do("OPTIONS", "/v1/chat/completions", "", nil, "Origin", "https://chat.example", "Access-Control-Request-Method", "POST")
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://chat.example" {
		t.Fatalf("preflight %d %v", r.status, r.header)
	}
	r = h.do("GET", "/v1/models", keyA, nil, "Origin", "https://evil.example")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed an unknown origin")
	}
}

func TestClientDisconnectCancels(t *testing.T) {
	h := newHarness(t, nil)
	h.eng.set(func(f *fakeEngine) { f.delay = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	b, _ := json.Marshal(chatBody(map[string]any{"stream": true, "max_tokens": 200}))
	req, _ := http.NewRequestWithContext(ctx, "POST", h.ts.URL+"/v1/chat/completions", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+keyA)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_, _ = res.Body.Read(buf)
	cancel()
	res.Body.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		h.eng.mu.Lock()
		n := h.eng.cancelled
		h.eng.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("generation not cancelled after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDrainEndsStreams(t *testing.T) {
	h := newHarness(t, nil)
	h.eng.set(func(f *fakeEngine) { f.delay = 10 * time.Millisecond })
	h.eng.set(func(f *fakeEngine) { f.started = make(chan struct{}, 1) })
	var r resp
	done := make(chan struct{})
	go func() {
		r = h.do("POST", "/v1/chat/completions", keyA, chatBody(map[string]any{"stream": true, "max_tokens": 200}))
		close(done)
	}()
	<-h.eng.started
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	chunks, ok := parseChunks(t, r.body)
	if !ok || chunks[len(chunks)-1].Error == nil {
		t.Fatalf("drained stream must end with an error event and [DONE]: %s", r.body)
	}
	// after Drain new generations are refused
	if r := h.do("POST", "/v1/chat/completions", keyA, chatBody(nil)); r.status != 503 || r.errCode(t) != CodeOverloaded {
		t.Fatal(r.status)
	}
	if r := h.do("GET", "/readyz", "", nil); r.status != 503 {
		t.Fatal("readyz while draining")
	}
}
