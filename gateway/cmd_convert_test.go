package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/configs"
)

func TestConvertCommand(t *testing.T) {
	in := "../convert/testdata/fp8ckpt"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"int4 mp2", []string{"--mode", "bf16-int4", "--model-parallel", "2", "--group-size", "64"}, 0, ""},
		{"config path and override", []string{"--mode", "bf16-int8", "--config-path", in + "/config.json", "--max-seq-len", "512"}, 0, ""},
		{"fp8-bf16", []string{"--mode", "fp8-bf16"}, 0, ""},
		{"no mode", []string{}, 2, "--mode is required"},
		{"bad mode", []string{"--mode", "int3"}, 1, "unknown mode"},
		{"heads", []string{"--mode", "bf16-bf16", "--model-parallel", "3"}, 1, "n_heads (4) is not divisible"},
		{"bad flag", []string{"--mode", "bf16-bf16", "--no-such-flag", "1"}, 1, "no-such-flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			var stderr bytes.Buffer
			env := &cmdEnv{stdout: &bytes.Buffer{}, stderr: &stderr, environ: map[string]string{}}
			args := append([]string{"convert", "--hf-ckpt-path", in, "--save-path", out}, tc.args...)
			if code := run(args, env); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not mention %q:\n%s", tc.want, stderr.String())
			}
			if tc.code != 0 {
				return
			}
			if _, err := os.Stat(filepath.Join(out, "manifest.sha256")); err != nil {
				t.Fatal(err)
			}
			if tc.args[1] == "fp8-bf16" {
				return
			}
			cfg, err := configs.FromCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "config path and override" && (cfg.MaxSeqLen != 512 || cfg.Dtype != "int8") {
				t.Fatalf("config: max_seq_len %d dtype %s", cfg.MaxSeqLen, cfg.Dtype)
			}
			if tc.name == "int4 mp2" && (cfg.QuantGroupSize != 64 || cfg.Dtype != "int4") {
				t.Fatalf("config: %+v", cfg)
			}
		})
	}
}
