package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// The offline and console subcommands (batch, chat, bench, scripts/inference.sh) are
// tested on the real binary against a demo checkpoint, as users run them.

var shared struct {
	once sync.Once
	dir  string
	bin  string
	ckpt string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// demoSetup builds the binary and a demo checkpoint once for all tests that need them.
func demoSetup(t *testing.T) (bin, ckpt string) {
	t.Helper()
	tok := tokenizerDir(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "dsgate-cli-")
		if shared.err != nil {
			return
		}
		shared.bin = filepath.Join(shared.dir, "gateway")
		if out, err := exec.Command("go", "build", "-o", shared.bin, ".").CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		shared.ckpt = filepath.Join(shared.dir, "demo")
		if out, err := exec.Command(shared.bin, "init-demo", shared.ckpt, "--tokenizer", tok, "--seed", "3").CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("init-demo: %v\n%s", err, out)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.bin, shared.ckpt
}

func batchLines(t *testing.T, out []byte) []batchResult {
	t.Helper()
	var res []batchResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	for sc.Scan() {
		var r batchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad JSONL line %q: %v", sc.Text(), err)
		}
		res = append(res, r)
	}
	return res
}

// chatAnswer asks /v1/chat/completions for a greedy answer.
func chatAnswer(t *testing.T, base, prompt string, maxTokens int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "deepseek_v3", "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": maxTokens, "temperature": 0})
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		t.Fatalf("chat completion: %d %s", resp.StatusCode, b)
	}
	return r.Choices[0].Message.Content
}

func TestBatchOddInputsMatchTheAPI(t *testing.T) {
	bin, ckpt := demoSetup(t)
	long := strings.Repeat("a long line of words, ", 400) // ~2,400 tokens
	var in strings.Builder
	prompts := []string{"Hello there", "日本語のテキスト 😀", long, "tabs\tand  spaces"}
	in.WriteString("\r\n")
	for i, p := range prompts {
		in.WriteString(p)
		if i%2 == 0 {
			in.WriteString("\r\n\n")
		} else {
			in.WriteString("\n  \n")
		}
	}
	for i := 0; i < 300-len(prompts); i++ {
		fmt.Fprintf(&in, "prompt number %d\n", i)
	}
	input := filepath.Join(t.TempDir(), "inputs.txt")
	if err := os.WriteFile(input, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(t.TempDir(), "out.jsonl")
	cmd := exec.Command(bin, "batch", input, "--ckpt-path", ckpt, "--output", outPath, "--max-tokens", "4",
		"--temperature", "0", "--max-batch-size", "8", "--log-level", "warn")
	stderr, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("batch: %v\n%s", err, stderr)
	}
	if !strings.Contains(string(stderr), "300 prompts (5 blank lines skipped), 0 failed") {
		t.Fatalf("summary line missing or wrong:\n%s", stderr)
	}
	data, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	res := batchLines(t, data)
	if len(res) != 300 {
		t.Fatalf("%d results for 300 prompts", len(res))
	}
	for i, r := range res {
		want := ""
		if i < len(prompts) {
			want = prompts[i]
		} else {
			want = fmt.Sprintf("prompt number %d", i-len(prompts))
		}
		if r.Index != i || r.Prompt != want || r.Error != "" || r.FinishReason != "length" || r.Usage.CompletionTokens != 4 {
			t.Fatalf("result %d: %+v (want prompt %.40q)", i, r, want)
		}
	}

	// Greedy answers equal the HTTP API's for the same prompts.
	srv := startServe(t, bin, nil, "--ckpt-path", ckpt)
	for i := 0; i < 8; i++ {
		if got := chatAnswer(t, srv.url, res[i].Prompt, 4); got != res[i].Completion {
			t.Errorf("prompt %d: API says %q, batch said %q", i, got, res[i].Completion)
		}
	}

	// Text output goes in input order; a failing prompt makes the exit status non-zero
	// and names its line.
	cmd = exec.Command(bin, "batch", "-", "--ckpt-path", ckpt, "--max-tokens", "2", "--temperature", "0", "--max-seq-len", "64", "--log-level", "error")
	cmd.Stdin = strings.NewReader("first\n" + strings.Repeat("too long ", 200) + "\nthird\n")
	var stdout, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "failed prompts on lines 2") {
		t.Fatalf("want exit 1 naming line 2, got %v\n%s", err, errb.String())
	}
	text := stdout.String()
	i1, i2, i3 := strings.Index(text, "\nfirst\n"), strings.Index(text, "too long"), strings.Index(text, "\nthird\n")
	if i1 < 0 || i2 < i1 || i3 < i2 {
		t.Fatalf("answers not in input order:\n%s", text)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// readUntil reads the pty until want appears (or fails after the timeout).
func readUntil(t *testing.T, r io.Reader, buf *bytes.Buffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	chunk := make([]byte, 4096)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v; screen so far:\n%s", want, timeout, buf.String())
		}
		if f, ok := r.(*os.File); ok {
			_ = f.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		}
		n, _ := r.Read(chunk)
		buf.Write(chunk[:n])
	}
}

