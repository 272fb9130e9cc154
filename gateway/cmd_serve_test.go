package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildGateway compiles the gateway binary into a temp folder (the real process, so that
// signals, exit status and flags are tested as users meet them).
func buildGateway(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// serveProc is a running `gateway serve`.
type serveProc struct {
	cmd  *exec.Cmd
	url  string
	mu   sync.Mutex // guards logs
	logs bytes.Buffer
	done chan error
}

func (p *serveProc) log() string { p.mu.Lock(); defer p.mu.Unlock(); return p.logs.String() }

// startServe runs `gateway serve` on a free loopback port and waits for its "serving" line.
func startServe(t *testing.T, bin string, env []string, args ...string) *serveProc {
	t.Helper()
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	p := &serveProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "serving" {
				addr <- m["addr"].(string)
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
	})
	select {
	case a := <-addr:
		p.url = "http://" + a
	case err := <-p.done:
		t.Fatalf("gateway serve exited early: %v\n%s", err, p.log())
	case <-time.After(2 * time.Minute):
		t.Fatalf("gateway serve did not start\n%s", p.log())
	}
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *serveProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(within):
		t.Fatalf("gateway did not exit within %v\n%s", within, p.log())
	}
	return -1
}

// testCkpt is core/model's small HF-format test checkpoint (vocab 512); requests use
// token-id prompts so that every id is inside its vocabulary.
const testCkpt = "../core/model/testdata/v3"

// TestServeBinary runs the real `gateway serve` process (built once): graceful shutdown
// during streams, and the whole chain on a demo checkpoint driven by the official openai
// npm client.
func TestServeBinary(t *testing.T) {
	bin := buildGateway(t)
	tokDir := tokenizerDir(t)
	t.Run("shutdown", func(t *testing.T) { testServeShutdown(t, bin, tokDir) })
	t.Run("demo", func(t *testing.T) { testServeDemo(t, bin, tokDir) })
}

func testServeShutdown(t *testing.T, bin, tokDir string) {
	cases := []struct {
		name        string
		drain       string
		wantFinish  bool // the stream completes normally; else it is cut with an error event
		maxTokens   int
		readBetween time.Duration
	}{
		{"stream finishes within the drain timeout", "60s", true, 60, 0},
		{"drain timeout cuts the stream cleanly", "1ms", false, 100, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startServe(t, bin, nil, "--ckpt-path", testCkpt, "--tokenizer", tokDir, "--drain-timeout", c.drain)
			body := fmt.Sprintf(`{"prompt":[5,6,7,8],"max_tokens":%d,"temperature":0,"stream":true}`, c.maxTokens)
			res, err := http.Post(p.url+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != 200 {
				b, _ := io.ReadAll(res.Body)
				t.Fatalf("%d %s", res.StatusCode, b)
			}
			rd := bufio.NewReader(res.Body)
			first, err := rd.ReadString('\n')
			if err != nil || !strings.HasPrefix(first, "data: ") {
				t.Fatalf("first event %q: %v", first, err)
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(rd)
			if err != nil {
				t.Fatalf("stream broken after SIGTERM: %v", err)
			}
			all := first + string(rest)
			if !strings.HasSuffix(strings.TrimSpace(all), "data: [DONE]") {
				t.Fatalf("stream did not end with [DONE]:\n%s", all)
			}
			gotFinish := strings.Contains(all, `"finish_reason":"length"`) || strings.Contains(all, `"finish_reason":"stop"`)
			gotError := strings.Contains(all, `"error":`)
			if c.wantFinish && (!gotFinish || gotError) {
				t.Fatalf("want a normal end:\n%s", all)
			}
			if !c.wantFinish && !gotFinish && !gotError {
				t.Fatalf("want an error event or a finish before [DONE]:\n%s", all)
			}
			t.Logf("%d events after SIGTERM; finished normally: %v, error event: %v", strings.Count(string(rest), "data: "), gotFinish, gotError)
			if code := p.wait(t, 60*time.Second); code != 0 {
				t.Fatalf("exit status %d\n%s", code, p.log())
			}
			// no new connections after shutdown
			if _, err := http.Get(p.url + "/healthz"); err == nil {
				t.Fatal("server still accepts connections after exit")
			}
		})
	}
}

func tokenizerDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("DSGATE_CACHE")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "dsgate")
	}
	dir = filepath.Join(dir, "tokenizer", "deepseek_v3")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("the DeepSeek-V3 tokenizer is required (scripts/fetch-tokenizer.sh): %v", err)
	}
	return dir
}

