package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// output kinds of a generation
const (
	kindChat = iota
	kindCompletion
)

// genSpec is one validated generation, ready for the engine.
type genSpec struct {
	route        string // metrics label
	kind         int
	stream       bool
	includeUsage bool
	logprobs     bool
	topLogprobs  int
	id           string
	created      int64
	start        time.Time
	req          GenRequest
	session      *sessionTurn // nil without session_id
	submitted    time.Time    // when the engine got the request
	finished     time.Time    // when its final event arrived
}

// engineTime is the engine's share of the request: from Submit to the final event.
func (spec *genSpec) engineTime() time.Duration {
	if spec.finished.IsZero() {
		return 0
	}
	return spec.finished.Sub(spec.submitted)
}

// observeOverhead records the time the gateway added on top of the engine (HTTP, JSON,
// template, tokenization, SSE, session bookkeeping) for a request that completed.
func (s *Server) observeOverhead(spec *genSpec) {
	if !spec.finished.IsZero() {
		s.metrics.overhead.WithLabelValues(spec.route).Observe((time.Since(spec.start) - spec.engineTime()).Seconds())
	}
}

// result is a finished generation.
type result struct {
	text     string
	tokens   []int32
	logprobs []TokenLogprob
	finish   string
	usage    Usage
}

var errShuttingDown = &Error{Status: http.StatusServiceUnavailable, Type: "service_unavailable_error", Code: CodeOverloaded,
	Message: "the server is shutting down; retry on another instance", RetryAfter: 1}

// beginGeneration takes a concurrency slot and registers the generation with Drain.
// The returned func releases both.
func (s *Server) beginGeneration() (func(), error) {
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
		default:
			return nil, overloaded("too many concurrent requests; retry later")
		}
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		if s.slots != nil {
			<-s.slots
		}
		return nil, errShuttingDown
	}
	s.wg.Add(1)
	s.mu.Unlock()
	return func() {
		s.wg.Done()
		if s.slots != nil {
			<-s.slots
		}
	}, nil
}

// generate runs spec on the engine and writes the response (JSON or SSE).
func (s *Server) generate(c echo.Context, spec *genSpec) error {
	ctx, cancel := context.WithCancel(c.Request().Context())
	stopAfter := context.AfterFunc(s.stopCtx, cancel)
	defer stopAfter()
	defer cancel()

	spec.submitted = time.Now()
	ch, err := s.cfg.Engine.Submit(ctx, spec.req)
	if err != nil {
		if spec.req.Policy != nil {
			_ = spec.req.Policy.Close()
		}
		return err
	}
	defer func() {
		cancel()
		go func() { // the engine ends the request within a step; never leave it blocked on us
			for range ch {
			}
		}()
	}()
	if spec.stream {
		err := s.streamOut(c, ctx, spec, ch)
		if err == nil {
			s.observeOverhead(spec)
		}
		return err
	}
	defer s.observeOverhead(spec)
	res, err := s.collect(c, ctx, spec, ch)
	if err != nil {
		return err
	}
	if spec.session != nil {
		if err := s.commitTurn(ctx, spec.session, res); err != nil {
			return err
		}
	}
	s.setSessionHeaders(c, spec)
	eng := spec.engineTime()
	c.Response().Header().Set("Server-Timing", fmt.Sprintf("engine;dur=%.3f, gateway;dur=%.3f",
		float64(eng.Microseconds())/1000, float64((time.Since(spec.start)-eng).Microseconds())/1000))
	switch spec.kind {
	case kindCompletion:
		fr := res.finish
		return c.JSON(http.StatusOK, completion{ID: spec.id, Object: "text_completion", Created: spec.created, Model: s.cfg.ModelName,
			Choices: []completionChoice{{Index: 0, Text: res.text, Logprobs: s.completionLogprobs(spec, res.logprobs, 0), FinishReason: &fr}},
			Usage:   usageOf(res.usage)})
	default:
		return c.JSON(http.StatusOK, chatCompletion{ID: spec.id, Object: "chat.completion", Created: spec.created, Model: s.cfg.ModelName,
			Choices: []chatChoice{{Index: 0, Message: chatMessageOut{Role: "assistant", Content: res.text}, Logprobs: s.chatLogprobs(spec, res.logprobs), FinishReason: res.finish}},
			Usage:   usageOf(res.usage), Session: spec.session.info()})
	}
}

