package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
)

// Benchmarks. Models:
//   - "fake": the deterministic fake with a 129280-entry vocabulary (DeepSeek-V3's), so
//     the numbers are the engine's own cost (scheduling, sampling, streaming);
//   - "tiny": the real tiny checkpoint of core/model/testdata (vocab 512, dim 64,
//     3 layers), its context raised for the 2,000-token prefix;
//   - "ckpt": the checkpoint in $DSGATE_BENCH_CKPT when set (e.g. one made by
//     `gateway init-demo` with config_tiny), the way to measure config_tiny.
//
// go test -run - -bench . -benchtime 3x ./core/engine

func benchModels(b *testing.B, needLen int) map[string]Model {
	out := map[string]Model{}
	f := newFake(129280, 16, 4096, 8192)
	f.table = make([]float32, f.vocab)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range f.table {
		f.table[i] = float32(r.NormFloat64() * 3)
	}
	out["fake"] = f
	load := func(dir string, blocks int) Model {
		cfg, err := configs.FromCheckpoint(dir)
		if err != nil {
			b.Fatal(err)
		}
		// A longer context than the tiny checkpoint was made for changes its numbers
		// (not its cost): fine for timing.
		cfg.MaxSeqLen = max(cfg.MaxSeqLen, needLen)
		m, err := model.Load(context.Background(), dir, cfg, model.Options{BlockSize: 16, NumBlocks: blocks})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = m.Close() })
		return m
	}
	out["tiny"] = load(realCkpt, 512)
	if dir := os.Getenv("DSGATE_BENCH_CKPT"); dir != "" {
		out["ckpt"] = load(dir, 1024)
	}
	return out
}

// BenchmarkDecode reports generated tokens per second with batch concurrent requests
// of a short prompt and 64 (fake) or 96 (models) new tokens each.
func BenchmarkDecode(b *testing.B) {
	models := benchModels(b, 120)
	for _, name := range []string{"fake", "tiny", "ckpt"} {
		m, ok := models[name]
		if !ok {
			continue
		}
		for _, batch := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				newTok := 64
				if name != "fake" {
					newTok = min(96, m.MaxSeqLen()-8)
				}
				e := newEngine(b, m, Options{MaxBatchSize: 32, TokenBudget: 512, EOS: []int32{-1}})
				r := rand.New(rand.NewPCG(2, 2))
				var total int
				b.ResetTimer()
				for b.Loop() {
					reqs := make([]Request, batch)
					for i := range reqs {
						reqs[i] = Request{Prompt: randPrompt(r, 8, m.VocabSize()), MaxTokens: newTok}
					}
					for _, res := range runAll(b, e, reqs) {
						total += len(res.tokens)
					}
				}
				b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "tok/s")
				st := e.Stats()
				b.ReportMetric(st.StepSeconds/float64(st.Steps)*1e3, "ms/step")
			})
		}
	}
}

// BenchmarkTTFTPrefix reports the time to first token of a request whose 2,000-token
// prefix was seen before (same tenant: served from the prefix cache) versus the same
// request from another tenant (no reuse: the whole prompt is prefilled).
func BenchmarkTTFTPrefix(b *testing.B) {
	const prefixLen = 2000
	models := benchModels(b, prefixLen+16)
	for _, name := range []string{"fake", "tiny", "ckpt"} {
		m, ok := models[name]
		if !ok {
			continue
		}
		if f, ok := m.(*fakeModel); ok {
			f.work = 400 // give prefill a per-token cost, a few µs
		}
		for _, reuse := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/reuse=%v", name, reuse), func(b *testing.B) {
				e := newEngine(b, m, Options{MaxBatchSize: 8, TokenBudget: 512, EOS: []int32{-1}})
				r := rand.New(rand.NewPCG(3, 3))
				prefix := randPrompt(r, prefixLen, m.VocabSize())
				run(b, e, Request{Prompt: prefix, MaxTokens: 1, Tenant: "warm"})
				var ttft time.Duration
				var cached int
				i := 0
				b.ResetTimer()
				for b.Loop() {
					i++
					tenant := "warm"
					if !reuse {
						tenant = fmt.Sprintf("cold-%d", i)
					}
					prompt := append(slices.Clone(prefix), randPrompt(r, 8, m.VocabSize())...)
					start := time.Now()
					ch, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 1, Tenant: tenant})
					if err != nil {
						b.Fatal(err)
					}
					var once sync.Once
					for ev := range ch {
						once.Do(func() { ttft += time.Since(start) })
						if ev.Finish != "" {
							cached += ev.Usage.CachedPromptTokens
						}
					}
				}
				b.ReportMetric(ttft.Seconds()*1e3/float64(i), "ms/TTFT")
				b.ReportMetric(float64(cached)/float64(i), "cached-tokens")
			})
		}
	}
}