// testServeDemo writes a demo checkpoint with `gateway init-demo`, serves it with keys and
// runs tests/node/openai_client.mjs against it, then a two-turn session whose second turn
// reuses the first turn's KV blocks, then SIGTERM.
func testServeDemo(t *testing.T, bin, tokDir string) {
	ckpt := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command(bin, "init-demo", ckpt, "--tokenizer", tokDir, "--max-seq-len", "1024", "--max-batch-size", "4").CombinedOutput(); err != nil {
		t.Fatalf("init-demo: %v\n%s", err, out)
	}
	p := startServe(t, bin, []string{"GATEWAY_API_KEYS=sk-node,sk-other", "GATEWAY_ADMIN_KEY=sk-admin"},
		"--ckpt-path", ckpt, "--model-name", "deepseek_v3", "--max-seq-len", "1024", "--max-batch-size", "4")
	if r, err := http.Get(p.url + "/readyz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", r, err)
	}
	if r, err := http.Get(p.url + "/"); err != nil || r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("chat page: %v %v", r, err)
	}
	out := runNode(t, p.url, "sk-node", "deepseek_v3")
	t.Logf("openai client: %s", out)

	// sessions: the second turn's prompt starts with the first turn's ids, so the engine's
	// prefix cache serves them
	call := func(method, path, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-node")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 300 || json.Unmarshal(b, &m) != nil {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
		return m
	}
	id := call("POST", "/v1/sessions", `{"system":"You are terse."}`)["id"].(string)
	turn := `{"session_id":"` + id + `","messages":[{"role":"user","content":"%s"}],"max_tokens":8,"seed":3}`
	first := call("POST", "/v1/chat/completions", fmt.Sprintf(turn, "Name three colors."))
	second := call("POST", "/v1/chat/completions", fmt.Sprintf(turn, "And three more?"))
	u1, u2 := first["usage"].(map[string]any), second["usage"].(map[string]any)
	cached := u2["prompt_tokens_details"].(map[string]any)["cached_tokens"].(float64)
	t.Logf("turn 1 prompt %v tokens; turn 2 prompt %v tokens, %v from the prefix cache", u1["prompt_tokens"], u2["prompt_tokens"], cached)
	// turn 1's prompt and reply open turn 2's prompt; every whole KV block of them (16
	// tokens, model.Options default) must come from the cache
	turn1 := int(u1["prompt_tokens"].(float64) + u1["completion_tokens"].(float64))
	if want := 16 * (turn1 / 16); cached == 0 || int(cached) < want {
		t.Fatalf("turn 2 reused %v cached tokens; turn 1 held %d tokens (%d in whole blocks)", cached, turn1, want)
	}
	if msgs := call("GET", "/v1/sessions/"+id, "")["messages"].([]any); len(msgs) != 4 {
		t.Fatalf("history: %v", msgs)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("exit status %d\n%s", code, p.log())
	}
}

