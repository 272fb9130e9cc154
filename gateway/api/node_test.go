package api

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RunNodeClient runs tests/node/openai_client.mjs (the official openai npm client) against
// baseURL and fails the test if any of its checks fails. node and tests/node/node_modules
// are required (make test installs them); their absence is a failure, not a skip.
func RunNodeClient(t *testing.T, repoRoot, baseURL, key, model string) string {
	t.Helper()
	dir := filepath.Join(repoRoot, "tests", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Fatalf("tests/node/node_modules/openai is missing (run make deps or npm ci in tests/node): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "openai_client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DSGATE_URL="+baseURL, "DSGATE_KEY="+key, "DSGATE_MODEL="+model)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openai client failed: %v\n%s", err, out)
	}
	return string(out)
}

// TestOpenAINodeClient drives the API (fake engine) with the official openai npm package.
func TestOpenAINodeClient(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSeqLen = 4096; c.ModelName = "deepseek_v3" })
	h.eng.set(func(f *fakeEngine) { f.maxSeqLen = 4096 })
	out := RunNodeClient(t, "../..", h.ts.URL, keyA, "deepseek_v3")
	t.Logf("node: %s", out)
}
