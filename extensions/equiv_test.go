package extensions_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/dsgate/dsgate/extensions"
)

// TestDSV3TemplateMatchesBuiltin: the example template module renders byte for byte what the
// built-in Go template (core/tokenizer.ApplyChatTemplate, on the real DeepSeek-V3 tokenizer)
// renders, over the Jinja golden conversations. (An external test package: the extensions
// package itself never imports core/tokenizer.)
func TestDSV3TemplateMatchesBuiltin(t *testing.T) {
	tok, err := tokenizer.Load(tokenizer.DefaultDir(environ()))
	if err != nil {
		t.Fatalf("load the real tokenizer (make test fetches it): %v", err)
	}
	bin, err := os.ReadFile(filepath.Join("examples", "build", "dsv3template.wasm"))
	if err != nil {
		t.Fatalf("example not built (run make -C extensions/examples): %v", err)
	}
	ctx := context.Background()
	h, err := extensions.Open(ctx, extensions.Options{CacheDir: extensions.SharedCacheDir(), CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	if _, err := h.Add(ctx, "dsv3", extensions.KindTemplate, bin); err != nil {
		t.Fatal(err)
	}
	goldens, err := os.ReadFile(filepath.Join("testdata", "dsv3_template_goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name                string               `json:"name"`
		Messages            []extensions.Message `json:"messages"`
		AddGenerationPrompt bool                 `json:"add_generation_prompt"`
	}
	if err := json.Unmarshal(goldens, &cases); err != nil {
		t.Fatal(err)
	}
	bos := tok.Decode([]int32{tok.BOS()}, false)
	eos := tok.Decode([]int32{tok.EOS()}, false)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			msgs := make([]tokenizer.Message, len(c.Messages))
			for i, m := range c.Messages {
				msgs[i] = tokenizer.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
				for _, tc := range m.ToolCalls {
					var call tokenizer.ToolCall
					call.ID, call.Type = tc.ID, tc.Type
					call.Function.Name, call.Function.Arguments = tc.Function.Name, tc.Function.Arguments
					msgs[i].ToolCalls = append(msgs[i].ToolCalls, call)
				}
			}
			want, err := tok.ApplyChatTemplate(msgs, c.AddGenerationPrompt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := h.RenderTemplate(ctx, "dsv3", extensions.TemplateInput{
				Messages: c.Messages, BOSToken: bos, EOSToken: eos, AddGenerationPrompt: c.AddGenerationPrompt})
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("WASM template:\n got %q\nbuilt-in:\n     %q", got, want)
			}
		})
	}
}

// environ is the process environment as the map tokenizer.DefaultDir takes.
func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
