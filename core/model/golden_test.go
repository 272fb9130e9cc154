package model

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/safetensors"
)

// golden is what gen_goldens.py computed with transformers in float32.
type golden struct {
	ids    []int32
	logits [][]float32 // every position of prompt + continuation
	greedy []int32
	extra  map[string][]float32
}

func loadGolden(t testing.TB, name string) golden {
	t.Helper()
	f, err := safetensors.OpenFile(filepath.Join("testdata", name+".golden.safetensors"))
	if err != nil {
		t.Fatalf("golden %s missing (run testdata/gen_goldens.py): %v", name, err)
	}
	defer f.Close()
	get := func(n string) safetensors.Tensor {
		tt, err := f.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	var g golden
	g.ids, _ = get("ids").Int32s()
	g.greedy, _ = get("greedy").Int32s()
	lt := get("logits")
	all, err := lt.Float32()
	if err != nil {
		t.Fatal(err)
	}
	v := lt.Shape[1]
	for i := 0; i < lt.Shape[0]; i++ {
		g.logits = append(g.logits, all[i*v:(i+1)*v])
	}
	g.extra = map[string][]float32{}
	for _, n := range f.Names() {
		if len(n) > 8 && n[:8] == "dequant." {
			g.extra[n[8:]], _ = get(n).Float32()
		}
	}
	return g
}

func ckptDir(name string) string { return filepath.Join("testdata", name) }

func loadModel(t testing.TB, name string, opt Options) *Model {
	t.Helper()
	cfg, err := configs.FromCheckpoint(ckptDir(name))
	if err != nil {
		t.Fatal(err)
	}
	if opt.NumBlocks == 0 {
		opt.NumBlocks = 32
	}
	if opt.BlockSize == 0 {
		opt.BlockSize = 4
	}
	m, err := Load(context.Background(), ckptDir(name), cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

func blocksFor(n, bs int, first int32) []int32 {
	var out []int32
	for i := 0; i < (n+bs-1)/bs; i++ {
		out = append(out, first+int32(i))
	}
	return out
}

// TestGoldenLogits: every position within 1e-4 of transformers, identical greedy tokens.
func TestGoldenLogits(t *testing.T) {
	for _, name := range []string{"v3", "v2", "v3-fp8"} {
		t.Run(name, func(t *testing.T) {
			g := loadGolden(t, name)
			m := loadModel(t, name, Options{})
			seq := append(append([]int32{}, g.ids...), g.greedy...)
			logits, err := m.Logits(context.Background(), seq)
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for i := range g.logits {
				e := relErr(logits[i], g.logits[i])
				worst = math.Max(worst, e)
				if e > 1e-4 {
					t.Errorf("position %d: rel err %.3g > 1e-4", i, e)
				}
			}
			t.Logf("%s: worst rel err over %d positions %.3g", name, len(g.logits), worst)
			// Greedy continuation over the cache: prefill the prompt, then one token at a time.
			ctx := context.Background()
			blocks := blocksFor(len(seq), m.BlockSize(), 0)
			res, err := m.Forward(ctx, []Seq{{Tokens: g.ids, Blocks: blocks}})
			if err != nil {
				t.Fatal(err)
			}
			var got []int32
			for i := 0; i < len(g.greedy); i++ {
				next := argmax(res[0])
				got = append(got, next)
				if res, err = m.Forward(ctx, []Seq{{Tokens: []int32{next}, Pos: len(g.ids) + i, Blocks: blocks}}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range got {
				if got[i] != g.greedy[i] {
					t.Fatalf("greedy tokens %v, want %v", got, g.greedy)
				}
			}
		})
	}
}
