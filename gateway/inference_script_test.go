package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInferenceScriptModelArtsNodes: on a ModelArts multi-node job (MA_NUM_HOSTS,
// VC_TASK_INDEX, VC_WORKER_HOSTS, as the original launcher read them), scripts/inference.sh
// adds the multi-node flags: node 0 runs the startup type, the others `gateway serve` as
// workers; flags given explicitly win. A stand-in gateway prints the command it got.
func TestInferenceScriptModelArtsNodes(t *testing.T) {
	script, _ := filepath.Abs("../scripts/inference.sh")
	fake := filepath.Join(t.TempDir(), "gateway")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"one node", nil, []string{"--startup-type", "online", "--ckpt-path", "c"},
			"serve --addr 127.0.0.1:5000 --ckpt-path c"},
		{"node 0 of 2", []string{"MA_NUM_HOSTS=2", "VC_TASK_INDEX=0", "VC_WORKER_HOSTS=10.0.0.1,10.0.0.2"},
			[]string{"--startup-type", "online", "--ckpt-path", "c"},
			"serve --addr 127.0.0.1:5000 --ckpt-path c --nnodes 2 --node-rank 0 --dist-init-addr 10.0.0.1:6000 --backend ascend --world-size 16"},
		{"node 1 of 2 is a worker", []string{"MA_NUM_HOSTS=2", "VC_TASK_INDEX=1", "VC_WORKER_HOSTS=10.0.0.1,10.0.0.2", "MASTER_PORT=7000"},
			[]string{"--startup-type", "interactive", "--ckpt-path", "c"},
			"serve --ckpt-path c --nnodes 2 --node-rank 1 --dist-init-addr 10.0.0.1:7000 --backend ascend --world-size 16"},
		{"explicit flags win", []string{"MA_NUM_HOSTS=2", "VC_TASK_INDEX=0", "VC_WORKER_HOSTS=h0"},
			[]string{"--startup-type", "interactive", "--ckpt-path", "c", "--world-size=4", "--backend", "ascend"},
			"chat --ckpt-path c --world-size=4 --backend ascend --nnodes 2 --node-rank 0 --dist-init-addr h0:6000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(script, tc.args...)
			cmd.Env = append([]string{"GATEWAY_BIN=" + fake, "PATH=" + os.Getenv("PATH")}, tc.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Fatalf("ran  %q\nwant %q", got, tc.want)
			}
		})
	}
}
