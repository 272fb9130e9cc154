package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
)

// samplingFlags are the per-request sampling flags of batch and chat. The temperature
// is the config field of the same name (--temperature, GATEWAY_TEMPERATURE, or the
// config file's "temperature"), as in the original project.
type samplingFlags struct {
	maxTokens *int
	topP      *float64
	topK      *int
	minP      *float64
	seed      *int64
}

func addSamplingFlags(fs *pflag.FlagSet) *samplingFlags {
	return &samplingFlags{
		maxTokens: fs.Int("max-tokens", 0, "tokens to generate per answer (default: the config's max_new_tokens)"),
		topP:      fs.Float64("top-p", 1, "nucleus sampling mass"),
		topK:      fs.Int("top-k", 0, "keep only the k most likely tokens (0 = off)"),
		minP:      fs.Float64("min-p", 0, "drop tokens below min-p times the top probability"),
		seed:      fs.Int64("seed", -1, "sampling seed (-1 = random)"),
	}
}

// request fills the sampling part of an engine request from the flags and the config.
func (sf *samplingFlags) request(s *stack) (engine.Request, error) {
	req := engine.Request{MaxTokens: *sf.maxTokens}
	if req.MaxTokens <= 0 {
		req.MaxTokens = s.cfg.MaxNewTokens
	}
	req.Sampling = sample.Params{Temperature: float32(s.cfg.Temperature), TopP: float32(*sf.topP), TopK: *sf.topK, MinP: float32(*sf.minP)}
	if *sf.seed >= 0 {
		seed := uint64(*sf.seed)
		req.Sampling.Seed = &seed
	}
	return req, req.Sampling.Validate()
}

// batchPrompt is one non-blank input line.
type batchPrompt struct {
	index int // among prompts, from 0
	line  int // in the file, from 1
	text  string
}

// batchResult is what `batch --output` writes per prompt (one JSON object a line).
type batchResult struct {
	Index        int        `json:"index"`
	Line         int        `json:"line"`
	Prompt       string     `json:"prompt"`
	Completion   string     `json:"completion"`
	FinishReason string     `json:"finish_reason"`
	Usage        batchUsage `json:"usage"`
	Error        string     `json:"error,omitempty"`
}

// batchUsage counts one prompt's tokens, with OpenAI's names.
type batchUsage struct {
	PromptTokens       int `json:"prompt_tokens"`
	CachedPromptTokens int `json:"cached_prompt_tokens"`
	CompletionTokens   int `json:"completion_tokens"`
	TotalTokens        int `json:"total_tokens"`
}

// readPrompts splits input into prompts: one a line, CRLF tolerated, blank lines
// skipped and counted. A line that is not UTF-8 is an error naming it.
func readPrompts(r io.Reader) (prompts []batchPrompt, blank int, err error) {
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		text, rerr := br.ReadString('\n')
		if rerr != nil && rerr != io.EOF {
			return nil, 0, fmt.Errorf("read prompts: %w", rerr)
		}
		if text == "" && rerr == io.EOF {
			break
		}
		text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
		switch {
		case !utf8.ValidString(text):
			return nil, 0, fmt.Errorf("line %d is not valid UTF-8", line)
		case strings.TrimSpace(text) == "":
			blank++
		default:
			prompts = append(prompts, batchPrompt{index: len(prompts), line: line, text: text})
		}
		if rerr == io.EOF {
			break
		}
	}
	return prompts, blank, nil
}

