// Command dsv3template is an example template extension: DeepSeek-V3's chat template
// (tokenizer_config.json, spec deepseek-v3.md §2.3) rendered without a Jinja engine. It renders
// byte for byte what the built-in Go template and Hugging Face's Jinja rendering produce.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o dsv3template.wasm .
package main

import (
	"strings"

	"github.com/dsgate/dsgate/extensions/sdk"
)

func init() { sdk.HandleTemplate(Render) }

func main() {}

// Render follows the Jinja template statement by statement; the namespace flags keep the
// template's quirks (is_first and is_output_first are never reset between messages).
func Render(in *sdk.TemplateInput) (string, error) {
	var b strings.Builder
	// System prompts, joined by a blank line, come first whatever their position.
	system, firstSystem := "", true
	for _, m := range in.Messages {
		if m.Role == "system" {
			if firstSystem {
				system += m.Content
				firstSystem = false
			} else {
				system += "\n\n" + m.Content
			}
		}
	}
	b.WriteString(in.BOSToken)
	b.WriteString(system)
	isFirst, isTool, isOutputFirst := false, false, true
	for _, m := range in.Messages {
		switch m.Role {
		case "user":
			isTool = false
			b.WriteString("<｜User｜>" + m.Content)
		case "assistant":
			// Content "none" in Jinja: the OpenAI API's null content of a tool-call message.
			if m.Content == "" && len(m.ToolCalls) > 0 {
				isTool = false
				for _, t := range m.ToolCalls {
					call := t.Type + "<｜tool▁sep｜>" + t.Function.Name + "\n```json\n" + t.Function.Arguments + "\n```<｜tool▁call▁end｜>"
					if !isFirst {
						b.WriteString("<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" + call)
						isFirst = true
					} else {
						b.WriteString("\n<｜tool▁call▁begin｜>" + call)
						b.WriteString("<｜tool▁calls▁end｜><｜end▁of▁sentence｜>")
					}
				}
			} else if isTool {
				b.WriteString("<｜tool▁outputs▁end｜>" + m.Content + "<｜end▁of▁sentence｜>")
				isTool = false
			} else {
				b.WriteString("<｜Assistant｜>" + m.Content + "<｜end▁of▁sentence｜>")
			}
		case "tool":
			isTool = true
			if isOutputFirst {
				b.WriteString("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + m.Content + "<｜tool▁output▁end｜>")
				isOutputFirst = false
			} else {
				b.WriteString("\n<｜tool▁output▁begin｜>" + m.Content + "<｜tool▁output▁end｜>")
			}
		}
	}
	if isTool {
		b.WriteString("<｜tool▁outputs▁end｜>")
	}
	if in.AddGenerationPrompt && !isTool {
		b.WriteString("<｜Assistant｜>")
	}
	return b.String(), nil
}
