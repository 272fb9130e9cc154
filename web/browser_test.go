package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The chat page is tested end to end: the real gateway binary on a demo checkpoint, and
// the page driven in Debian's headless Chromium (installed by `make test`).

const (
	testKey  = "web-test-key"
	adminKey = "web-admin-key"
)

func tokenizerDir(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("DSGATE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "dsgate")
	}
	dir := filepath.Join(cache, "tokenizer", "deepseek_v3")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("the DeepSeek-V3 tokenizer is missing (%v); run scripts/fetch-tokenizer.sh (make test does)", err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGateway builds the binary, makes a demo checkpoint and serves it; it returns the
// base URL.
func startGateway(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", bin, "../gateway")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ckpt := filepath.Join(dir, "ckpt")
	if out, err := exec.Command(bin, "init-demo", ckpt, "--tokenizer", tokenizerDir(t), "--seed", "7").CombinedOutput(); err != nil {
		t.Fatalf("init-demo: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "serve", "--ckpt-path", ckpt, "--addr", addr, "--log-level", "warn", "--extensions-dir", filepath.Join(dir, "ext"))
	cmd.Env = append(os.Environ(), "GATEWAY_API_KEYS="+testKey, "GATEWAY_ADMIN_KEY="+adminKey, "GATEWAY_REDIS_URL=")
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gateway log:\n%s", b)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("gateway not ready after 90 s (last error %v)\n%s", err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func newBrowser(t *testing.T) (context.Context, *atomic.Int32) {
	t.Helper()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("Debian's chromium is missing; make test installs it (apt-get install chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// Any JavaScript dialog (alert from an injected onerror=...) is a failure.
	var dialogs atomic.Int32
	chromedp.ListenTarget(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
			go func() { _ = chromedp.Run(ctx, page.HandleJavaScriptDialog(false)) }()
		}
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, &dialogs
}

// run runs browser actions with a deadline and fails the test with what went wrong.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Run(c, actions...); err != nil {
		var dump string
		_ = chromedp.Run(ctx, chromedp.Evaluate(`document.body.innerText`, &dump))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, dump)
	}
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(expr string) chromedp.Action {
	return chromedp.Poll(expr, nil, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(55*time.Second))
}

func evalInt(t *testing.T, ctx context.Context, expr string) int {
	t.Helper()
	var n int
	run(t, ctx, "eval "+expr, chromedp.Evaluate(expr, &n))
	return n
}

// sendMessage types text and presses Enter.
func sendMessage(text string) chromedp.Action {
	return chromedp.Tasks{
		chromedp.SetValue("#prompt", text, chromedp.ByID),
		chromedp.Focus("#prompt", chromedp.ByID),
		chromedp.KeyEvent("\r"),
	}
}

func setField(id, value string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %q; e.dispatchEvent(new Event("change")); return true; })()`, id, value), nil)
}

func sessionTurns(t *testing.T, base, id string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/sessions/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Turns int `json:"turns"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET session %s: %d %v", id, resp.StatusCode, err)
	}
	return s.Turns
}

