package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Message is one chat message in the OpenAI shape the template reads.
type Message struct {
	Role       string     `json:"role"` // system, user, assistant or tool; other roles are not rendered
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// ToolCall is one function call requested by the assistant.
type ToolCall struct {
	ID       string `json:"id,omitempty"`
	Type     string `json:"type"` // "function"
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"` // JSON text, rendered verbatim
	} `json:"function"`
}

// v3TemplateSHA256 is the sha256 of the chat_template string of DeepSeek-V3's tokenizer_config.json
// (spec §2.3), the template ApplyChatTemplate implements.
const v3TemplateSHA256 = "3b8267e54b67df6500f231ffa969955cc9d26b3444a291ced4eb96ca7d3ca1ea"

// ErrChatTemplate is returned by ApplyChatTemplate when tokenizer_config.json carries a chat
// template other than DeepSeek-V3's, which this package would render wrongly.
var ErrChatTemplate = errors.New("tokenizer_config.json has a chat template other than DeepSeek-V3's")

// Markers of the template (spec §2.1); fullwidth ｜ and ▁.
const (
	tUser           = "<｜User｜>"
	tAssistant      = "<｜Assistant｜>"
	tEOS            = "<｜end▁of▁sentence｜>"
	tCallsBegin     = "<｜tool▁calls▁begin｜>"
	tCallsEnd       = "<｜tool▁calls▁end｜>"
	tCallBegin      = "<｜tool▁call▁begin｜>"
	tCallEnd        = "<｜tool▁call▁end｜>"
	tSep            = "<｜tool▁sep｜>"
	tOutputsBegin   = "<｜tool▁outputs▁begin｜>"
	tOutputsEnd     = "<｜tool▁outputs▁end｜>"
	tOutputBegin    = "<｜tool▁output▁begin｜>"
	tOutputEnd      = "<｜tool▁output▁end｜>"
	fenceJSONPrefix = "\n```json\n"
	fenceSuffix     = "\n```"
)

// ApplyChatTemplate renders msgs as DeepSeek-V3's Jinja chat template does under transformers
// (spec §2.3), character for character, quirks included:
//   - the BOS text, then every system message's content joined by "\n\n" (wherever they stand);
//   - user: <｜User｜>content; assistant with content: <｜Assistant｜>content<｜end▁of▁sentence｜>,
//     or <｜tool▁outputs▁end｜>content<｜end▁of▁sentence｜> right after tool outputs;
//   - an assistant message whose content is empty and that has tool calls is the template's
//     "content is none" branch: the very first tool call of the conversation opens with
//     <｜Assistant｜><｜tool▁calls▁begin｜>; every later call (in this or a later message) is
//     preceded by "\n" and followed by <｜tool▁calls▁end｜><｜end▁of▁sentence｜>;
//   - tool: the first tool output of the conversation opens <｜tool▁outputs▁begin｜>, later ones
//     start with "\n"; a run of tool outputs is closed by <｜tool▁outputs▁end｜> only by a
//     following assistant message or at the end;
//   - addGenerationPrompt appends <｜Assistant｜> unless the conversation ends with tool outputs.
//
// The string starts with the BOS text: tokenize it with Encode(s, false) so the prompt has one
// BOS. It fails with ErrChatTemplate when the loaded tokenizer_config.json has another template.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error) {
	if t.chatTemplate != "" && !isV3Template(t.chatTemplate) {
		return "", fmt.Errorf("apply chat template: %w", ErrChatTemplate)
	}
	var b strings.Builder
	b.WriteString(t.bosText)
	firstSystem := true
	for _, m := range msgs {
		if m.Role == "system" {
			if !firstSystem {
				b.WriteString("\n\n")
			}
			b.WriteString(m.Content)
			firstSystem = false
		}
	}
	isFirst, isTool, isOutputFirst := false, false, true
	for _, m := range msgs {
		switch m.Role {
		case "user":
			isTool = false
			b.WriteString(tUser)
			b.WriteString(m.Content)
		case "assistant":
			if m.Content == "" && len(m.ToolCalls) > 0 { // "content is none"
				isTool = false
				for _, tc := range m.ToolCalls {
					if !isFirst {
						b.WriteString(tAssistant + tCallsBegin + tCallBegin)
					} else {
						b.WriteString("\n" + tCallBegin)
					}
					b.WriteString(tc.Type)
					b.WriteString(tSep)
					b.WriteString(tc.Function.Name)
					b.WriteString(fenceJSONPrefix)
					b.WriteString(tc.Function.Arguments)
					b.WriteString(fenceSuffix + tCallEnd)
					if isFirst {
						b.WriteString(tCallsEnd + tEOS)
					}
					isFirst = true
				}
				continue
			}
			if isTool {
				b.WriteString(tOutputsEnd)
				isTool = false
			} else {
				b.WriteString(tAssistant)
			}
			b.WriteString(m.Content)
			b.WriteString(tEOS)
		case "tool":
			isTool = true
			if isOutputFirst {
				b.WriteString(tOutputsBegin + tOutputBegin)
				isOutputFirst = false
			} else {
				b.WriteString("\n" + tOutputBegin)
			}
			b.WriteString(m.Content)
			b.WriteString(tOutputEnd)
		}
	}
	if isTool {
		b.WriteString(tOutputsEnd)
	}
	if addGenerationPrompt && !isTool {
		b.WriteString(tAssistant)
	}
	return b.String(), nil
}

func isV3Template(s string) bool {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:]) == v3TemplateSHA256
}
