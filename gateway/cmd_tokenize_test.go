package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestTokenizeCommands runs tokenize and detokenize against the real tokenizer (make test
// fetches it; a missing tokenizer fails with Load's message).
func TestTokenizeCommands(t *testing.T) {
	environ := map[string]string{"HOME": os.Getenv("HOME"), "DSGATE_CACHE": os.Getenv("DSGATE_CACHE")}
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		code       int
		stdout     string
		stderrWant string
	}{
		{"tokenize", []string{"tokenize"}, "<｜User｜>Hello!<｜Assistant｜>Hi there!<|EOT|>", 0, "[128803,19923,3,128804,23166,1031,3,128805]\n", ""},
		{"tokenize-bos", []string{"tokenize", "--bos"}, "Hi", 0, "[0,23166]\n", ""},
		{"tokenize-empty", []string{"tokenize"}, "", 0, "[]\n", ""},
		{"tokenize-args", []string{"tokenize", "extra"}, "", 2, "", "unexpected arguments"},
		{"tokenize-missing-dir", []string{"tokenize", "--tokenizer", "/nonexistent"}, "x", 1, "", "fetch-tokenizer"},
		{"detokenize", []string{"detokenize"}, "[0, 128803, 19923, 3, 1]", 0, "<｜begin▁of▁sentence｜><｜User｜>Hello!<｜end▁of▁sentence｜>", ""},
		{"detokenize-skip", []string{"detokenize", "--skip-special"}, "[0, 128803, 19923, 3, 1]", 0, "<｜User｜>Hello!", ""},
		{"detokenize-bad-json", []string{"detokenize"}, "1 2 3", 2, "", "JSON array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := &cmdEnv{stdin: strings.NewReader(tc.stdin), stdout: &stdout, stderr: &stderr, environ: environ}
			if code := run(tc.args, env); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if tc.code == 0 && stdout.String() != tc.stdout {
				t.Fatalf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderrWant) {
				t.Fatalf("stderr does not mention %q:\n%s", tc.stderrWant, stderr.String())
			}
		})
	}
}
