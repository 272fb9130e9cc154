package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// chatChunk is the part of an OpenAI chat.completion.chunk (or error event) that the
// HTTP clients of this binary (bench, chat --url) read.
type chatChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

// content is the chunk's text delta.
func (c chatChunk) content() string {
	if len(c.Choices) == 0 {
		return ""
	}
	return c.Choices[0].Delta.Content
}

// errStreamTruncated reports an SSE stream that ended without "data: [DONE]".
var errStreamTruncated = errors.New("the stream ended without [DONE]")

// readChatStream calls fn for every "data:" event of an SSE chat stream until
// "data: [DONE]". An error event ends the stream with that error.
func readChatStream(r io.Reader, fn func(chatChunk)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return nil
		}
		var ev chatChunk
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("bad SSE event %q: %w", data, err)
		}
		if ev.Error != nil {
			return fmt.Errorf("%s: %s", ev.Error.Code, ev.Error.Message)
		}
		fn(ev)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errStreamTruncated
}
