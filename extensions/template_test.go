package extensions

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// templateGolden is one case of testdata/dsv3_template_goldens.json, rendered by Jinja2 from
// DeepSeek-V3's own tokenizer_config.json chat template (testdata/gen_template_goldens.py).
type templateGolden struct {
	Name                string    `json:"name"`
	Messages            []Message `json:"messages"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
	BOSToken            string    `json:"bos_token"`
	EOSToken            string    `json:"eos_token"`
	Want                string    `json:"want"`
}

func loadTemplateGoldens(t testing.TB) []templateGolden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dsv3_template_goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []templateGolden
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 10 {
		t.Fatalf("only %d golden cases", len(cases))
	}
	return cases
}

// TestDSV3TemplateMatchesJinja: the example template module renders exactly what Hugging Face's
// Jinja rendering of DeepSeek-V3's chat template renders.
func TestDSV3TemplateMatchesJinja(t *testing.T) {
	h := newHost(t, Options{})
	mustAdd(t, h, "dsv3", KindTemplate, fixtures.examples["dsv3template"])
	for _, c := range loadTemplateGoldens(t) {
		t.Run(c.Name, func(t *testing.T) {
			got, err := h.RenderTemplate(context.Background(), "dsv3", TemplateInput{
				Messages: c.Messages, BOSToken: c.BOSToken, EOSToken: c.EOSToken, AddGenerationPrompt: c.AddGenerationPrompt})
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Want {
				t.Errorf("render:\n got %q\nwant %q", got, c.Want)
			}
		})
	}
}