// runNode runs tests/node/openai_client.mjs (the official openai npm client) against url.
// node and tests/node/node_modules are required (make test installs them).
func runNode(t *testing.T, url, key, model string) string {
	t.Helper()
	dir := filepath.Join("..", "tests", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Fatalf("tests/node/node_modules/openai is missing (make deps runs npm ci there): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required: %v", err)
	}
	cmd := exec.Command(node, "openai_client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DSGATE_URL="+url, "DSGATE_KEY="+key, "DSGATE_MODEL="+model)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openai client: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestServeOptionPrecedence(t *testing.T) {
	cases := []struct {
		name    string
		environ map[string]string
		args    []string
		check   func(t *testing.T, o serveOptions)
	}{
		{"defaults", nil, nil, func(t *testing.T, o serveOptions) {
			if o.Addr != "127.0.0.1:8080" || o.ModelName != "deepseek_v3" || o.Backend != "cpu" || o.DrainTimeout != 30*time.Second || o.MaxQueue != 256 || o.RedisURL != "" {
				t.Fatalf("%+v", o)
			}
		}},
		{"env over default", map[string]string{"GATEWAY_ADDR": "0.0.0.0:9000", "GATEWAY_MAX_QUEUE": "7", "GATEWAY_REDIS_URL": "redis://h:6379/0",
			"GATEWAY_API_KEYS": "a,b", "GATEWAY_ADMIN_KEY": "adm", "GATEWAY_CORS_ORIGINS": "https://x,https://y", "GATEWAY_SESSION_TTL": "2h"}, nil,
			func(t *testing.T, o serveOptions) {
				if o.Addr != "0.0.0.0:9000" || o.MaxQueue != 7 || o.RedisURL != "redis://h:6379/0" || len(o.APIKeys) != 2 || o.AdminKey != "adm" ||
					len(o.CORSOrigins) != 2 || o.SessionTTL != 2*time.Hour {
					t.Fatalf("%+v", o)
				}
			}},
		{"flag over env", map[string]string{"GATEWAY_ADDR": "0.0.0.0:9000", "GATEWAY_MODEL_NAME": "env-name"},
			[]string{"--addr", "127.0.0.1:1", "--model-name", "flag-name", "--drain-timeout", "5s", "--cors-origins", "*"},
			func(t *testing.T, o serveOptions) {
				if o.Addr != "127.0.0.1:1" || o.ModelName != "flag-name" || o.DrainTimeout != 5*time.Second || o.CORSOrigins[0] != "*" {
					t.Fatalf("%+v", o)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, _, _, _, err := parseServe(&cmdEnv{stderr: &stderr, environ: c.environ}, c.args)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, o)
		})
	}
	var stderr bytes.Buffer
	if _, _, _, _, err := parseServe(&cmdEnv{stderr: &stderr, environ: map[string]string{"GATEWAY_MAX_QUEUE": "many"}}, nil); err == nil {
		t.Fatal("a malformed variable must fail")
	}
	if _, _, _, _, err := parseServe(&cmdEnv{stderr: &stderr}, []string{"stray"}); err == nil {
		t.Fatal("a stray argument must fail")
	}
}

func TestListenAddr(t *testing.T) {
	cases := []struct {
		addr             string
		fromFlag, noKeys bool
		want             string
	}{
		{"127.0.0.1:8080", false, true, "127.0.0.1:8080"},
		{"0.0.0.0:8080", false, true, "127.0.0.1:8080"}, // open dev mode, address from env: loopback
		{"0.0.0.0:8080", true, true, "0.0.0.0:8080"},    // --addr says otherwise
		{":9000", false, true, "127.0.0.1:9000"},
		{"[::1]:8080", false, true, "[::1]:8080"},
		{"localhost:8080", false, true, "localhost:8080"},
		{"0.0.0.0:8080", false, false, "0.0.0.0:8080"}, // keys configured
	}
	for _, c := range cases {
		if got := listenAddr(c.addr, c.fromFlag, c.noKeys); got != c.want {
			t.Errorf("listenAddr(%q, flag=%v, dev=%v) = %q, want %q", c.addr, c.fromFlag, c.noKeys, got, c.want)
		}
	}
	if redactURL("redis://:secret@h:6379/0") != "redis://***@h:6379/0" {
		t.Fatal(redactURL("redis://:secret@h:6379/0"))
	}
}
