package api

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// maxTopLogprobs bounds top_logprobs (OpenAI allows 20).
const maxTopLogprobs = 20

// chatCompletions is POST /v1/chat/completions.
func (s *Server) chatCompletions(c echo.Context) error {
	start := time.Now()
	var req chatRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	msgs, err := req.messages()
	if err != nil {
		return err
	}
	spec, err := s.baseSpec(c, "/v1/chat/completions", kindChat, &req.samplingFields, start)
	if err != nil {
		return err
	}
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > maxTopLogprobs {
			return invalid("top_logprobs", "top_logprobs must be in [0, %d]", maxTopLogprobs)
		}
		if !req.Logprobs {
			return invalid("top_logprobs", "top_logprobs needs logprobs: true")
		}
		spec.topLogprobs = *req.TopLogprobs
	}
	spec.logprobs = req.Logprobs
	return s.chat(c, spec, msgs, req.SessionID, req.Extensions)
}

// legacyChat is POST /chat {"prompt": "..."}: the original project's endpoint, one user
// turn, answered in the chat.completion shape (usage counts tokens).
func (s *Server) legacyChat(c echo.Context) error {
	start := time.Now()
	var req legacyChatRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Prompt == nil || strings.TrimSpace(*req.Prompt) == "" {
		return invalid("prompt", "prompt must be a non-empty string")
	}
	if req.Stream {
		return invalid("stream", "/chat does not stream; use /v1/chat/completions")
	}
	spec, err := s.baseSpec(c, "/chat", kindChat, &req.samplingFields, start)
	if err != nil {
		return err
	}
	return s.chat(c, spec, []Message{{Role: "user", Content: *req.Prompt}}, "", req.Extensions)
}

// completions is POST /v1/completions (raw prompt text, no template).
func (s *Server) completions(c echo.Context) error {
	start := time.Now()
	var req completionRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Echo {
		return invalid("echo", "echo is not supported")
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return invalid("suffix", "suffix is not supported")
	}
	prompt, err := s.completionPrompt(req.Prompt)
	if err != nil {
		return err
	}
	if req.MaxTokens == nil && req.MaxCompletionTokens == nil {
		def := 16 // OpenAI's default for completions
		req.MaxTokens = &def
	}
	spec, err := s.baseSpec(c, "/v1/completions", kindCompletion, &req.samplingFields, start)
	if err != nil {
		return err
	}
	spec.id = newID("cmpl-")
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 5 {
			return invalid("logprobs", "logprobs must be in [0, 5]")
		}
		spec.logprobs, spec.topLogprobs = true, *req.Logprobs
	}
	if req.Extensions != nil && req.Extensions.Template != "" {
		return invalid("extensions.template", "completions take raw prompt text; templates apply to chat")
	}
	if err := s.attachSampler(c.Request().Context(), spec, req.Extensions); err != nil {
		return err
	}
	spec.req.Prompt = prompt
	if err := s.fitContext(spec, len(prompt)); err != nil {
		s.closePolicy(spec)
		return err
	}
	done, err := s.beginGeneration()
	if err != nil {
		s.closePolicy(spec)
		return err
	}
	defer done()
	return s.generate(c, spec)
}

// completionPrompt accepts a string, a one-element array of strings, or token ids.
func (s *Server) completionPrompt(raw []byte) ([]int32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalid("prompt", "prompt is required")
	}
	var text string
	if err := jsonUnmarshal(raw, &text); err == nil {
		if text == "" {
			return nil, invalid("prompt", "prompt must not be empty")
		}
		return s.cfg.Tokenizer.Encode(text, true), nil
	}
	var texts []string
	if err := jsonUnmarshal(raw, &texts); err == nil {
		if len(texts) != 1 || texts[0] == "" {
			return nil, invalid("prompt", "prompt arrays must hold exactly one non-empty string (n=1 only)")
		}
		return s.cfg.Tokenizer.Encode(texts[0], true), nil
	}
	var ids []int32
	if err := jsonUnmarshal(raw, &ids); err == nil {
		if len(ids) == 0 {
			return nil, invalid("prompt", "prompt must not be empty")
		}
		for _, id := range ids {
			if id < 0 {
				return nil, invalid("prompt", "token ids must be >= 0")
			}
		}
		return ids, nil
	}
	return nil, invalid("prompt", "prompt: want a string, an array with one string, or an array of token ids")
}

