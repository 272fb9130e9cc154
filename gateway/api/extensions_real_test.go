package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/extensions"
	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/gateway/api/adapt"
)

// policyEngine is a zero-cost engine that records prompts and, when the request has a
// Policy (a WASM sampler), lets it choose every token among three candidates.
type policyEngine struct {
	mu      sync.Mutex // guards prompts
	prompts [][]int32
}

func (e *policyEngine) Stats() api.EngineStats { return api.EngineStats{} }

func (e *policyEngine) last() []int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.prompts[len(e.prompts)-1]
}

func (e *policyEngine) Submit(ctx context.Context, req api.GenRequest) (<-chan api.GenEvent, error) {
	e.mu.Lock()
	e.prompts = append(e.prompts, req.Prompt)
	e.mu.Unlock()
	ch := make(chan api.GenEvent, req.MaxTokens+1)
	go func() {
		defer close(ch)
		if req.Policy != nil {
			defer req.Policy.Close()
		}
		var recent []int32
		for i := 0; i < req.MaxTokens; i++ {
			id := int32(1000 + i)
			if req.Policy != nil {
				got, stop, err := req.Policy.Next(ctx, i, recent, []sample.Candidate{{ID: 1000, Logit: 3}, {ID: 1001, Logit: 2}, {ID: 1002, Logit: 1}})
				if err != nil {
					ch <- api.GenEvent{Finish: api.FinishError, Err: err}
					return
				}
				if stop {
					ch <- api.GenEvent{Finish: api.FinishStop, Usage: api.Usage{PromptTokens: len(req.Prompt), CompletionTokens: i}}
					return
				}
				id = got
			}
			recent = append(recent, id)
			ev := api.GenEvent{Text: "x", Tokens: []int32{id}}
			if i == req.MaxTokens-1 {
				ev.Finish, ev.Usage = api.FinishLength, api.Usage{PromptTokens: len(req.Prompt), CompletionTokens: req.MaxTokens}
			}
			ch <- ev
		}
	}()
	return ch, nil
}

func exampleModule(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "extensions", "examples", "build", name+".wasm"))
	if err != nil {
		t.Fatalf("example module %s not built (make -C extensions/examples; make test does): %v", name, err)
	}
	return b
}

func openHost(t *testing.T, dir string) *extensions.Host {
	t.Helper()
	cache, _ := filepath.Abs(filepath.Join("..", "..", "extensions", "examples", "build", "cache"))
	h, err := extensions.Open(context.Background(), extensions.Options{Dir: dir, CacheDir: cache, MaxModuleBytes: 8 << 20, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func send(t *testing.T, method, url, key, ct string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, url, b)
	}
	return res.StatusCode, m
}

func uploadBody(name, kind string, module []byte) (string, []byte) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("name", name)
	_ = w.WriteField("kind", kind)
	fw, _ := w.CreateFormFile("module", name+".wasm")
	_, _ = fw.Write(module)
	_ = w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// TestRealExtensions uploads the example WASM modules through the API and uses them in
// chat requests: the template extension renders the same prompt as the built-in template,
// and the sampler extension chooses the tokens.
func TestRealExtensions(t *testing.T) {
	tok := realTokenizer(t)
	eng := &policyEngine{}
	dir := t.TempDir()
	srv, err := api.New(api.Config{Engine: eng, Tokenizer: tok, Extensions: adapt.Extensions(openHost(t, dir)), MaxSeqLen: 4096,
		APIKeys: []string{"user"}, AdminKey: "admin", MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	ct, body := uploadBody("dsv3", "template", exampleModule(t, "dsv3template"))
	if code, m := send(t, "POST", ts.URL+"/v1/extensions", "user", ct, body); code != 403 || errCode(m) != api.CodePermissionDenied {
		t.Fatalf("tenant upload: %d %v", code, m)
	}
	code, m := send(t, "POST", ts.URL+"/v1/extensions", "admin", ct, body)
	if code != 201 || m["name"] != "dsv3" || m["kind"] != "template" || m["abi_version"].(float64) < 1 || len(m["sha256"].(string)) != 64 {
		t.Fatalf("upload: %d %v", code, m)
	}
	if code, m := send(t, "POST", ts.URL+"/v1/extensions", "admin", ct, body); code != 409 || errCode(m) != api.CodeExtensionExists {
		t.Fatalf("second upload: %d %v", code, m)
	}
	ct2, bad := uploadBody("junk", "sampler", []byte("definitely not wasm"))
	if code, m := send(t, "POST", ts.URL+"/v1/extensions", "admin", ct2, bad); code != 400 || errCode(m) != api.CodeInvalidModule {
		t.Fatalf("junk upload: %d %v", code, m)
	}
	ct3, topp := uploadBody("topp", "sampler", exampleModule(t, "topp"))
	if code, m := send(t, "POST", ts.URL+"/v1/extensions", "admin", ct3, topp); code != 201 {
		t.Fatalf("upload topp: %d %v", code, m)
	}
	if code, m := send(t, "GET", ts.URL+"/v1/extensions", "user", "", nil); code != 200 || len(m["data"].([]any)) != 2 {
		t.Fatalf("list: %d %v", code, m)
	}

	chat := func(extra string) (int, map[string]any) {
		b := `{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there, ünïcødé ✓"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"And now?"}],"max_tokens":4,"seed":5` + extra + `}`
		return send(t, "POST", ts.URL+"/v1/chat/completions", "user", "application/json", []byte(b))
	}
	if code, m := chat(""); code != 200 {
		t.Fatalf("built-in: %d %v", code, m)
	}
	builtin := eng.last()
	if code, m := chat(`,"extensions":{"template":"dsv3"}`); code != 200 {
		t.Fatalf("template extension: %d %v", code, m)
	}
	if got := eng.last(); !slices.Equal(got, builtin) {
		t.Fatalf("the WASM template's prompt differs from the built-in one:\n%v\n%v", got, builtin)
	}
	// the sampler extension picks the tokens: greedy (temperature 0) always takes the best candidate
	code, m = chat(`,"extensions":{"sampler":"topp","sampler_args":{"temperature":0}}`)
	if code != 200 || m["usage"].(map[string]any)["completion_tokens"].(float64) != 4 {
		t.Fatalf("sampler extension: %d %v", code, m)
	}
	if code, m := chat(`,"extensions":{"sampler":"dsv3"}`); code != 404 || errCode(m) != api.CodeExtensionNotFound {
		t.Fatalf("template used as sampler: %d %v", code, m)
	}
	if code, m := chat(`,"extensions":{"sampler":"topp","sampler_args":{"top_p":"lots"}}`); code != 422 || errCode(m) != api.CodeExtensionFailed {
		t.Fatalf("sampler rejecting its args: %d %v", code, m)
	}
	// modules persist: a new host on the same folder has them
	if _, ok := openHost(t, dir).Get("topp"); !ok {
		t.Fatal("uploaded module not reloaded from --extensions-dir")
	}
	if code, _ := send(t, "DELETE", ts.URL+"/v1/extensions/dsv3", "admin", "", nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, m := chat(`,"extensions":{"template":"dsv3"}`); code != 404 || errCode(m) != api.CodeExtensionNotFound {
		t.Fatalf("deleted template: %d %v", code, m)
	}
	if code, m := send(t, "GET", ts.URL+"/v1/extensions/dsv3", "user", "", nil); code != 404 || errCode(m) != api.CodeExtensionNotFound {
		t.Fatalf("get deleted: %d %v", code, m)
	}
}
