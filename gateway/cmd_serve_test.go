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

func TestServeShutdown(t *testing.T) {
	bin := buildGateway(t)
	tokDir := tokenizerDir(t)
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
