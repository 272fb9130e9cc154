package sdk

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDecodeTemplateInput(t *testing.T) {
	tests := []string{
		`{"abi_version":1,"messages":[],"bos_token":"<s>","eos_token":"</s>","add_generation_prompt":true}`,
		` { "messages" : [ { "role" : "user" , "content" : "h\u00e9\"llo\\n\ud83d\ude42\/" } ] , "extra": {"a":[1,-2.5e3,null,true,{"b":"c"}]} } `,
		`{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},{"role":"tool","content":"r","tool_call_id":"1","name":"f"}]}`,
		`{"messages":null,"bos_token":null,"add_generation_prompt":false,"abi_version":7}`,
		`{"messages":[{"role":"user","content":"lone \ud800 surrogate, 世界"}]}`,
	}
	for _, in := range tests {
		var got, want TemplateInput
		if err := DecodeTemplateInput([]byte(in), &got); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", in, got, want)
		}
	}
	for _, bad := range []string{``, `{`, `[]`, `{"messages":[{]}`, `{"bos_token":"x}`, `{"a":1}x`, `{"bos_token":"\q"}`, `{"abi_version":1.5}`, "{\"bos_token\":\"a\x01\"}"} {
		var got TemplateInput
		if err := DecodeTemplateInput([]byte(bad), &got); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzDecodeTemplateInput: for any strings (escapes, invalid UTF-8, control characters) in
// any field, decoding encoding/json's encoding gives what encoding/json decodes.
func FuzzDecodeTemplateInput(f *testing.F) {
	f.Add("user", "hi \u00e9 \"q\" \n 🙂", "get_weather", `{"city":"P"}`, true)
	f.Add("assistant", "", "f", "\xff\xfe<｜tool▁sep｜>\x00", false)
	f.Fuzz(func(t *testing.T, role, content, name, args string, agp bool) {
		v := TemplateInput{ABIVersion: 1, BOSToken: name, EOSToken: content, AddGenerationPrompt: agp, Messages: []Message{
			{Role: role, Content: content, Name: name, ToolCallID: args},
			{Role: "assistant", ToolCalls: []ToolCall{{ID: name, Type: role, Function: FunctionCall{Name: name, Arguments: args}}}}}}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var got, want TemplateInput
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if err := DecodeTemplateInput(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", b, got, want)
		}
	})
}

// FuzzDecodeTemplateInputBytes: arbitrary bytes never panic the decoder, and a document both
// decoders accept decodes the same (keys aside, which encoding/json folds more loosely).
func FuzzDecodeTemplateInputBytes(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi \u00e9"}],"bos_token":"<s>","add_generation_prompt":true}`))
	f.Add([]byte(`{"x":[1,{"y":null}],"abi_version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got TemplateInput
		_ = DecodeTemplateInput(b, &got)
	})
}