// finishError maps a final event that is not a success to an error.
func (s *Server) finishError(reqCtx context.Context, ev GenEvent) error {
	switch ev.Finish {
	case FinishCancelled:
		if reqCtx.Err() != nil && s.stopCtx.Err() == nil {
			return context.Canceled
		}
		return errShuttingDown
	case FinishError:
		if ev.Err == nil {
			return &Error{Status: http.StatusInternalServerError, Type: "server_error", Code: CodeEngineError, Message: "generation failed"}
		}
		if errors.Is(ev.Err, ErrExtensionFailed) || errors.Is(ev.Err, ErrInvalidRequest) || errors.Is(ev.Err, ErrContextLength) {
			return ev.Err
		}
		return &Error{Status: http.StatusInternalServerError, Type: "server_error", Code: CodeEngineError, Message: "generation failed: " + ev.Err.Error(), Err: ev.Err}
	}
	return nil
}

// observeTokens records TTFT/TPOT and token counters of a finished request.
func (s *Server) observeTokens(spec *genSpec, first, last time.Time, res *result) {
	spec.finished = time.Now()
	if !first.IsZero() {
		s.metrics.ttft.WithLabelValues(spec.route).Observe(first.Sub(spec.start).Seconds())
		if n := res.usage.CompletionTokens; n > 1 {
			s.metrics.tpot.WithLabelValues(spec.route).Observe(last.Sub(first).Seconds() / float64(n-1))
		}
	}
	s.metrics.tokens.WithLabelValues("prompt").Add(float64(res.usage.PromptTokens))
	s.metrics.tokens.WithLabelValues("cached_prompt").Add(float64(res.usage.CachedPromptTokens))
	s.metrics.tokens.WithLabelValues("completion").Add(float64(res.usage.CompletionTokens))
}

func (s *Server) collect(c echo.Context, ctx context.Context, spec *genSpec, ch <-chan GenEvent) (*result, error) {
	res := &result{}
	var sb strings.Builder
	var first, last time.Time
	for ev := range ch {
		if len(ev.Tokens) > 0 {
			last = time.Now()
			if first.IsZero() {
				first = last
			}
			res.tokens = append(res.tokens, ev.Tokens...)
		}
		sb.WriteString(ev.Text)
		res.logprobs = append(res.logprobs, ev.Logprobs...)
		if ev.Finish == "" {
			continue
		}
		if err := s.finishError(c.Request().Context(), ev); err != nil {
			return nil, err
		}
		res.text, res.finish, res.usage = sb.String(), ev.Finish, ev.Usage
		s.observeTokens(spec, first, last, res)
		return res, nil
	}
	if ctx.Err() != nil {
		return nil, s.finishError(c.Request().Context(), GenEvent{Finish: FinishCancelled})
	}
	return nil, &Error{Status: http.StatusInternalServerError, Type: "server_error", Code: CodeEngineError, Message: "the engine closed the stream without a final event"}
}

