package tokenizer

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestSmoke checks the examples of spec §2.
func TestSmoke(t *testing.T) {
	tk := loadReal(t)
	tests := []struct {
		name string
		text string
		bos  bool
		want []int32
	}{
		{"markers", "<｜User｜>Hello!<｜Assistant｜>Hi there!<|EOT|>", false, []int32{128803, 19923, 3, 128804, 23166, 1031, 3, 128805}},
		{"ascii-lookalike", "<|User|>", false, []int32{30, 94, 6756, 94, 32}},
		{"bos", "Hi", true, []int32{0, 23166}},
		{"empty", "", false, []int32{}},
		{"empty-bos", "", true, []int32{0}},
		{"think-is-text-in-v3", "<think>", false, nil}, // filled below: must not be one id
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tk.Encode(tt.text, tt.bos)
			if tt.want == nil {
				if len(got) < 2 {
					t.Fatalf("Encode(%q) = %v, want ordinary text (several ids)", tt.text, got)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Encode(%q, %v) = %v, want %v", tt.text, tt.bos, got, tt.want)
			}
		})
	}
}

// TestSpecialIDs checks the ids of spec §2.1 and the accessors.
func TestSpecialIDs(t *testing.T) {
	tk := loadReal(t)
	if tk.BOS() != 0 || tk.EOS() != 1 {
		t.Fatalf("BOS, EOS = %d, %d, want 0, 1", tk.BOS(), tk.EOS())
	}
	if tk.VocabSize() != 128815 {
		t.Errorf("VocabSize = %d, want 128815", tk.VocabSize())
	}
	tests := []struct {
		tok     string
		id      int32
		special bool
	}{
		{"<｜begin▁of▁sentence｜>", 0, true},
		{"<｜end▁of▁sentence｜>", 1, true},
		{"<｜▁pad▁｜>", 2, true},
		{"<｜place▁holder▁no▁0｜>", 128000, true},
		{"<｜place▁holder▁no▁799｜>", 128799, true},
		{"<｜fim▁hole｜>", 128800, false},
		{"<｜User｜>", 128803, false},
		{"<｜Assistant｜>", 128804, false},
		{"<|EOT|>", 128805, true},
		{"<｜tool▁calls▁begin｜>", 128806, false},
		{"<｜tool▁sep｜>", 128814, false},
		{"Ġthe", 270, false},
	}
	for _, tt := range tests {
		id, ok := tk.TokenID(tt.tok)
		if !ok || id != tt.id {
			t.Errorf("TokenID(%q) = %d, %v, want %d", tt.tok, id, ok, tt.id)
		}
		if tk.IsSpecial(tt.id) != tt.special {
			t.Errorf("IsSpecial(%d) = %v, want %v", tt.id, !tt.special, tt.special)
		}
	}
	if _, ok := tk.TokenID("<think>"); ok {
		t.Errorf("TokenID(<think>) found; V3's tokenizer has no such token")
	}
}

type bosSample struct {
	Text string  `json:"text"`
	IDs  []int32 `json:"ids"`
}

// TestBOSGolden: Encode(text, true) is transformers' tokenizer.encode(text).
func TestBOSGolden(t *testing.T) {
	tk := loadReal(t)
	for i, s := range readJSONL[bosSample](t, "bos.jsonl.gz") {
		if got := tk.Encode(s.Text, true); !slices.Equal(got, s.IDs) {
			t.Errorf("sample %d: %s", i, firstDiff(tk, got, s.IDs))
		}
	}
}

type decodeSample struct {
	IDs         []int32 `json:"ids"`
	SkipSpecial bool    `json:"skip_special"`
	Text        string  `json:"text"`
}

// TestDecodeGolden: Decode equals HF tokenizers' decode with and without special tokens, including
// id sequences whose bytes are invalid UTF-8 (U+FFFD placement as Rust's from_utf8_lossy); the
// stream decoder's deltas concatenate to the same text.
func TestDecodeGolden(t *testing.T) {
	tk := loadReal(t)
	samples := readJSONL[decodeSample](t, "decode.jsonl.gz")
	skipped := 0
	for i, s := range samples {
		if got := tk.Decode(s.IDs, s.SkipSpecial); got != s.Text {
			t.Errorf("sample %d Decode(%v, %v) = %q, want %q", i, s.IDs, s.SkipSpecial, got, s.Text)
		}
		d := tk.NewStreamDecoder(s.SkipSpecial)
		var b strings.Builder
		for _, id := range s.IDs {
			delta := d.Push(id)
			if !utf8.ValidString(delta) {
				t.Errorf("sample %d: delta %q is not valid UTF-8", i, delta)
			}
			b.WriteString(delta)
		}
		b.WriteString(d.Flush())
		if b.String() != s.Text {
			t.Errorf("sample %d: stream %q, want %q", i, b.String(), s.Text)
		}
		if s.SkipSpecial && slices.ContainsFunc(s.IDs, tk.IsSpecial) {
			skipped++
		}
	}
	if skipped < 50 {
		t.Errorf("only %d decode samples drop special tokens; the golden should cover that", skipped)
	}
}

