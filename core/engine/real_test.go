package engine

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/safetensors"
	"github.com/dsgate/dsgate/core/sample"
)

// The real model tests use the tiny DeepSeek-V3-shaped checkpoint of core/model's
// testdata and its Hugging Face transformers golden (prompt ids and greedy
// continuation, made by core/model/testdata/gen_goldens.py).
var realCkpt = filepath.Join("..", "model", "testdata", "v3")

func loadReal(t testing.TB, numBlocks int) *model.Model {
	t.Helper()
	cfg, err := configs.FromCheckpoint(realCkpt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(context.Background(), realCkpt, cfg, model.Options{BlockSize: 4, NumBlocks: numBlocks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// realGolden returns the golden prompt and the transformers greedy continuation.
func realGolden(t testing.TB) (ids, greedy []int32) {
	t.Helper()
	f, err := safetensors.OpenFile(realCkpt + ".golden.safetensors")
	if err != nil {
		t.Fatalf("golden missing (core/model/testdata/gen_goldens.py): %v", err)
	}
	defer f.Close()
	for name, dst := range map[string]*[]int32{"ids": &ids, "greedy": &greedy} {
		tt, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if *dst, err = tt.Int32s(); err != nil {
			t.Fatal(err)
		}
	}
	return ids, greedy
}

// The engine's greedy output on the real tiny model equals transformers' greedy
// continuation: alone, in a batch with chunked prefill next to other prompts, with
// several tenants, and again from the prefix cache.
func TestRealModelMatchesTransformers(t *testing.T) {
	m := loadReal(t, 128)
	ids, greedy := realGolden(t)
	e := newEngine(t, m, Options{MaxBatchSize: 8, TokenBudget: 16, EOS: []int32{-1}})
	r := rand.New(rand.NewPCG(8, 8))
	var reqs []Request
	for i := range 8 {
		if i%2 == 0 {
			reqs = append(reqs, Request{Prompt: ids, MaxTokens: len(greedy), Tenant: string(rune('a' + i))})
		} else {
			reqs = append(reqs, Request{Prompt: randPrompt(r, 5+r.IntN(30), m.VocabSize()), MaxTokens: 10, Sampling: sample.Params{Temperature: 1, Seed: u64(uint64(i))}})
		}
	}
	res := runAll(t, e, reqs)
	for i := 0; i < len(reqs); i += 2 {
		if !slices.Equal(res[i].tokens, greedy) {
			t.Fatalf("request %d: %v, transformers %v", i, res[i].tokens, greedy)
		}
	}
	again := run(t, e, Request{Prompt: ids, MaxTokens: len(greedy), Tenant: "a"})
	if again.usage.CachedPromptTokens == 0 || !slices.Equal(again.tokens, greedy) {
		t.Fatalf("from cache: usage %+v tokens %v, want %v", again.usage, again.tokens, greedy)
	}
}

// Seeded sampling and greedy decoding on the real model give the same tokens alone and
// in a mixed batch; a second turn from the prefix cache gives the same tokens as a
// fresh engine; a pool too small for the batch preempts without changing anything.
func TestRealModelBatchAndPrefix(t *testing.T) {
	m := loadReal(t, 40) // 160 positions: the batch below does not fit at once
	r := rand.New(rand.NewPCG(9, 9))
	var reqs []Request
	for i := range 6 {
		q := Request{Prompt: randPrompt(r, 4+r.IntN(20), m.VocabSize()), MaxTokens: 24}
		if i%2 == 1 {
			q.Sampling = sample.Params{Temperature: 0.8, TopP: 0.9, Seed: u64(uint64(100 + i))}
		}
		reqs = append(reqs, q)
	}
	alone := newEngine(t, m, Options{MaxBatchSize: 1, EOS: []int32{-1}})
	var solo []result
	for _, q := range reqs {
		solo = append(solo, run(t, alone, q))
	}
	turn2 := append(append(slices.Clone(reqs[0].Prompt), solo[0].tokens...), 7, 8, 9)
	fresh := run(t, alone, Request{Prompt: turn2, MaxTokens: 8, Tenant: "fresh"})
	_ = alone.Close()

	e := newEngine(t, m, Options{MaxBatchSize: 6, TokenBudget: 12, EOS: []int32{-1}})
	mixed := runAll(t, e, reqs)
	for i := range reqs {
		if !slices.Equal(solo[i].tokens, mixed[i].tokens) {
			t.Fatalf("request %d: alone %v, mixed %v", i, solo[i].tokens, mixed[i].tokens)
		}
	}
	if st := waitIdle(t, e); st.Preemptions == 0 || st.KVBlocksUsed != 0 {
		t.Fatalf("expected preemptions and no block left in use: %+v", st)
	}
	if first := run(t, e, reqs[0]); !slices.Equal(first.tokens, solo[0].tokens) {
		t.Fatalf("turn 1 again: %v, want %v", first.tokens, solo[0].tokens)
	}
	cached := run(t, e, Request{Prompt: turn2, MaxTokens: 8})
	if cached.usage.CachedPromptTokens == 0 || !slices.Equal(cached.tokens, fresh.tokens) {
		t.Fatalf("turn 2 from cache: usage %+v tokens %v, fresh %v", cached.usage, cached.tokens, fresh.tokens)
	}
}
