package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// errEmptyBody is wrapped by decodeJSON's error for an empty body (routes whose body is
// optional accept it).
var errEmptyBody = errors.New("empty body")

// decodeJSON reads the request body into v. Malformed JSON, wrong field types and
// trailing data are 400 invalid_request naming the field; an oversized body is 413.
func decodeJSON(c echo.Context, v any) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); !jsonish(ct) {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send application/json", ct))
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return invalid("", "reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		e := invalid("", "empty request body: send a JSON object")
		e.Err = errEmptyBody
		return e
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return invalid("", "malformed JSON: data after the top-level object")
	}
	return nil
}

// jsonish accepts the Content-Types under which clients send JSON bodies: application/json
// (and +json), none, text/plain, and the form type `curl -d` sets by default.
func jsonish(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(ct))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	switch {
	case ct == "", ct == "application/json", strings.HasSuffix(ct, "+json"), ct == "text/plain", ct == "application/x-www-form-urlencoded":
		return true
	}
	return false
}

func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &se):
		return invalid("", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return invalid("", "the request body must be a JSON object, not %s", te.Value)
		}
		return invalid(field, "field %q: want %s, got JSON %s", field, typeName(te.Type.String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "malformed JSON: unexpected end of input")
	}
	return invalid("", "malformed JSON: %v", err)
}

func typeName(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "float"):
		return "a number"
	case goType == "string" || goType == "*string":
		return "a string"
	case strings.Contains(goType, "bool"):
		return "a boolean"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "another type"
}

// stringList is OpenAI's "string or array of strings" (stop).
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return invalid("stop", "field \"stop\": %v", err)
		}
		*s = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return invalid("stop", "field \"stop\": want a string or an array of strings")
	}
	*s = many
	return nil
}

// messageContent is a message's content: a string, null, or an array of text parts.
type messageContent struct {
	text  string
	isSet bool
}

func (m *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		m.isSet = true
		return json.Unmarshal(b, &m.text)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return invalid("messages", "message content: want a string or an array of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return invalid("messages", "message content part of type %q is not supported (text only)", p.Type)
		}
		sb.WriteString(p.Text)
	}
	m.text, m.isSet = sb.String(), true
	return nil
}

type chatMessageIn struct {
	Role       string         `json:"role"`
	Content    messageContent `json:"content"`
	Name       string         `json:"name"`
	ToolCalls  []ToolCall     `json:"tool_calls"`
	ToolCallID string         `json:"tool_call_id"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type extensionsField struct {
	Template    string          `json:"template"`
	Sampler     string          `json:"sampler"`
	SamplerArgs json.RawMessage `json:"sampler_args"`
}

// samplingFields are the request fields shared by chat and completions.
type samplingFields struct {
	Model               string           `json:"model"`
	Stream              bool             `json:"stream"`
	StreamOptions       *streamOptions   `json:"stream_options"`
	MaxTokens           *int             `json:"max_tokens"`
	MaxCompletionTokens *int             `json:"max_completion_tokens"`
	Temperature         *float64         `json:"temperature"`
	TopP                *float64         `json:"top_p"`
	TopK                *int             `json:"top_k"`
	MinP                *float64         `json:"min_p"`
	RepetitionPenalty   *float64         `json:"repetition_penalty"`
	PresencePenalty     *float64         `json:"presence_penalty"`
	FrequencyPenalty    *float64         `json:"frequency_penalty"`
	Seed                *int64           `json:"seed"`
	Stop                stringList       `json:"stop"`
	N                   *int             `json:"n"`
	User                string           `json:"user"`
	Extensions          *extensionsField `json:"extensions"`
}

type chatRequest struct {
	samplingFields
	Messages    []chatMessageIn `json:"messages"`
	Logprobs    bool            `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"`
	SessionID   string          `json:"session_id"`
}

type completionRequest struct {
	samplingFields
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
	Suffix   *string         `json:"suffix"`
}

type legacyChatRequest struct {
	samplingFields
	Prompt *string `json:"prompt"`
}

// validRoles are the chat roles the DeepSeek-V3 template knows.
var validRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

func (r *chatRequest) messages() ([]Message, error) {
	if len(r.Messages) == 0 {
		return nil, invalid("messages", "messages must be a non-empty array")
	}
	out := make([]Message, 0, len(r.Messages))
	for i, m := range r.Messages {
		if !validRoles[m.Role] {
			return nil, invalid(fmt.Sprintf("messages[%d].role", i), "messages[%d].role %q: want system, user, assistant or tool", i, m.Role)
		}
		if !m.Content.isSet && !(m.Role == "assistant" && len(m.ToolCalls) > 0) {
			return nil, invalid(fmt.Sprintf("messages[%d].content", i), "messages[%d].content is required", i)
		}
		out = append(out, Message{Role: m.Role, Content: m.Content.text, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID})
	}
	return out, nil
}

