package model

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/convert"
	"github.com/dsgate/dsgate/core/safetensors"
)

func convertTo(t *testing.T, in, mode string, mp, group int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), mode)
	if _, err := convert.Run(context.Background(), convert.Options{Mode: mode, In: in, Out: out, MP: mp, GroupSize: group}); err != nil {
		t.Fatalf("convert %s mp%d: %v", mode, mp, err)
	}
	return out
}

func logitsOf(t *testing.T, dir string, world int, seq []int32) [][]float32 {
	t.Helper()
	cfg, err := configs.FromCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), dir, cfg, Options{WorldSize: world, NumBlocks: 16, BlockSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	l, err := m.Logits(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// TestConvertedCheckpoints loads convert's DeepSeek-format outputs (bf16, int8, int4
// group-wise and per-channel) and checks them against the bf16 checkpoint; an mp8
// conversion run on 8 ranks equals the mp1 conversion on 1 rank.
func TestConvertedCheckpoints(t *testing.T) {
	for _, name := range []string{"v3", "v2"} {
		t.Run(name, func(t *testing.T) {
			g := loadGolden(t, name)
			seq := fullSeq(g)
			bf := writeBF16Copy(t, ckptDir(name))
			ref := logitsOf(t, bf, 1, seq)
			// bf16-bf16: DeepSeek names, same weights: equal up to float32 rounding.
			same := logitsOf(t, convertTo(t, bf, convert.ModeBF16BF16, 1, 0), 1, seq)
			for i := range ref {
				if e := relErr(same[i], ref[i]); e > 1e-5 {
					t.Fatalf("bf16-bf16 position %d: rel err %.3g", i, e)
				}
			}
			for _, tc := range []struct {
				mode  string
				group int
				min   float64
			}{
				{convert.ModeBF16Int8, 0, 0.999},
				{convert.ModeBF16Int4, 0, 0.99},
				{convert.ModeBF16Int4, 32, 0.99},
				{convert.ModeBF16Int4, -1, 0.99},
			} {
				q := logitsOf(t, convertTo(t, bf, tc.mode, 1, tc.group), 1, seq)
				worst, sum := 1.0, 0.0
				for i := range ref {
					c := cosine(q[i], ref[i])
					worst = math.Min(worst, c)
					sum += c
				}
				t.Logf("%s %s group %d: logits cosine vs bf16: min %.5f mean %.5f", name, tc.mode, tc.group, worst, sum/float64(len(ref)))
				if worst < tc.min {
					t.Errorf("%s group %d: min cosine %.5f < %.3f", tc.mode, tc.group, worst, tc.min)
				}
			}
			// mp8 on 8 ranks == mp1 on 1 rank (int8: per-channel scales are shard-invariant).
			one := logitsOf(t, convertTo(t, bf, convert.ModeBF16Int8, 1, 0), 1, seq)
			eight := logitsOf(t, convertTo(t, bf, convert.ModeBF16Int8, 8, 0), 8, seq)
			worst := 0.0
			for i := range one {
				worst = math.Max(worst, relErr(eight[i], one[i]))
			}
			t.Logf("%s int8 mp8@8 vs mp1@1: worst rel diff %.3g", name, worst)
			if worst > 1e-5 {
				t.Fatalf("mp8 at world size 8 differs from mp1: %.3g", worst)
			}
		})
	}
}

// TestQuantizedBatchIndependence: with bf16, int8 and int4 weights too, a sequence's
// logits are bit-identical alone and batched with prefill chunks and decodes of others.
func TestQuantizedBatchIndependence(t *testing.T) {
	g := loadGolden(t, "v3")
	seq := fullSeq(g)
	bf := writeBF16Copy(t, ckptDir("v3"))
	for _, dir := range []string{bf, convertTo(t, bf, convert.ModeBF16Int8, 1, 0), convertTo(t, bf, convert.ModeBF16Int4, 1, 32)} {
		cfg, err := configs.FromCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Load(context.Background(), dir, cfg, Options{NumBlocks: 40, BlockSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		bA, bB := blocksFor(40, 4, 0), blocksFor(40, 4, 10)
		alone, err := m.Forward(ctx, []Seq{{Tokens: seq[:21], Blocks: bA, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(ctx, []Seq{{Tokens: seq[3:20], Blocks: bB}}); err != nil {
			t.Fatal(err)
		}
		for _, batch := range [][]Seq{
			{{Tokens: seq[20:21], Pos: 17, Blocks: bB}, {Tokens: seq[:21], Blocks: bA, AllLogits: true}},
			{{Tokens: seq[:21], Blocks: bA, AllLogits: true}, {Tokens: seq[1:9], Pos: 0, Blocks: blocksFor(40, 4, 20)}, {Tokens: seq[5:6], Pos: 3, Blocks: blocksFor(40, 4, 30)}},
		} {
			res, err := m.Forward(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			got := res[0]
			if len(batch[0].Tokens) == 1 {
				got = res[1]
			}
			for i := range alone[0] {
				if alone[0][i] != got[i] {
					t.Fatalf("%s: logit %d alone %v, batched %v", filepath.Base(dir), i, alone[0][i], got[i])
				}
			}
		}
		m.Close()
	}
}

// TestReferenceFormatFP8: DeepSeek's own convert.py output of an fp8 checkpoint
// (reference names, F8_E4M3 weights with F32 ".scale" blocks, model0-mp1.safetensors)
// loads and gives the fp8 golden logits.
func TestReferenceFormatFP8(t *testing.T) {
	g := loadGolden(t, "v3-fp8")
	dst := rewriteCheckpoint(t, ckptDir("v3-fp8"), "model0-mp1.safetensors", func(n string, tt safetensors.Tensor) (string, safetensors.DType, []byte) {
		ref, err := convert.ReferenceName(n)
		if err != nil {
			t.Fatal(err)
		}
		return ref, tt.DType, tt.Data
	})
	got := logitsOf(t, dst, 1, fullSeq(g))
	for i := range got {
		if e := relErr(got[i], g.logits[i]); e > 1e-4 {
			t.Fatalf("position %d: rel err %.3g", i, e)
		}
	}
}
