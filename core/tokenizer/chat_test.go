package tokenizer

import (
	"errors"
	"slices"
	"testing"
)

type chatSample struct {
	Name                string    `json:"name"`
	Messages            []Message `json:"messages"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
	Text                string    `json:"text"`
	IDs                 []int32   `json:"ids"`
}

// TestChatGolden: conversations rendered by transformers' apply_chat_template with the real
// tokenizer_config.json match ApplyChatTemplate character for character and, tokenized with
// Encode(s, false), id for id.
func TestChatGolden(t *testing.T) {
	tk := loadReal(t)
	samples := readJSONL[chatSample](t, "chat.jsonl.gz")
	if len(samples) < 40 {
		t.Fatalf("%d chat renderings, want at least 20 conversations both ways", len(samples))
	}
	for _, s := range samples {
		got, err := tk.ApplyChatTemplate(s.Messages, s.AddGenerationPrompt)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if got != s.Text {
			t.Errorf("%s (generation prompt %v):\n got %q\nwant %q", s.Name, s.AddGenerationPrompt, got, s.Text)
			continue
		}
		ids := tk.Encode(got, false)
		if !slices.Equal(ids, s.IDs) {
			t.Errorf("%s: ids %s", s.Name, firstDiff(tk, ids, s.IDs))
		}
		if slices.Index(ids[1:], tk.BOS()) >= 0 || ids[0] != tk.BOS() {
			t.Errorf("%s: want exactly one BOS, first", s.Name)
		}
	}
}

// TestChatSpecExample is spec §2.3's example: one user message "Hi".
func TestChatSpecExample(t *testing.T) {
	tk := loadReal(t)
	s, err := tk.ApplyChatTemplate([]Message{{Role: "user", Content: "Hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	hi := tk.Encode("Hi", false)
	want := append(append([]int32{0, 128803}, hi...), 128804)
	if got := tk.Encode(s, false); !slices.Equal(got, want) {
		t.Fatalf("ids %v, want %v", got, want)
	}
}

func TestChatTemplateMismatch(t *testing.T) {
	tk := *loadReal(t)
	tk.chatTemplate = "{{ messages }}"
	if _, err := tk.ApplyChatTemplate(nil, true); !errors.Is(err, ErrChatTemplate) {
		t.Fatalf("err = %v, want ErrChatTemplate", err)
	}
}
