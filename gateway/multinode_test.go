//go:build cgo

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Multi-node serving, as users run it: two gateway processes (node 0 and node 1) on the
// CANN emulator, each with one of the two ranks, joined through --dist-init-addr.

// nodeProc is a gateway process of a multi-node deployment.
type nodeProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex // guards stderr
	stderr bytes.Buffer
	stdout bytes.Buffer
	done   chan error
}

func (p *nodeProc) log() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stderr.String() }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

func startNode(t *testing.T, bin string, args ...string) *nodeProc {
	t.Helper()
	p := &nodeProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	p.cmd.Env = os.Environ()
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	return p
}

// exit waits for the process and returns its exit code.
func (p *nodeProc) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("%v did not exit within %v\n%s", p.cmd.Args[1:3], within, p.log())
	}
	return -1
}

// `gateway logits` on two nodes of two ranks each (NPUs 0 and 1 of each node) equals the
// CPU backend at world size 4.
func TestMultiNodeLogitsEqualsCPU(t *testing.T) {
	home := emulatorHome(t)
	bin, _ := demoSetup(t)
	const ids = "0,17,42,99,7,311,5,64,200,13,1,76"
	addr := freeAddr(t)
	args := func(rank int) []string {
		return []string{"logits", "--ckpt-path", testCkpt, "--ids", ids, "--world-size", "4", "--backend", "ascend", "--cann-home", home,
			"--ascend-precision", "f32", "--nnodes", "2", "--node-rank", fmt.Sprint(rank), "--dist-init-addr", addr, "--log-level", "error"}
	}
	follower := startNode(t, bin, args(1)...)
	leader := startNode(t, bin, args(0)...)
	if code := leader.exit(t, 2*time.Minute); code != 0 {
		t.Fatalf("node 0 exited %d\n%s", code, leader.log())
	}
	if code := follower.exit(t, 30*time.Second); code != 0 || follower.stdout.Len() != 0 {
		t.Fatalf("node 1 exited %d printing %q\n%s", code, follower.stdout.String(), follower.log())
	}
	cpuOut, stderr, code := runGW(t, "logits", "--ckpt-path", testCkpt, "--ids", ids, "--world-size", "4", "--log-level", "error")
	if code != 0 {
		t.Fatalf("cpu: %s", stderr)
	}
	checkLogitsClose(t, parseLogits(t, cpuOut), parseLogits(t, leader.stdout.String()), 12, 1e-3)
}

// postChat sends a greedy chat completion and returns the status and body.
func postChat(t *testing.T, base, prompt string, within time.Duration) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "deepseek_v3", "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": 4, "temperature": 0})
	c := &http.Client{Timeout: within}
	resp, err := c.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("chat completion did not answer within %v: %v", within, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hasLogLine reports whether a JSON log line with this msg was written.
func hasLogLine(logs, msg string) bool {
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			return true
		}
	}
	return false
}

