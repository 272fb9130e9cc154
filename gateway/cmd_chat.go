package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/tokenizer"
)

// chatBackend answers one user turn, streaming text to out. Cancelling ctx stops the
// answer; a stopped answer leaves the history as it was.
type chatBackend interface {
	turn(ctx context.Context, user string, out io.Writer) error
	reset() error
	setSystem(text string) error
	// history lists the finished turns' messages as "role: content" lines.
	history(ctx context.Context) ([]string, error)
}

func runChat(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "chat", "chat [--ckpt-path DIR | --url URL [--session-id ID]] [flags]")
	lf := addLogFlags(fs, env)
	mf := addModelFlags(fs, env)
	sf := addSamplingFlags(fs)
	xf := addExtFlags(fs, env)
	url := fs.String("url", "", "attach to a running gateway instead of loading the model")
	sessionID := fs.String("session-id", "", "with --url: continue this session (default: create one)")
	apiKey := fs.String("api-key", env.environ["GATEWAY_API_KEY"], "with --url: Bearer key (env GATEWAY_API_KEY)")
	system := fs.String("system", "", "system prompt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return err
	}
	// Ctrl-C stops the answer in progress, not the program: interrupts go to the
	// current turn's cancel function.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)

	var be chatBackend
	if *url != "" {
		if err := checkBenchTarget(*url, true); err != nil {
			return err
		}
		rb := &remoteChat{base: strings.TrimRight(*url, "/"), key: *apiKey, session: *sessionID, sampling: sf, ext: xf}
		if fs.Changed("temperature") {
			cfg := configs.Default()
			if err := mf.overrides.Apply(&cfg, nil); err != nil {
				return err
			}
			rb.temperature = &cfg.Temperature
		}
		if err := rb.open(context.Background(), *system); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "session %s on %s\n", rb.session, rb.base)
		be = rb
	} else {
		s, err := mf.load(context.Background(), env, log)
		if err != nil {
			return err
		}
		defer s.Close()
		base, err := sf.request(s)
		if err != nil {
			return err
		}
		ext, err := xf.open(context.Background(), s.tok, log)
		if err != nil {
			return err
		}
		defer ext.Close()
		be = &localChat{s: s, ext: ext, base: base, system: *system}
	}
	return chatLoop(env, be, sigs)
}

// chatLoop reads lines, runs commands and turns, and routes Ctrl-C to the answer.
func chatLoop(env *cmdEnv, be chatBackend, sigs <-chan os.Signal) error {
	interactive := isTerminalReader(env.stdin)
	if interactive {
		fmt.Fprintln(env.stdout, "dsgate chat — /reset (or /clear) forgets the conversation, /system TEXT sets the system prompt, /history shows it, /exit quits; Ctrl-C stops an answer, Ctrl-D exits.")
	}
	var mu sync.Mutex
	var cancelTurn context.CancelFunc
	go func() {
		for range sigs {
			mu.Lock()
			if cancelTurn != nil {
				cancelTurn()
			}
			mu.Unlock()
		}
	}()
	in := bufio.NewReader(env.stdin)
	for {
		if interactive {
			fmt.Fprint(env.stdout, ">>> ")
		}
		line, err := in.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			if interactive {
				fmt.Fprintln(env.stdout)
			}
			return nil // Ctrl-D / end of input
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.TrimSpace(line) == "":
			continue
		case line == "/exit" || line == "/quit":
			return nil
		case line == "/reset" || line == "/clear":
			if err := be.reset(); err != nil {
				fmt.Fprintln(env.stderr, "error:", err)
			} else {
				fmt.Fprintln(env.stdout, "(conversation cleared)")
			}
			continue
		case strings.HasPrefix(line, "/system"):
			if err := be.setSystem(strings.TrimSpace(strings.TrimPrefix(line, "/system"))); err != nil {
				fmt.Fprintln(env.stderr, "error:", err)
			} else {
				fmt.Fprintln(env.stdout, "(system prompt set; conversation cleared)")
			}
			continue
		case line == "/history":
			lines, err := be.history(context.Background())
			if err != nil {
				fmt.Fprintln(env.stderr, "error:", err)
			}
			for _, l := range lines {
				fmt.Fprintln(env.stdout, l)
			}
			fmt.Fprintf(env.stdout, "(%d messages)\n", len(lines))
			continue
		case strings.HasPrefix(line, "/"):
			fmt.Fprintln(env.stderr, "unknown command; try /reset, /clear, /system TEXT, /history or /exit")
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		mu.Lock()
		cancelTurn = cancel
		mu.Unlock()
		err = be.turn(ctx, line, env.stdout)
		mu.Lock()
		cancelTurn = nil
		mu.Unlock()
		stopped := ctx.Err() != nil
		cancel()
		fmt.Fprintln(env.stdout)
		switch {
		case stopped:
			fmt.Fprintln(env.stdout, "(stopped)")
		case err != nil:
			fmt.Fprintln(env.stderr, "error:", err)
		}
	}
}

func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTerminal(f)
}

// localChat keeps the conversation in-process: the token ids of every finished turn,
// so that each new prompt extends the previous one exactly (the engine's prefix cache
// then prefills only the new turn).
type localChat struct {
	s      *stack
	ext    *extensionSet
	base   engine.Request
	system string
	msgs   []tokenizer.Message
	ids    []int32 // prompt + answers of the finished turns
}

func (c *localChat) reset() error {
	c.msgs, c.ids = nil, nil
	return nil
}

func (c *localChat) history(context.Context) ([]string, error) {
	var out []string
	if c.system != "" {
		out = append(out, "system: "+c.system)
	}
	for _, m := range c.msgs {
		out = append(out, m.Role+": "+m.Content)
	}
	return out, nil
}

