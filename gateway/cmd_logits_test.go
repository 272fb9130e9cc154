package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/core/safetensors"
)

func runGW(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	environ := map[string]string{"HOME": os.Getenv("HOME"), "DSGATE_CACHE": os.Getenv("DSGATE_CACHE")}
	var stdout, stderr bytes.Buffer
	code := run(args, &cmdEnv{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, environ: environ})
	return stdout.String(), stderr.String(), code
}

func parseLogits(t *testing.T, out string) [][]float32 {
	t.Helper()
	var res struct {
		Logits [][]float32 `json:"logits"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("logits output is not the documented JSON: %v", err)
	}
	return res.Logits
}

// TestLogitsMatchesTransformers: `gateway logits` on the golden checkpoint reproduces the
// logits transformers computed (core/model/testdata/gen_goldens.py).
func TestLogitsMatchesTransformers(t *testing.T) {
	f, err := safetensors.OpenFile("../core/model/testdata/v3.golden.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	idsT, _ := f.Tensor("ids")
	ids, _ := idsT.Int32s()
	lt, _ := f.Tensor("logits")
	want, _ := lt.Float32()
	var s []string
	for _, id := range ids {
		s = append(s, strconv.Itoa(int(id)))
	}
	for _, world := range []string{"1", "4"} {
		out, stderr, code := runGW(t, "logits", "--ckpt-path", "../core/model/testdata/v3", "--ids", strings.Join(s, ","), "--world-size", world)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		got := parseLogits(t, out)
		if len(got) != len(ids) {
			t.Fatalf("%d rows, want %d", len(got), len(ids))
		}
		v := lt.Shape[1]
		for i, row := range got {
			var num, den float64
			for j, x := range row {
				d := float64(x - want[i*v+j])
				num += d * d
				den += float64(want[i*v+j]) * float64(want[i*v+j])
			}
			if e := math.Sqrt(num / den); e > 1e-4 {
				t.Fatalf("world %s position %d: rel err %.3g", world, i, e)
			}
		}
	}
}

// TestInitDemoThenLogits: init-demo writes a loadable checkpoint (small overrides keep the
// test fast); seeds change the weights; bad input is a clear error.
func TestInitDemoThenLogits(t *testing.T) {
	small := []string{"--vocab-size", "512", "--dim", "64", "--inter-dim", "128", "--moe-inter-dim", "32",
		"--n-layers", "2", "--kv-lora-rank", "32", "--q-lora-rank", "32"}
	dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	var outs []string
	for i, dir := range dirs {
		args := append([]string{"init-demo", dir, "--seed", strconv.Itoa(i + 1)}, small...)
		if _, stderr, code := runGW(t, args...); code != 0 {
			t.Fatalf("init-demo exit %d: %s", code, stderr)
		}
		for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		out, stderr, code := runGW(t, "logits", "--ckpt-path", dir, "--ids", "0,5,9")
		if code != 0 {
			t.Fatalf("logits exit %d: %s", code, stderr)
		}
		l := parseLogits(t, out)
		if len(l) != 3 || len(l[0]) != 512 {
			t.Fatalf("shape %d×%d", len(l), len(l[0]))
		}
		outs = append(outs, out)
	}
	if outs[0] == outs[1] {
		t.Fatal("different seeds gave the same model")
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"logits", "--ids", "1"}, "--ckpt-path"},
		{[]string{"logits", "--ckpt-path", dirs[0], "--ids", "1,x"}, "not a token id"},
		{[]string{"logits", "--ckpt-path", dirs[0], "--ids", "1,600"}, "outside"},
		{[]string{"logits", "--ckpt-path", dirs[0], "--ids", "1", "--world-size", "3"}, "divisible"},
		{[]string{"init-demo"}, "output folder"},
		{[]string{"init-demo", t.TempDir(), "--n-heads", "x"}, "n-heads"},
	} {
		_, stderr, code := runGW(t, tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q, want an error mentioning %q", tc.args, code, stderr, tc.msg)
		}
	}
}