// baseSpec validates the shared fields and fills a genSpec.
func (s *Server) baseSpec(c echo.Context, route string, kind int, f *samplingFields, start time.Time) (*genSpec, error) {
	sp, maxTokens, err := f.sampling(s.cfg.ModelName)
	if err != nil {
		return nil, err
	}
	spec := &genSpec{route: route, kind: kind, stream: f.Stream, start: start, id: newID("chatcmpl-"), created: s.cfg.Now().Unix()}
	if f.StreamOptions != nil {
		spec.includeUsage = f.StreamOptions.IncludeUsage
	}
	if maxTokens > 0 && maxTokens >= s.cfg.MaxSeqLen {
		return nil, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: CodeContextLengthExceeded, Param: "max_tokens",
			Message: fmt.Sprintf("max_tokens %d leaves no room for a prompt in the model's context of %d tokens", maxTokens, s.cfg.MaxSeqLen)}
	}
	spec.req = GenRequest{Tenant: tenantOf(c), MaxTokens: maxTokens, Sampling: sp, StopStrings: f.Stop, Logprobs: false}
	return spec, nil
}

// fitContext checks prompt + completion budget against the context and fills MaxTokens
// when the request left it open.
func (s *Server) fitContext(spec *genSpec, promptLen int) error {
	room := s.cfg.MaxSeqLen - promptLen
	if room < 1 || (spec.req.MaxTokens > 0 && spec.req.MaxTokens > room) {
		want := spec.req.MaxTokens
		if want == 0 {
			want = 1
		}
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: CodeContextLengthExceeded, Param: "messages",
			Message: fmt.Sprintf("this model's context is %d tokens; the prompt has %d and %d were requested for the completion", s.cfg.MaxSeqLen, promptLen, want)}
	}
	if spec.req.MaxTokens == 0 {
		spec.req.MaxTokens = room
	}
	spec.req.Logprobs = spec.logprobs
	spec.req.TopLogprobs = spec.topLogprobs
	return nil
}

func (s *Server) closePolicy(spec *genSpec) {
	if spec.req.Policy != nil {
		_ = spec.req.Policy.Close()
		spec.req.Policy = nil
	}
}

// attachSampler instantiates the request's sampler extension, if any.
func (s *Server) attachSampler(ctx context.Context, spec *genSpec, ext *extensionsField) error {
	if ext == nil || ext.Sampler == "" {
		if ext != nil && len(ext.SamplerArgs) > 0 && string(ext.SamplerArgs) != "null" {
			return invalid("extensions.sampler_args", "sampler_args needs extensions.sampler")
		}
		return nil
	}
	if s.cfg.Extensions == nil {
		return fmt.Errorf("%w: no extension host configured (sampler %q)", ErrExtensionNotFound, ext.Sampler)
	}
	var seed uint64
	if spec.req.Sampling.Seed != nil {
		seed = *spec.req.Sampling.Seed
	} else {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
		spec.req.Sampling.Seed = &seed
	}
	pol, err := s.cfg.Extensions.NewSampler(ctx, ext.Sampler, ext.SamplerArgs, seed)
	if err != nil {
		return fmt.Errorf("sampler extension %q: %w", ext.Sampler, err)
	}
	spec.req.Policy = pol
	return nil
}

// render renders msgs with the built-in template or the named template extension.
func (s *Server) render(ctx context.Context, template string, msgs []Message, addGen bool) (string, error) {
	if template == "" {
		out, err := s.cfg.Tokenizer.ApplyChatTemplate(msgs, addGen)
		if err != nil {
			return "", fmt.Errorf("%w: chat template: %w", ErrInvalidRequest, err)
		}
		return out, nil
	}
	if s.cfg.Extensions == nil {
		return "", fmt.Errorf("%w: no extension host configured (template %q)", ErrExtensionNotFound, template)
	}
	tk := s.cfg.Tokenizer
	out, err := s.cfg.Extensions.RenderTemplate(ctx, template, TemplateInput{Messages: msgs, BOSToken: tk.TokenText(tk.BOS()),
		EOSToken: tk.TokenText(tk.EOS()), AddGenerationPrompt: addGen})
	if err != nil {
		return "", fmt.Errorf("template extension %q: %w", template, err)
	}
	return out, nil
}

// chat builds the prompt (with the session's history when sessionID is set) and runs it.
func (s *Server) chat(c echo.Context, spec *genSpec, msgs []Message, sessionID string, ext *extensionsField) error {
	ctx := c.Request().Context()
	template := ""
	if ext != nil {
		template = ext.Template
	}
	if sessionID != "" {
		st, release, err := s.openTurn(ctx, tenantOf(c), sessionID, msgs)
		if err != nil {
			return err
		}
		defer release()
		spec.session = st
		prompt, err := s.sessionPrompt(ctx, spec, template)
		if err != nil {
			return err
		}
		spec.req.Prompt = prompt
	} else {
		text, err := s.render(ctx, template, msgs, true)
		if err != nil {
			return err
		}
		spec.req.Prompt = s.cfg.Tokenizer.Encode(text, false)
	}
	if err := s.fitContext(spec, len(spec.req.Prompt)); err != nil {
		return err
	}
	if err := s.attachSampler(ctx, spec, ext); err != nil {
		return err
	}
	done, err := s.beginGeneration()
	if err != nil {
		s.closePolicy(spec)
		return err
	}
	defer done()
	return s.generate(c, spec)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