func (c *localChat) setSystem(text string) error {
	c.system = text
	return c.reset()
}

func (c *localChat) turn(ctx context.Context, user string, out io.Writer) error {
	var hist []tokenizer.Message
	if c.system != "" {
		hist = append(hist, tokenizer.Message{Role: "system", Content: c.system})
	}
	hist = append(hist, c.msgs...)
	all := append(append([]tokenizer.Message(nil), hist...), tokenizer.Message{Role: "user", Content: user})
	full, err := c.ext.prompt(ctx, c.s.tok, all, true)
	if err != nil {
		return err
	}
	prompt := c.s.tok.Encode(full, false)
	if len(c.ids) > 0 {
		prev, err := c.ext.prompt(ctx, c.s.tok, hist, false)
		if err != nil {
			return err
		}
		if strings.HasPrefix(full, prev) {
			prompt = append(append([]int32(nil), c.ids...), c.s.tok.Encode(full[len(prev):], false)...)
		}
	}
	req := c.base
	req.Prompt = prompt
	seed := uint64(len(c.msgs))
	if req.Sampling.Seed != nil {
		seed += *req.Sampling.Seed
	}
	if err := c.ext.attachSampler(ctx, &req, seed); err != nil {
		return err
	}
	events, err := c.s.eng.Submit(ctx, req)
	if err != nil {
		if req.Policy != nil {
			_ = req.Policy.Close()
		}
		return err
	}
	var text strings.Builder
	var outIDs []int32
	finish := ""
	var ferr error
	for ev := range events {
		text.WriteString(ev.Text)
		outIDs = append(outIDs, ev.Tokens...)
		fmt.Fprint(out, ev.Text)
		if ev.Finish != "" {
			finish, ferr = ev.Finish, ev.Err
		}
	}
	switch finish {
	case "stop", "length":
	case "cancelled":
		return context.Canceled
	default:
		if ferr == nil {
			ferr = fmt.Errorf("generation ended with %q", finish)
		}
		return ferr
	}
	// The template closes an assistant turn with EOS; keep the ids in that shape.
	if eos := c.s.tok.EOS(); len(outIDs) == 0 || outIDs[len(outIDs)-1] != eos {
		outIDs = append(outIDs, eos)
	}
	c.ids = append(prompt, outIDs...)
	c.msgs = append(c.msgs, tokenizer.Message{Role: "user", Content: user}, tokenizer.Message{Role: "assistant", Content: text.String()})
	return nil
}

// remoteChat talks to a running gateway; the history lives in a server session.
type remoteChat struct {
	base, key, session string
	sampling           *samplingFlags
	temperature        *float64 // set when --temperature was given
	ext                *extFlags
}

func (r *remoteChat) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.key != "" {
		req.Header.Set("Authorization", "Bearer "+r.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp, nil
}

func apiError(resp *http.Response) error {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, e.Error.Code, e.Error.Message)
	}
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// open makes sure there is a session to talk in.
func (r *remoteChat) open(ctx context.Context, system string) error {
	if r.session != "" {
		resp, err := r.do(ctx, http.MethodGet, "/v1/sessions/"+r.session, nil)
		if err != nil {
			return fmt.Errorf("session %s: %w", r.session, err)
		}
		resp.Body.Close()
		return nil
	}
	return r.create(ctx, system)
}

func (r *remoteChat) create(ctx context.Context, system string) error {
	resp, err := r.do(ctx, http.MethodPost, "/v1/sessions", map[string]any{"system": system, "metadata": map[string]string{"title": "gateway chat"}})
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	defer resp.Body.Close()
	var s struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || s.ID == "" {
		return fmt.Errorf("create session: bad response (%v)", err)
	}
	r.session = s.ID
	return nil
}

func (r *remoteChat) history(ctx context.Context) ([]string, error) {
	resp, err := r.do(ctx, http.MethodGet, "/v1/sessions/"+r.session, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s struct {
		System   string `json:"system"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("session %s: %w", r.session, err)
	}
	var out []string
	if s.System != "" {
		out = append(out, "system: "+s.System)
	}
	for _, m := range s.Messages {
		out = append(out, m.Role+": "+m.Content)
	}
	return out, nil
}

// reset starts a new session (the old one stays listed on the server).
func (r *remoteChat) reset() error { return r.create(context.Background(), "") }

func (r *remoteChat) setSystem(text string) error { return r.create(context.Background(), text) }

func (r *remoteChat) turn(ctx context.Context, user string, out io.Writer) error {
	body := map[string]any{
		"messages":   []map[string]string{{"role": "user", "content": user}},
		"stream":     true,
		"session_id": r.session,
		"top_p":      *r.sampling.topP,
	}
	if *r.sampling.maxTokens > 0 {
		body["max_tokens"] = *r.sampling.maxTokens
	}
	if r.temperature != nil {
		body["temperature"] = *r.temperature
	}
	if *r.sampling.topK > 0 {
		body["top_k"] = *r.sampling.topK
	}
	if *r.sampling.seed >= 0 {
		body["seed"] = *r.sampling.seed
	}
	ext := map[string]any{}
	if *r.ext.template != "" {
		ext["template"] = *r.ext.template
	}
	if *r.ext.sampler != "" {
		ext["sampler"] = *r.ext.sampler
		if *r.ext.samplerArgs != "" {
			ext["sampler_args"] = json.RawMessage(*r.ext.samplerArgs)
		}
	}
	if len(ext) > 0 {
		body["extensions"] = ext
	}
	resp, err := r.do(ctx, http.MethodPost, "/v1/chat/completions", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = readChatStream(resp.Body, func(ev chatChunk) { fmt.Fprint(out, ev.content()) })
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
