package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"time"
)

// benchConfig is what one `gateway bench` run does.
type benchConfig struct {
	url          string
	apiKey       string
	model        string
	requests     int
	concurrency  int
	rate         float64 // requests/s (Poisson arrivals); 0 = closed loop at concurrency
	prompts      []string
	promptTokens int
	maxTokens    int
	duration     time.Duration
	seed         uint64
}

// benchResult is one request's measurements.
type benchResult struct {
	ttft, e2e    time.Duration
	outputTokens int
	err          error
}

// benchReport is the summary `gateway bench` prints (and emits with --json).
type benchReport struct {
	Requests        int                `json:"requests"`
	Failed          int                `json:"failed"`
	FirstError      string             `json:"first_error,omitempty"`
	DurationSeconds float64            `json:"duration_s"`
	RequestsPerSec  float64            `json:"requests_per_s"`
	OutputTokens    int                `json:"output_tokens"`
	OutputTokPerSec float64            `json:"output_tokens_per_s"`
	TTFTms          map[string]float64 `json:"ttft_ms"`
	TPOTms          map[string]float64 `json:"tpot_ms"`
	E2Ems           map[string]float64 `json:"e2e_ms"`
}

func runBench(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "bench", "bench --url URL [--requests N] [--concurrency C | --rate R] [flags]")
	lf := addLogFlags(fs, env)
	cfg := benchConfig{}
	fs.StringVar(&cfg.url, "url", "http://127.0.0.1:8080", "gateway base URL")
	fs.StringVar(&cfg.apiKey, "api-key", env.environ["GATEWAY_API_KEY"], "Bearer key (env GATEWAY_API_KEY)")
	fs.StringVar(&cfg.model, "model", "deepseek_v3", "model name sent in requests")
	fs.IntVar(&cfg.requests, "requests", 32, "number of requests (at most 100000)")
	fs.IntVar(&cfg.concurrency, "concurrency", 4, "requests in flight at once (closed loop)")
	fs.Float64Var(&cfg.rate, "rate", 0, "open loop: Poisson arrivals at this many requests/s (0 = closed loop)")
	promptFile := fs.String("prompt-file", "", "file with one prompt per line (default: synthetic prompts)")
	fs.IntVar(&cfg.promptTokens, "prompt-tokens", 32, "length of synthetic prompts in (approximate) tokens")
	fs.IntVar(&cfg.maxTokens, "max-tokens", 32, "max_tokens of each request")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Minute, "stop after this long whatever is left")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed for arrivals and sampling")
	allowRemote := fs.Bool("allow-remote", false, "allow a URL that is not on the loopback interface")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := lf.logger(env.stderr); err != nil {
		return err
	}
	if err := checkBenchTarget(cfg.url, *allowRemote); err != nil {
		return err
	}
	if cfg.requests <= 0 || cfg.requests > 100000 {
		return fmt.Errorf("--requests must be in [1, 100000], got %d", cfg.requests)
	}
	if cfg.concurrency <= 0 || cfg.concurrency > 4096 {
		return fmt.Errorf("--concurrency must be in [1, 4096], got %d", cfg.concurrency)
	}
	if cfg.rate < 0 || cfg.maxTokens <= 0 || cfg.promptTokens <= 0 {
		return errors.New("--rate must be >= 0, --max-tokens and --prompt-tokens > 0")
	}
	if *promptFile != "" {
		data, err := os.ReadFile(*promptFile)
		if err != nil {
			return fmt.Errorf("read prompts: %w", err)
		}
		for _, l := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
			if strings.TrimSpace(l) != "" {
				cfg.prompts = append(cfg.prompts, l)
			}
		}
		if len(cfg.prompts) == 0 {
			return fmt.Errorf("%s has no prompts", *promptFile)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep := benchRun(ctx, cfg, http.DefaultClient)
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printBenchReport(env.stdout, rep)
	}
	if rep.Failed == rep.Requests {
		return exitError{code: 1, msg: "every request failed: " + rep.FirstError}
	}
	return nil
}

// checkBenchTarget keeps the load generator on loopback unless told otherwise.
func checkBenchTarget(raw string, allowRemote bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want http(s)://host:port", raw)
	}
	if allowRemote {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--url %q is not a loopback address; pass --allow-remote to load another host", raw)
}

