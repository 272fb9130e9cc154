package main

import (
	"strings"
	"testing"
)

func TestReadPrompts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		want  []batchPrompt
		blank int
		err   string
	}{
		{"plain", "a\nb\n", []batchPrompt{{0, 1, "a"}, {1, 2, "b"}}, 0, ""},
		{"no final newline", "a\nb", []batchPrompt{{0, 1, "a"}, {1, 2, "b"}}, 0, ""},
		{"crlf and blanks", "a\r\n\r\n  \t\r\nb\r\n\n", []batchPrompt{{0, 1, "a"}, {1, 4, "b"}}, 3, ""},
		{"non-ascii", "日本語\n😀 ok\n", []batchPrompt{{0, 1, "日本語"}, {1, 2, "😀 ok"}}, 0, ""},
		{"empty", "", nil, 0, ""},
		{"bad utf8", "ok\n\xff\xfe\n", nil, 0, "line 2 is not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, blank, err := readPrompts(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if blank != tc.blank || len(got) != len(tc.want) {
				t.Fatalf("got %v (blank %d), want %v (blank %d)", got, blank, tc.want, tc.blank)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("prompt %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
	long := strings.Repeat("x", 1<<20)
	got, _, err := readPrompts(strings.NewReader("a\n" + long + "\nb\n"))
	if err != nil || len(got) != 3 || len(got[1].text) != 1<<20 {
		t.Fatalf("a 1 MiB line: %v, %d prompts", err, len(got))
	}
}