// sampling validates the shared fields and returns the engine parameters, the
// requested completion budget (0 = not given) and the stop strings.
func (f *samplingFields) sampling(modelName string) (Sampling, int, error) {
	sp := Sampling{Temperature: 1, TopP: 1, RepetitionPenalty: 1}
	if f.Model != "" && f.Model != modelName {
		return sp, 0, &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Code: CodeModelNotFound, Param: "model",
			Message: fmt.Sprintf("model %q not found; this server serves %q", f.Model, modelName)}
	}
	if f.N != nil && *f.N != 1 {
		return sp, 0, invalid("n", "n must be 1 (got %d)", *f.N)
	}
	if f.StreamOptions != nil && !f.Stream {
		return sp, 0, invalid("stream_options", "stream_options is only allowed with stream: true")
	}
	maxTokens := 0
	for _, p := range []struct {
		name string
		v    *int
	}{{"max_tokens", f.MaxTokens}, {"max_completion_tokens", f.MaxCompletionTokens}} {
		if p.v == nil {
			continue
		}
		if *p.v < 1 {
			return sp, 0, invalid(p.name, "%s must be >= 1 (got %d)", p.name, *p.v)
		}
		maxTokens = *p.v
	}
	check := func(name string, v *float64, lo, hi float64, dst *float64) error {
		if v == nil {
			return nil
		}
		if *v < lo || *v > hi || *v != *v {
			return invalid(name, "%s must be in [%g, %g] (got %g)", name, lo, hi, *v)
		}
		*dst = *v
		return nil
	}
	if err := errors.Join(
		check("temperature", f.Temperature, 0, 2, &sp.Temperature),
		check("top_p", f.TopP, 0, 1, &sp.TopP),
		check("min_p", f.MinP, 0, 1, &sp.MinP),
		check("repetition_penalty", f.RepetitionPenalty, 0.01, 10, &sp.RepetitionPenalty),
		check("presence_penalty", f.PresencePenalty, -2, 2, &sp.PresencePenalty),
		check("frequency_penalty", f.FrequencyPenalty, -2, 2, &sp.FrequencyPenalty),
	); err != nil {
		var ae *Error
		errors.As(err, &ae)
		return sp, 0, ae
	}
	if f.TopP != nil && *f.TopP == 0 {
		return sp, 0, invalid("top_p", "top_p must be > 0")
	}
	if f.TopK != nil {
		if *f.TopK < 0 {
			return sp, 0, invalid("top_k", "top_k must be >= 0 (got %d)", *f.TopK)
		}
		sp.TopK = *f.TopK
	}
	if f.Seed != nil {
		seed := uint64(*f.Seed)
		sp.Seed = &seed
	}
	if len(f.Stop) > 4 {
		return sp, 0, invalid("stop", "at most 4 stop sequences (got %d)", len(f.Stop))
	}
	for _, s := range f.Stop {
		if s == "" {
			return sp, 0, invalid("stop", "stop sequences must not be empty")
		}
	}
	return sp, maxTokens, nil
}

// Wire shapes of responses (OpenAI's).

type usageJSON struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails *promptTokenDetails `json:"prompt_tokens_details,omitempty"`
}

type promptTokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func usageOf(u Usage) *usageJSON {
	return &usageJSON{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		TotalTokens: u.PromptTokens + u.CompletionTokens, PromptTokensDetails: &promptTokenDetails{CachedTokens: u.CachedPromptTokens}}
}

type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float64          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type chatChoice struct {
	Index        int            `json:"index"`
	Message      chatMessageOut `json:"message"`
	Logprobs     *chatLogprobs  `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
}

// sessionInfo is dsgate's addition to responses of requests that named a session.
type sessionInfo struct {
	ID           string `json:"id"`
	Turns        int    `json:"turns"`
	TrimmedTurns int    `json:"trimmed_turns"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usageJSON   `json:"usage"`
	Session *sessionInfo `json:"session,omitempty"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        chatDelta     `json:"delta"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *usageJSON        `json:"usage,omitempty"`
	Session *sessionInfo      `json:"session,omitempty"`
}

type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type completionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usageJSON         `json:"usage,omitempty"`
}