func TestDecodeTable(t *testing.T) {
	tk := loadReal(t)
	user, _ := tk.TokenID("<｜User｜>")
	tests := []struct {
		name string
		ids  []int32
		skip bool
		want string
	}{
		{"bos-kept", []int32{0, 23166}, false, "<｜begin▁of▁sentence｜>Hi"},
		{"bos-skipped", []int32{0, 23166}, true, "Hi"},
		{"eot-skipped", []int32{23166, 128805}, true, "Hi"},
		{"non-special-kept", []int32{user, 23166, 1}, true, "<｜User｜>Hi"},
		{"unknown-ids-ignored", []int32{-1, 23166, 128815, 1 << 30}, false, "Hi"},
		{"empty", nil, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tk.Decode(tt.ids, tt.skip); got != tt.want {
				t.Errorf("Decode(%v, %v) = %q, want %q", tt.ids, tt.skip, got, tt.want)
			}
		})
	}
}

// TestStreamDecoderSplitsNoCharacter feeds a 4-byte emoji byte by byte.
func TestStreamDecoderSplitsNoCharacter(t *testing.T) {
	tk := loadReal(t)
	d := tk.NewStreamDecoder(false)
	var deltas []string
	for _, c := range []byte("a😀b") {
		deltas = append(deltas, d.Push(tk.byteID[c]))
	}
	deltas = append(deltas, d.Flush())
	want := []string{"a", "", "", "", "😀", "b", ""}
	if !slices.Equal(deltas, want) {
		t.Fatalf("deltas %q, want %q", deltas, want)
	}
	// An unfinished character at the end becomes U+FFFD on Flush, and the decoder is reusable.
	d.Push(tk.byteID[0xF0])
	if got := d.Flush(); got != "\uFFFD" {
		t.Fatalf("Flush of a lone 0xF0 = %q, want U+FFFD", got)
	}
	if got := d.Push(tk.byteID['x']); got != "x" {
		t.Fatalf("after Flush, Push(x) = %q", got)
	}
}

func TestLossyMatchesRust(t *testing.T) {
	// Expected strings follow Rust's String::from_utf8_lossy (maximal subparts).
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe2\x82", "\uFFFD"},
		{"\xe2\x82A", "\uFFFDA"},
		{"\xe0\x80", "\uFFFD\uFFFD"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\x80\xff", "😀\uFFFD"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},
		{"\x80\x80", "\uFFFD\uFFFD"},
	}
	for _, tt := range tests {
		got, _ := appendLossy(nil, []byte(tt.in), true)
		if string(got) != tt.want {
			t.Errorf("lossy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Fatalf("Load(empty dir) = %v, want an error naming tokenizer.json", err)
	}
	if _, err := build(&tokenizerJSON{}, &configJSON{}); !errors.Is(err, ErrFormat) {
		t.Fatalf("build(empty) = %v, want ErrFormat", err)
	}
}

func TestDefaultDir(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DSGATE_CACHE": "/c", "HOME": "/h"}, "/c/tokenizer/deepseek_v3"},
		{map[string]string{"HOME": "/h"}, "/h/.cache/dsgate/tokenizer/deepseek_v3"},
	}
	for _, tt := range tests {
		if got := DefaultDir(tt.env); got != tt.want {
			t.Errorf("DefaultDir(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

// TestConcurrentEncode hammers one Tokenizer (and its word cache) from several goroutines.
func TestConcurrentEncode(t *testing.T) {
	tk := loadReal(t)
	samples := loadCorpus(t)
	const workers = 4
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			for i := w; i < len(samples); i += 97 {
				if got := tk.Encode(samples[i].Text, false); !slices.Equal(got, samples[i].IDs) {
					errs <- samples[i].Name
					return
				}
			}
			errs <- ""
		}(w)
	}
	for w := 0; w < workers; w++ {
		if name := <-errs; name != "" {
			t.Errorf("concurrent Encode differs on a %s sample", name)
		}
	}
}