// streamOut writes the events as server-sent events in OpenAI's chunk shapes.
func (s *Server) streamOut(c echo.Context, ctx context.Context, spec *genSpec, ch <-chan GenEvent) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	s.setSessionHeaders(c, spec)
	c.Response().WriteHeader(http.StatusOK)

	chunk := func(delta *string, role string, lps []TokenLogprob, finish *string) any {
		if spec.kind == kindCompletion {
			text := ""
			if delta != nil {
				text = *delta
			}
			return completion{ID: spec.id, Object: "text_completion", Created: spec.created, Model: s.cfg.ModelName,
				Choices: []completionChoice{{Index: 0, Text: text, Logprobs: s.completionLogprobs(spec, lps, 0), FinishReason: finish}}}
		}
		return chatChunk{ID: spec.id, Object: "chat.completion.chunk", Created: spec.created, Model: s.cfg.ModelName,
			Choices: []chatChunkChoice{{Index: 0, Delta: chatDelta{Role: role, Content: delta}, Logprobs: s.chatLogprobs(spec, lps), FinishReason: finish}}}
	}
	if spec.kind == kindChat {
		empty := ""
		if err := writeSSE(c, chunk(&empty, "assistant", nil, nil)); err != nil {
			return nil // client gone; the deferred cancel ends generation
		}
	}
	res := &result{}
	var sb strings.Builder
	var first, last time.Time
	for ev := range ch {
		if len(ev.Tokens) > 0 {
			last = time.Now()
			if first.IsZero() {
				first = last
			}
			res.tokens = append(res.tokens, ev.Tokens...)
		}
		sb.WriteString(ev.Text)
		if ev.Text != "" || len(ev.Logprobs) > 0 {
			text := ev.Text
			if err := writeSSE(c, chunk(&text, "", ev.Logprobs, nil)); err != nil {
				return nil
			}
		}
		if ev.Finish == "" {
			continue
		}
		if err := s.finishError(c.Request().Context(), ev); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err // the error handler sends an error event and [DONE]
		}
		res.text, res.finish, res.usage = sb.String(), ev.Finish, ev.Usage
		s.observeTokens(spec, first, last, res)
		if spec.session != nil {
			if err := s.commitTurn(ctx, spec.session, res); err != nil {
				return err
			}
		}
		fr := ev.Finish
		final := chunk(nil, "", nil, &fr)
		if cc, ok := final.(chatChunk); ok {
			cc.Session = spec.session.info()
			final = cc
		}
		if err := writeSSE(c, final); err != nil {
			return nil
		}
		if spec.includeUsage {
			var u any
			if spec.kind == kindCompletion {
				u = completion{ID: spec.id, Object: "text_completion", Created: spec.created, Model: s.cfg.ModelName, Choices: []completionChoice{}, Usage: usageOf(res.usage)}
			} else {
				u = chatChunk{ID: spec.id, Object: "chat.completion.chunk", Created: spec.created, Model: s.cfg.ModelName, Choices: []chatChunkChoice{}, Usage: usageOf(res.usage)}
			}
			if err := writeSSE(c, u); err != nil {
				return nil
			}
		}
		_ = writeSSEDone(c)
		return nil
	}
	if c.Request().Context().Err() != nil {
		return nil
	}
	return s.finishError(c.Request().Context(), GenEvent{Finish: FinishCancelled})
}

func (s *Server) setSessionHeaders(c echo.Context, spec *genSpec) {
	if spec.session != nil {
		c.Response().Header().Set(HeaderSessionID, spec.session.id)
		c.Response().Header().Set(HeaderTrimmedTurns, strconv.Itoa(spec.session.trimmed))
	}
}

func writeSSE(c echo.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w := c.Response()
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, '\n', '\n')
	if _, err := w.Write(buf); err != nil {
		return err
	}
	w.Flush()
	return nil
}

func writeSSEDone(c echo.Context) error {
	w := c.Response()
	if _, err := w.Write([]byte("data: [DONE]\n\n")); err != nil {
		return err
	}
	w.Flush()
	return nil
}

func (s *Server) tokenText(id int32) string { return s.cfg.Tokenizer.Decode([]int32{id}, false) }

func byteInts(s string) []int {
	out := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int(s[i])
	}
	return out
}

func (s *Server) chatLogprobs(spec *genSpec, lps []TokenLogprob) *chatLogprobs {
	if !spec.logprobs || spec.kind != kindChat || len(lps) == 0 {
		return nil
	}
	out := &chatLogprobs{Content: make([]chatTokenLogprob, 0, len(lps))}
	for _, lp := range lps {
		t := s.tokenText(lp.ID)
		e := chatTokenLogprob{Token: t, Logprob: lp.Logprob, Bytes: byteInts(t), TopLogprobs: []chatTopLogprob{}}
		for i, alt := range lp.Top {
			if i >= spec.topLogprobs {
				break
			}
			at := s.tokenText(alt.ID)
			e.TopLogprobs = append(e.TopLogprobs, chatTopLogprob{Token: at, Logprob: alt.Logprob, Bytes: byteInts(at)})
		}
		out.Content = append(out.Content, e)
	}
	return out
}

func (s *Server) completionLogprobs(spec *genSpec, lps []TokenLogprob, offset int) *completionLogprobs {
	if !spec.logprobs || spec.kind != kindCompletion || len(lps) == 0 {
		return nil
	}
	out := &completionLogprobs{}
	for _, lp := range lps {
		t := s.tokenText(lp.ID)
		out.Tokens = append(out.Tokens, t)
		out.TokenLogprobs = append(out.TokenLogprobs, lp.Logprob)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(t)
		top := map[string]float64{}
		for i, alt := range lp.Top {
			if i >= spec.topLogprobs {
				break
			}
			top[s.tokenText(alt.ID)] = alt.Logprob
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
	}
	return out
}