// syntheticPrompt makes a prompt of about n tokens from common one-token English words.
func syntheticPrompt(r *rand.Rand, n int) string {
	words := []string{" the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " with", " was", " on", " be", " at", " by", " this", " had", " not", " are"}
	var b strings.Builder
	b.WriteString("Continue")
	for i := 1; i < n; i++ {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.String()
}

func benchRun(ctx context.Context, cfg benchConfig, client *http.Client) benchReport {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	r := rand.New(rand.NewPCG(cfg.seed, 0x9e3779b97f4a7c15))
	prompts := make([]string, cfg.requests)
	for i := range prompts {
		if len(cfg.prompts) > 0 {
			prompts[i] = cfg.prompts[i%len(cfg.prompts)]
		} else {
			prompts[i] = syntheticPrompt(r, cfg.promptTokens)
		}
	}
	results := make([]benchResult, cfg.requests)
	start := time.Now()
	var wg sync.WaitGroup
	if cfg.rate > 0 {
		// Open loop: Poisson arrivals, no cap but the request count.
		next := start
		for i := range prompts {
			next = next.Add(time.Duration(r.ExpFloat64() / cfg.rate * float64(time.Second)))
			select {
			case <-ctx.Done():
				results[i].err = ctx.Err()
				continue
			case <-time.After(time.Until(next)):
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i] = benchOne(ctx, cfg, client, prompts[i], cfg.seed+uint64(i))
			}(i)
		}
	} else {
		jobs := make(chan int)
		for w := 0; w < cfg.concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					results[i] = benchOne(ctx, cfg, client, prompts[i], cfg.seed+uint64(i))
				}
			}()
		}
		for i := range prompts {
			jobs <- i
		}
		close(jobs)
	}
	wg.Wait()
	return summarize(results, time.Since(start))
}

// benchOne sends one streaming chat request and times its first token and its end.
func benchOne(ctx context.Context, cfg benchConfig, client *http.Client, prompt string, seed uint64) benchResult {
	body, _ := json.Marshal(map[string]any{
		"model":          cfg.model,
		"messages":       []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens":     cfg.maxTokens,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
		"seed":           seed,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cfg.url, "/")+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return benchResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.apiKey)
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return benchResult{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return benchResult{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))}
	}
	var res benchResult
	chunks := 0
	err = readChatStream(resp.Body, func(ev chatChunk) {
		if ev.content() != "" {
			if chunks == 0 {
				res.ttft = time.Since(t0)
			}
			chunks++
		}
		if ev.Usage != nil {
			res.outputTokens = ev.Usage.CompletionTokens
		}
	})
	if err != nil {
		return benchResult{err: err}
	}
	res.e2e = time.Since(t0)
	if res.outputTokens == 0 {
		res.outputTokens = chunks
	}
	if chunks == 0 {
		res.ttft = res.e2e
	}
	return res
}

func summarize(results []benchResult, elapsed time.Duration) benchReport {
	rep := benchReport{Requests: len(results), DurationSeconds: elapsed.Seconds()}
	var ttft, tpot, e2e []float64
	for _, r := range results {
		if r.err != nil {
			rep.Failed++
			if rep.FirstError == "" {
				rep.FirstError = r.err.Error()
			}
			continue
		}
		rep.OutputTokens += r.outputTokens
		ttft = append(ttft, ms(r.ttft))
		e2e = append(e2e, ms(r.e2e))
		if r.outputTokens > 1 {
			tpot = append(tpot, ms(r.e2e-r.ttft)/float64(r.outputTokens-1))
		}
	}
	if s := elapsed.Seconds(); s > 0 {
		rep.RequestsPerSec = float64(len(results)-rep.Failed) / s
		rep.OutputTokPerSec = float64(rep.OutputTokens) / s
	}
	rep.TTFTms, rep.TPOTms, rep.E2Ems = percentiles(ttft), percentiles(tpot), percentiles(e2e)
	return rep
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentiles returns p50/p90/p99 (nearest rank) and the mean of xs.
func percentiles(xs []float64) map[string]float64 {
	out := map[string]float64{"p50": 0, "p90": 0, "p99": 0, "mean": 0}
	if len(xs) == 0 {
		return out
	}
	sort.Float64s(xs)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(xs)))) - 1
		return xs[max(0, min(i, len(xs)-1))]
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	out["p50"], out["p90"], out["p99"], out["mean"] = rank(0.50), rank(0.90), rank(0.99), sum/float64(len(xs))
	return out
}

func printBenchReport(w io.Writer, r benchReport) {
	fmt.Fprintf(w, "requests: %d ok, %d failed in %.2f s\n", r.Requests-r.Failed, r.Failed, r.DurationSeconds)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
	fmt.Fprintf(w, "throughput: %.2f req/s, %.1f output tok/s (%d tokens)\n", r.RequestsPerSec, r.OutputTokPerSec, r.OutputTokens)
	fmt.Fprintf(w, "%-10s %10s %10s %10s %10s\n", "ms", "p50", "p90", "p99", "mean")
	for _, row := range []struct {
		name string
		m    map[string]float64
	}{{"TTFT", r.TTFTms}, {"TPOT", r.TPOTms}, {"E2E", r.E2Ems}} {
		fmt.Fprintf(w, "%-10s %10.2f %10.2f %10.2f %10.2f\n", row.name, row.m["p50"], row.m["p90"], row.m["p99"], row.m["mean"])
	}
}