func TestChatInATerminal(t *testing.T) {
	bin, ckpt := demoSetup(t)
	cmd := exec.Command(bin, "chat", "--ckpt-path", ckpt, "--temperature", "0", "--max-tokens", "400", "--log-level", "error")
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var screen bytes.Buffer
	readUntil(t, tty, &screen, ">>> ", time.Minute)

	// Ctrl-C mid-answer stops the answer, not the program, and the turn is not kept.
	screen.Reset()
	fmt.Fprint(tty, "Write a long story\r")
	// Stop as soon as the answer has started (400 tokens take seconds to generate).
	readUntil(t, tty, &screen, "Write a long story\r\n", 30*time.Second)
	answerStart := screen.Len()
	for deadline := time.Now().Add(30 * time.Second); screen.Len() < answerStart+8 && time.Now().Before(deadline); {
		chunk := make([]byte, 256)
		_ = tty.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _ := tty.Read(chunk)
		screen.Write(chunk[:n])
	}
	fmt.Fprint(tty, "\x03")
	readUntil(t, tty, &screen, "(stopped)", 30*time.Second)
	readUntil(t, tty, &screen, ">>> ", 10*time.Second)

	// Two finished turns are kept as history.
	for _, msg := range []string{"first question", "second question"} {
		screen.Reset()
		fmt.Fprintf(tty, "%s\r", msg)
		readUntil(t, tty, &screen, ">>> ", 2*time.Minute)
	}
	screen.Reset()
	fmt.Fprint(tty, "/history\r")
	readUntil(t, tty, &screen, "messages)", 10*time.Second)
	h := screen.String()
	if !strings.Contains(h, "(4 messages)") || !strings.Contains(h, "user: first question") || !strings.Contains(h, "user: second question") || strings.Contains(h, "long story") {
		t.Fatalf("history after a stopped and two finished turns:\n%s", h)
	}
	fmt.Fprint(tty, "\x04") // Ctrl-D exits
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("chat did not exit on Ctrl-D")
	}
}

