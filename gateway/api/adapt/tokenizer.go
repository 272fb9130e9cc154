package adapt

import (
	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/dsgate/dsgate/gateway/api"
)

// Tokenizer presents a *tokenizer.Tokenizer as an api.Tokenizer.
func Tokenizer(t *tokenizer.Tokenizer) api.Tokenizer { return tok{t} }

type tok struct{ t *tokenizer.Tokenizer }

func (a tok) Encode(text string, addBOS bool) []int32     { return a.t.Encode(text, addBOS) }
func (a tok) Decode(ids []int32, skipSpecial bool) string { return a.t.Decode(ids, skipSpecial) }
func (a tok) BOS() int32                                  { return a.t.BOS() }
func (a tok) EOS() int32                                  { return a.t.EOS() }
func (a tok) TokenText(id int32) string                   { return a.t.Decode([]int32{id}, false) }

// Messages converts API messages to the tokenizer's.
func Messages(msgs []api.Message) []tokenizer.Message {
	out := make([]tokenizer.Message, len(msgs))
	for i, m := range msgs {
		tm := tokenizer.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
		for _, c := range m.ToolCalls {
			var tc tokenizer.ToolCall
			tc.ID, tc.Type = c.ID, c.Type
			tc.Function.Name, tc.Function.Arguments = c.Function.Name, c.Function.Arguments
			tm.ToolCalls = append(tm.ToolCalls, tc)
		}
		out[i] = tm
	}
	return out
}

func (a tok) ApplyChatTemplate(msgs []api.Message, addGen bool) (string, error) {
	return a.t.ApplyChatTemplate(Messages(msgs), addGen)
}