func TestChatPageInChromium(t *testing.T) {
	base := startGateway(t)
	ctx, dialogs := newBrowser(t)

	run(t, ctx, "open page",
		chromedp.Navigate(base+"/"),
		waitJS(`document.body.dataset.ready === "true"`),
	)
	run(t, ctx, "enter API key and parameters",
		setField("api-key", testKey),
		setField("temperature", "0"),
		setField("max-tokens", "24"),
		waitJS(`document.getElementById("error").hidden`),
	)

	// Send a message: the answer grows over at least two updates and finishes.
	run(t, ctx, "send first message",
		sendMessage("Hello, who are you?"),
		waitJS(`(() => { const a = document.querySelector(".msg.assistant"); return a && a.dataset.finish !== undefined; })()`),
	)
	if n := evalInt(t, ctx, `Number(document.querySelector(".msg.assistant").dataset.updates || 0)`); n < 2 {
		t.Fatalf("the answer arrived in %d updates, want a stream of at least 2", n)
	}
	var first string
	run(t, ctx, "session id", chromedp.Evaluate(`localStorage.getItem("dsgate.session")`, &first))
	if first == "" {
		t.Fatal("no session was created for the first message")
	}
	if got := sessionTurns(t, base, first); got != 1 {
		t.Fatalf("session has %d turns after one answer, want 1", got)
	}

	// Stop a long answer mid-stream: the server cancels it and stores nothing.
	run(t, ctx, "send long message and stop it",
		setField("max-tokens", "2000"),
		sendMessage("Tell me a very long story."),
		waitJS(`(() => { const a = document.querySelectorAll(".msg.assistant"); const x = a[a.length-1]; return a.length === 2 && Number(x.dataset.updates || 0) >= 2; })()`),
		chromedp.Click("#stop", chromedp.ByID),
		waitJS(`(() => { const a = document.querySelectorAll(".msg.assistant"); return a[a.length-1].dataset.finish === "cancelled"; })()`),
		waitJS(`!document.getElementById("send").hidden`),
	)
	if got := sessionTurns(t, base, first); got != 1 {
		t.Fatalf("a stopped answer changed the session: %d turns, want 1", got)
	}

	// Markup in a message is shown as text and never runs.
	const evil = `<img src=x onerror=alert(1)>`
	run(t, ctx, "send markup",
		setField("max-tokens", "8"),
		sendMessage(evil),
		waitJS(`document.querySelectorAll(".msg.assistant").length === 3 && document.querySelectorAll(".msg.assistant")[2].dataset.finish !== undefined`),
	)
	var shown string
	run(t, ctx, "read markup message", chromedp.Evaluate(`[...document.querySelectorAll(".msg.user .body")].pop().textContent`, &shown))
	if shown != evil {
		t.Fatalf("user message shown as %q, want the literal text %q", shown, evil)
	}
	if n := evalInt(t, ctx, `document.querySelectorAll("#messages img, #messages script").length`); n != 0 {
		t.Fatalf("%d injected elements in the conversation", n)
	}

	// Reload: the conversation comes back from the sessions API.
	run(t, ctx, "reload",
		chromedp.Reload(),
		waitJS(`document.body.dataset.ready === "true"`),
		waitJS(`document.querySelectorAll(".msg.user").length === 2 && document.querySelectorAll(".msg.assistant").length === 2`),
	)
	var restored string
	run(t, ctx, "restored text", chromedp.Evaluate(`document.querySelector(".msg.user .body").textContent`, &restored))
	if restored != "Hello, who are you?" {
		t.Fatalf("after reload the first message is %q", restored)
	}

	// A second session, then switch back to the first.
	run(t, ctx, "second session",
		chromedp.Click("#new-session", chromedp.ByID),
		waitJS(`document.querySelectorAll(".msg").length === 0`),
		sendMessage("A new conversation"),
		waitJS(`document.querySelectorAll("#session-list button").length === 2 && document.querySelector(".msg.assistant") && document.querySelector(".msg.assistant").dataset.finish !== undefined`),
	)
	var second string
	run(t, ctx, "second id", chromedp.Evaluate(`localStorage.getItem("dsgate.session")`, &second))
	if second == "" || second == first {
		t.Fatalf("second session id %q (first %q)", second, first)
	}
	run(t, ctx, "switch back",
		chromedp.Click(fmt.Sprintf(`#session-list button[data-id=%q]`, first), chromedp.ByQuery),
		waitJS(`document.querySelectorAll(".msg.user").length === 2`),
	)
	if restored != "Hello, who are you?" {
		t.Fatalf("switching back shows %q", restored)
	}

	// Rename via metadata.
	run(t, ctx, "rename",
		chromedp.Click("#rename-session", chromedp.ByID),
		chromedp.WaitVisible("#rename-input", chromedp.ByID),
		chromedp.SetValue("#rename-input", "Renamed chat", chromedp.ByID),
		chromedp.Focus("#rename-input", chromedp.ByID),
		chromedp.KeyEvent("\r"),
		waitJS(`document.getElementById("session-title").textContent === "Renamed chat"`),
	)

	// Phone width: the page still works (sidebar behind a toggle).
	var buf []byte
	run(t, ctx, "screenshot", chromedp.FullScreenshot(&buf, 100))
	shot := filepath.Join(t.ArtifactDir(), "chat.png")
	if err := os.WriteFile(shot, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	run(t, ctx, "phone width",
		chromedp.EmulateViewport(390, 844),
		waitJS(`getComputedStyle(document.getElementById("toggle-sidebar")).display !== "none" && window.innerWidth === 390`),
		chromedp.Sleep(300*time.Millisecond), // let the layout settle before clicking by coordinates
		chromedp.Click("#toggle-sidebar", chromedp.ByID),
		waitJS(`document.getElementById("sidebar").classList.contains("open")`),
	)

	// A wrong API key shows a clear error.
	run(t, ctx, "wrong key",
		chromedp.EmulateViewport(1200, 900),
		setField("api-key", "not-a-key"),
		waitJS(`!document.getElementById("error").hidden`),
	)
	var msg string
	run(t, ctx, "error text", chromedp.Text("#error", &msg, chromedp.ByID))
	if !strings.Contains(msg, "API key was rejected") {
		t.Fatalf("wrong-key error reads %q", msg)
	}
	if n := dialogs.Load(); n != 0 {
		t.Fatalf("%d JavaScript dialogs opened (injected script ran?)", n)
	}
}