// `gateway serve` on two nodes answers a chat request with the CPU backend's greedy
// text; node 1 has no HTTP listener and stops cleanly when node 0 shuts down or on
// SIGTERM. When node 1 stops or dies, node 0's requests fail with an error naming it, at
// once, not after a hang.
func TestMultiNodeServe(t *testing.T) {
	home := emulatorHome(t)
	bin, ckpt := demoSetup(t)
	const prompt = "Hello from two nodes"
	cpu := startServe(t, bin, nil, "--ckpt-path", ckpt)
	want := chatAnswer(t, cpu.url, prompt, 8)
	_ = cpu.cmd.Process.Signal(syscall.SIGTERM)
	cpu.wait(t, time.Minute)

	pair := func() (leader *serveProc, follower *nodeProc) {
		addr := freeAddr(t)
		args := func(rank int) []string {
			return []string{"--ckpt-path", ckpt, "--backend", "ascend", "--cann-home", home, "--ascend-precision", "f32", "--world-size", "2",
				"--nnodes", "2", "--node-rank", fmt.Sprint(rank), "--dist-init-addr", addr}
		}
		follower = startNode(t, bin, append([]string{"serve", "--log-format", "json"}, args(1)...)...)
		leader = startServe(t, bin, nil, args(0)...)
		deadline := time.Now().Add(30 * time.Second)
		for !hasLogLine(follower.log(), "serving steps for the leader") {
			if time.Now().After(deadline) {
				t.Fatalf("node 1 did not report serving steps\n%s", follower.log())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return leader, follower
	}

	t.Run("chat equals cpu, clean shutdown", func(t *testing.T) {
		leader, follower := pair()
		if got := chatAnswer(t, leader.url, prompt, 8); got != want {
			t.Fatalf("two nodes answered %q, cpu %q", got, want)
		}
		if hasLogLine(follower.log(), "serving") {
			t.Fatalf("node 1 started an HTTP listener\n%s", follower.log())
		}
		_ = leader.cmd.Process.Signal(syscall.SIGTERM)
		if code := leader.wait(t, time.Minute); code != 0 {
			t.Fatalf("node 0 exited %d\n%s", code, leader.log())
		}
		if code := follower.exit(t, 30*time.Second); code != 0 || !hasLogLine(follower.log(), "the leader ended the session; stopping") {
			t.Fatalf("node 1 exited %d after node 0 stopped\n%s", code, follower.log())
		}
	})

	t.Run("follower stopped by SIGTERM", func(t *testing.T) {
		leader, follower := pair()
		_ = follower.cmd.Process.Signal(syscall.SIGTERM)
		if code := follower.exit(t, 30*time.Second); code != 0 || !hasLogLine(follower.log(), "stopped by signal") {
			t.Fatalf("node 1 exited %d after SIGTERM\n%s", code, follower.log())
		}
		if code, body := postChat(t, leader.url, prompt, 30*time.Second); code != http.StatusInternalServerError || !strings.Contains(body, "lost node 1") {
			t.Fatalf("after node 1 stopped: %d %s", code, body)
		}
		resp, err := http.Get(leader.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "lost node 1") {
			t.Fatalf("/readyz after node 1 stopped: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("follower killed mid-stream", func(t *testing.T) {
		leader, follower := pair()
		body, _ := json.Marshal(map[string]any{"model": "deepseek_v3", "messages": []map[string]string{{"role": "user", "content": prompt}},
			"max_tokens": 200, "temperature": 0, "stream": true, "ignore_eos": true})
		resp, err := http.Post(leader.url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		for chunks := 0; chunks < 3; { // a few tokens have streamed
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "data: ") {
				chunks++
			}
		}
		_ = follower.cmd.Process.Kill()
		start := time.Now()
		rest, _ := io.ReadAll(rd)
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("the stream ended %v after node 1 died", d)
		}
		if !strings.Contains(string(rest), "node 1") && !strings.Contains(string(rest), "rank 1 left the communicator") {
			t.Fatalf("the stream did not report node 1's death:\n%s", rest)
		}
		t.Logf("stream after node 1 died (%v): ...%s", time.Since(start).Round(time.Millisecond), rest[max(0, len(rest)-300):])
	})

	t.Run("follower killed", func(t *testing.T) {
		leader, follower := pair()
		_ = follower.cmd.Process.Kill()
		follower.exit(t, 30*time.Second)
		start := time.Now()
		code, body := postChat(t, leader.url, prompt, 30*time.Second)
		if code != http.StatusInternalServerError || !strings.Contains(body, "node 1") {
			t.Fatalf("after node 1 died: %d %s\nnode 0 log:\n%s", code, body, leader.log())
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("the failure took %v", d)
		}
		t.Logf("after node 1 died, in %v: %d %s", time.Since(start).Round(time.Millisecond), code, body)
		if code, body := postChat(t, leader.url, prompt, 10*time.Second); code != http.StatusInternalServerError || !strings.Contains(body, "node 1") {
			t.Fatalf("second request after node 1 died: %d %s", code, body)
		}
	})
}

// Flags that cannot form a cluster fail at start with a clear message.
func TestMultiNodeFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nnodes", "2", "--dist-init-addr", "127.0.0.1:1"}, "needs --backend ascend"},
		{[]string{"--nnodes", "2", "--backend", "ascend", "--world-size", "2"}, "needs --dist-init-addr"},
		{[]string{"--nnodes", "2", "--backend", "ascend", "--world-size", "1", "--dist-init-addr", "127.0.0.1:1"}, "not divisible"},
		{[]string{"--node-rank", "1"}, "needs --nnodes > 1"},
	} {
		_, stderr, code := runGW(t, append([]string{"logits", "--ckpt-path", testCkpt, "--ids", "1,2"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}
