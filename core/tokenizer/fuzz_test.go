package tokenizer

import (
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf8"
)

// streamDecode decodes ids through a StreamDecoder and checks every delta is valid UTF-8.
func streamDecode(t *testing.T, tk *Tokenizer, ids []int32, skip bool) string {
	t.Helper()
	d := tk.NewStreamDecoder(skip)
	var b strings.Builder
	for _, id := range ids {
		delta := d.Push(id)
		if !utf8.ValidString(delta) {
			t.Fatalf("delta %q splits a UTF-8 character", delta)
		}
		b.WriteString(delta)
	}
	b.WriteString(d.Flush())
	return b.String()
}

// FuzzEncode: no panic on any bytes (invalid UTF-8 included); ids are in range;
// decode(encode(s)) == s for valid UTF-8; stream deltas concatenate to the full decode.
// Seeds: testdata/fuzz/FuzzEncode and the f.Add calls.
func FuzzEncode(f *testing.F) {
	tk := loadReal(f)
	for _, s := range []string{"", "Hello, world!", "<｜User｜>hi<｜Assistant｜>", "  \n\t\r\n x", "12345678",
		"中文かなカナ한국어", "👩‍💻👍🏽", "\xff\xfe\x80abc\xe2\x82", "e\u0301\u0308", "\u2028\u0085\u180e\u200b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := string(data)
		for _, bos := range []bool{false, true} {
			ids := tk.Encode(s, bos)
			for _, id := range ids {
				if id < 0 || int(id) >= tk.VocabSize() {
					t.Fatalf("id %d out of range", id)
				}
			}
			if bos && (len(ids) == 0 || ids[0] != tk.BOS()) {
				t.Fatalf("Encode(%q, true) does not start with BOS: %v", s, ids)
			}
			if bos {
				continue
			}
			full := tk.Decode(ids, false)
			if utf8.ValidString(s) && full != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, full)
			}
			if !utf8.ValidString(full) {
				t.Fatalf("Decode gave invalid UTF-8 %q", full)
			}
			for _, skip := range []bool{false, true} {
				if got, want := streamDecode(t, tk, ids, skip), tk.Decode(ids, skip); got != want {
					t.Fatalf("stream(skip=%v) = %q, Decode = %q", skip, got, want)
				}
			}
		}
	})
}

// FuzzDecode: arbitrary id sequences (any int32, out-of-range ones included) never panic, decode
// to valid UTF-8, and the stream decoder agrees with Decode.
func FuzzDecode(f *testing.F) {
	tk := loadReal(f)
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x2e, 0xf7, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		ids := make([]int32, 0, len(data)/4)
		for len(data) >= 4 {
			v := int32(binary.LittleEndian.Uint32(data))
			if v >= 0 {
				v %= int32(tk.VocabSize() + 3) // mostly real ids, some just past the end
			}
			ids = append(ids, v)
			data = data[4:]
		}
		for _, skip := range []bool{false, true} {
			want := tk.Decode(ids, skip)
			if !utf8.ValidString(want) {
				t.Fatalf("Decode(%v) = %q: invalid UTF-8", ids, want)
			}
			if got := streamDecode(t, tk, ids, skip); got != want {
				t.Fatalf("stream(%v, skip=%v) = %q, Decode = %q", ids, skip, got, want)
			}
		}
	})
}

// FuzzChatTemplate: any messages render without error or panic, start with BOS, and tokenize
// with exactly one BOS at the front when the contents carry no BOS text.
func FuzzChatTemplate(f *testing.F) {
	tk := loadReal(f)
	f.Add("system", "You are helpful.", "user", "Hi", "f", "{}", true)
	f.Add("assistant", "", "tool", "out", "get", `{"a":1}`, false)
	f.Fuzz(func(t *testing.T, role1, content1, role2, content2, fn, args string, agp bool) {
		msgs := []Message{{Role: role1, Content: content1}, {Role: role2, Content: content2}}
		if fn != "" {
			tc := ToolCall{Type: "function"}
			tc.Function.Name, tc.Function.Arguments = fn, args
			msgs = append(msgs, Message{Role: "assistant", ToolCalls: []ToolCall{tc, tc}})
		}
		s, err := tk.ApplyChatTemplate(msgs, agp)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, tk.bosText) {
			t.Fatalf("rendered %q does not start with BOS", s)
		}
		if strings.Contains(content1+content2+fn+args, tk.bosText) {
			return
		}
		ids := tk.Encode(s, false)
		for i, id := range ids {
			if (id == tk.BOS()) != (i == 0) {
				t.Fatalf("BOS at %d in %v", i, ids)
			}
		}
	})
}