func runBatch(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "batch", "batch INPUTS.txt|- [--output out.jsonl] [flags]")
	lf := addLogFlags(fs, env)
	mf := addModelFlags(fs, env)
	sf := addSamplingFlags(fs)
	xf := addExtFlags(fs, env)
	output := fs.String("output", "", "write one JSON object per prompt to this file instead of text on stdout")
	raw := fs.Bool("raw", false, "send each line as raw text (BOS + line), without the chat template")
	fs.Bool("chat", true, "apply the chat template to each line as one user turn (the default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError{code: 2, msg: "want exactly one input file (or - for stdin)"}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return err
	}
	in := env.stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("open prompts: %w", err)
		}
		defer f.Close()
		in = f
	}
	prompts, blank, err := readPrompts(in)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s, err := mf.load(ctx, env, log)
	if err != nil {
		return err
	}
	defer s.Close()
	base, err := sf.request(s)
	if err != nil {
		return err
	}
	ext, err := xf.open(ctx, s.tok, log)
	if err != nil {
		return err
	}
	defer ext.Close()
	out := env.stdout
	var outFile *os.File
	if *output != "" {
		outFile, err = os.Create(*output)
		if err != nil {
			return fmt.Errorf("create output: %w", err)
		}
		defer outFile.Close()
		out = outFile
	}
	var bar *progressbar.ProgressBar
	if isTerminal(env.stderr) {
		bar = progressbar.NewOptions(len(prompts), progressbar.OptionSetWriter(env.stderr), progressbar.OptionSetDescription("batch"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	start := time.Now()
	results := runPrompts(ctx, s, ext, prompts, base, !*raw, s.cfg.MaxBatchSize, log, func(r batchResult) {
		if bar != nil {
			_ = bar.Add(1)
		}
	}, func(r batchResult) error { return writeBatchResult(out, r, *output != "") })
	if bar != nil {
		_ = bar.Finish()
	}
	elapsed := time.Since(start)
	if outFile != nil {
		if err := outFile.Sync(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	var failed []string
	var promptToks, genToks int
	for _, r := range results {
		promptToks += r.Usage.PromptTokens
		genToks += r.Usage.CompletionTokens
		if r.Error != "" {
			failed = append(failed, fmt.Sprint(r.Line))
		}
	}
	fmt.Fprintf(env.stderr, "batch: %d prompts (%d blank lines skipped), %d failed; %d prompt + %d generated tokens in %.1f s: %.1f tokens/s generated\n",
		len(prompts), blank, len(failed), promptToks, genToks, elapsed.Seconds(), float64(genToks)/max(elapsed.Seconds(), 1e-9))
	if len(failed) > 0 {
		return exitError{code: 1, msg: "failed prompts on lines " + strings.Join(failed, ", ")}
	}
	return nil
}

// submitter is the part of the engine batch uses.
type submitter interface {
	Submit(ctx context.Context, req engine.Request) (<-chan engine.Event, error)
}

// runPrompts runs every prompt through the engine with at most inflight in flight and
// calls emit with the results in input order (as soon as each one and all before it are
// done). done is called in completion order.
func runPrompts(ctx context.Context, s *stack, ext *extensionSet, prompts []batchPrompt, base engine.Request, chat bool, inflight int, log *slog.Logger, done func(batchResult), emit func(batchResult) error) []batchResult {
	return runPromptsWith(ctx, s.eng, s.tok, ext, prompts, base, chat, inflight, log, done, emit)
}

func runPromptsWith(ctx context.Context, eng submitter, tok *tokenizer.Tokenizer, ext *extensionSet, prompts []batchPrompt, base engine.Request, chat bool, inflight int, log *slog.Logger, done func(batchResult), emit func(batchResult) error) []batchResult {
	results := make([]batchResult, len(prompts))
	ready := make([]chan struct{}, len(prompts))
	for i := range ready {
		ready[i] = make(chan struct{})
	}
	sem := make(chan struct{}, max(1, inflight))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, p := range prompts {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				for j := i; j < len(prompts); j++ {
					results[j] = batchResult{Index: prompts[j].index, Line: prompts[j].line, Prompt: prompts[j].text, FinishReason: "cancelled", Error: ctx.Err().Error()}
					close(ready[j])
				}
				return
			}
			wg.Add(1)
			go func(i int, p batchPrompt) {
				defer wg.Done()
				defer func() { <-sem }()
				results[i] = runOnePrompt(ctx, eng, tok, ext, p, base, chat)
				if results[i].Error != "" {
					log.Warn("prompt failed", "line", p.line, "err", results[i].Error)
				}
				done(results[i])
				close(ready[i])
			}(i, p)
		}
	}()
	var werr error
	for i := range prompts {
		<-ready[i]
		if werr == nil {
			werr = emit(results[i])
		}
	}
	wg.Wait()
	if werr != nil {
		for i := range results {
			if results[i].Error == "" {
				results[i].Error = "write output: " + werr.Error()
			}
		}
	}
	return results
}

func runOnePrompt(ctx context.Context, eng submitter, tok *tokenizer.Tokenizer, ext *extensionSet, p batchPrompt, base engine.Request, chat bool) batchResult {
	res := batchResult{Index: p.index, Line: p.line, Prompt: p.text}
	req := base
	if chat {
		text, err := ext.prompt(ctx, tok, []tokenizer.Message{{Role: "user", Content: p.text}}, true)
		if err != nil {
			res.Error, res.FinishReason = err.Error(), "error"
			return res
		}
		req.Prompt = tok.Encode(text, false)
	} else {
		req.Prompt = tok.Encode(p.text, true)
	}
	seed := uint64(p.index)
	if base.Sampling.Seed != nil {
		seed += *base.Sampling.Seed
	}
	if err := ext.attachSampler(ctx, &req, seed); err != nil {
		res.Error, res.FinishReason = err.Error(), "error"
		return res
	}
	events, err := eng.Submit(ctx, req)
	for errors.Is(err, engine.ErrOverloaded) && ctx.Err() == nil {
		// batch only ever waits: the queue is shared with nobody, so it drains
		time.Sleep(20 * time.Millisecond)
		events, err = eng.Submit(ctx, req)
	}
	if err != nil {
		if req.Policy != nil {
			_ = req.Policy.Close()
		}
		res.Error, res.FinishReason = err.Error(), "error"
		return res
	}
	var b strings.Builder
	for ev := range events {
		b.WriteString(ev.Text)
		if ev.Finish != "" {
			u := ev.Usage
			res.FinishReason = ev.Finish
			res.Usage = batchUsage{u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens, u.PromptTokens + u.CompletionTokens}
			if ev.Err != nil {
				res.Error = ev.Err.Error()
			}
		}
	}
	res.Completion = b.String()
	if res.FinishReason == "cancelled" && res.Error == "" {
		res.Error = "cancelled"
	}
	return res
}

func writeBatchResult(w io.Writer, r batchResult, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	status := r.FinishReason
	if r.Error != "" {
		status = "error: " + r.Error
	}
	_, err := fmt.Fprintf(w, "### prompt %d (line %d)\n%s\n### completion (%s)\n%s\n\n", r.Index+1, r.Line, r.Prompt, status, r.Completion)
	return err
}