func TestChatKeepsHistoryFromAPipe(t *testing.T) {
	bin, ckpt := demoSetup(t)
	cmd := exec.Command(bin, "chat", "--ckpt-path", ckpt, "--temperature", "0", "--max-tokens", "6", "--log-level", "error")
	cmd.Stdin = strings.NewReader("first question\nsecond question\n/history\n/reset\n/history\n/exit\nnever read\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "user: first question") || !strings.Contains(s, "user: second question") || !strings.Contains(s, "(4 messages)") {
		t.Fatalf("history not kept across turns:\n%s", s)
	}
	if !strings.Contains(s, "(conversation cleared)\n(0 messages)") {
		t.Fatalf("/reset did not clear the history:\n%s", s)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestBenchAgainstDemoServer(t *testing.T) {
	bin, ckpt := demoSetup(t)
	srv := startServe(t, bin, nil, "--ckpt-path", ckpt)
	out, err := exec.Command(bin, "bench", "--url", srv.url, "--requests", "8", "--concurrency", "4", "--max-tokens", "6", "--prompt-tokens", "16", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var rep benchReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, out)
	}
	if rep.Failed != 0 || rep.OutputTokens == 0 || rep.TTFTms["p50"] <= 0 || rep.TPOTms["p50"] <= 0 || rep.RequestsPerSec <= 0 || rep.E2Ems["p99"] < rep.E2Ems["p50"] {
		t.Fatalf("implausible bench report: %+v", rep)
	}
}

func TestInferenceScriptStartupTypes(t *testing.T) {
	bin, ckpt := demoSetup(t)
	script, _ := filepath.Abs("../scripts/inference.sh")
	env := append(os.Environ(), "GATEWAY_BIN="+bin)
	common := []string{"--ckpt-path", ckpt, "--model-name", "deepseek_v3", "--max-batch-size", "4", "--max-new-tokens", "3", "--temperature", "0", "--log-level", "error"}

	// FILE: offline batch.
	prompts := filepath.Join(t.TempDir(), "inputs.txt")
	_ = os.WriteFile(prompts, []byte("one\ntwo\nthree\nfour\nfive\nsix\n"), 0o644)
	cmd := exec.Command(script, append([]string{"--startup-type", prompts}, common...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Count(string(out), "### completion") != 6 {
		t.Fatalf("FILE startup (6 prompts, max_batch_size 4, none dropped): %v\n%s", err, out)
	}

	// interactive: console chat, lines from a pipe.
	cmd = exec.Command(script, append([]string{"--startup-type", "interactive"}, common...)...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader("hello\n/history\n/exit\n")
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "user: hello") {
		t.Fatalf("interactive startup: %v\n%s", err, out)
	}

	// online: serve with the original POST /chat.
	addr := freeAddr(t)
	// Its own variable: the deferred kill must reach this server, not whatever cmd
	// names when the test returns (the server used to outlive every test run).
	online := exec.Command(script, append([]string{"--startup-type", "online", "--addr", addr}, common...)...)
	online.Env = env
	var logs bytes.Buffer
	online.Stdout, online.Stderr = &logs, &logs
	if err := online.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = online.Process.Kill(); _ = online.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Post("http://"+addr+"/chat", "application/json", strings.NewReader(`{"prompt": "Hi"}`))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var r struct {
				Choices []struct {
					Message struct{ Content string } `json:"message"`
				} `json:"choices"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
				t.Fatalf("POST /chat: %d %s", resp.StatusCode, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("online startup did not serve: %v\n%s", err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// No startup type is a usage error.
	cmd = exec.Command(script, common...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "--startup-type") {
		t.Fatalf("missing --startup-type accepted: %v %s", err, out)
	}
}

func TestBatchWithExtensions(t *testing.T) {
	bin, ckpt := demoSetup(t)
	build, _ := filepath.Abs("../extensions/examples/build")
	tmpl, sampler := filepath.Join(build, "dsv3template.wasm"), filepath.Join(build, "topp.wasm")
	for _, f := range []string{tmpl, sampler} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("example module missing (make wasm-examples builds it): %v", err)
		}
	}
	input := filepath.Join(t.TempDir(), "in.txt")
	_ = os.WriteFile(input, []byte("Hello there\n日本語\n"), 0o644)
	runBatch := func(extra ...string) []batchResult {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		args := append([]string{"batch", input, "--ckpt-path", ckpt, "--output", out, "--max-tokens", "5", "--temperature", "0", "--log-level", "error"}, extra...)
		if b, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("batch %v: %v\n%s", extra, err, b)
		}
		data, _ := os.ReadFile(out)
		return batchLines(t, data)
	}
	plain := runBatch()
	// The WASM DeepSeek-V3 template renders what the built-in one does: same greedy text.
	withTmpl := runBatch("--template-ext", tmpl)
	// A top-p sampler with p tiny keeps only the most likely token: greedy again.
	withSampler := runBatch("--sampler-ext", sampler, "--sampler-args", `{"top_p": 0.000001}`, "--seed", "1")
	for i := range plain {
		if withTmpl[i].Completion != plain[i].Completion || withTmpl[i].Usage.PromptTokens != plain[i].Usage.PromptTokens {
			t.Errorf("prompt %d: template extension gave %+v, built-in %+v", i, withTmpl[i], plain[i])
		}
		if withSampler[i].Completion != plain[i].Completion {
			t.Errorf("prompt %d: top-p 1e-6 sampler gave %q, greedy %q", i, withSampler[i].Completion, plain[i].Completion)
		}
	}
	if b, err := exec.Command(bin, "batch", input, "--ckpt-path", ckpt, "--sampler-ext", "nosuch", "--log-level", "error").CombinedOutput(); err == nil || !strings.Contains(string(b), "nosuch") {
		t.Fatalf("unknown extension accepted: %v %s", err, b)
	}
}

func TestChatAttachesToServerSession(t *testing.T) {
	bin, ckpt := demoSetup(t)
	srv := startServe(t, bin, []string{"GATEWAY_API_KEYS=chat-key"}, "--ckpt-path", ckpt)
	run := func(stdin string, extra ...string) string {
		args := append([]string{"chat", "--url", srv.url, "--api-key", "chat-key", "--max-tokens", "4", "--temperature", "0"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("chat --url %v: %v\n%s", extra, err, out)
		}
		return string(out)
	}
	out := run("hello server\n/history\n/exit\n")
	var id string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "session "); ok {
			id, _, _ = strings.Cut(rest, " ")
		}
	}
	if id == "" || !strings.Contains(out, "user: hello server") || !strings.Contains(out, "(2 messages)") {
		t.Fatalf("first chat:\n%s", out)
	}
	// A second console continues the same server-side session.
	out = run("and again\n/history\n/exit\n", "--session-id", id)
	if !strings.Contains(out, "user: hello server") || !strings.Contains(out, "user: and again") || !strings.Contains(out, "(4 messages)") {
		t.Fatalf("second chat on session %s:\n%s", id, out)
	}
	cmd := exec.Command(bin, "chat", "--url", srv.url, "--api-key", "wrong", "--session-id", id)
	cmd.Stdin = strings.NewReader("/exit\n")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "invalid_api_key") {
		t.Fatalf("wrong key accepted: %v\n%s", err, b)
	}
}
