package model

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
	"github.com/dsgate/dsgate/core/safetensors"
)

func fullSeq(g golden) []int32 { return append(append([]int32{}, g.ids...), g.greedy...) }

// TestIncrementalEqualsFull: chunked prefill and one-token decode over the paged cache
// give the same logits as one pass over the whole sequence.
func TestIncrementalEqualsFull(t *testing.T) {
	for _, name := range []string{"v3", "v2"} {
		t.Run(name, func(t *testing.T) {
			g := loadGolden(t, name)
			m := loadModel(t, name, Options{})
			seq := fullSeq(g)
			full, err := m.Logits(context.Background(), seq)
			if err != nil {
				t.Fatal(err)
			}
			// Blocks in a scrambled order, so paging is really exercised.
			blocks := []int32{9, 3, 17, 0, 25, 11, 30, 5, 21, 14}
			pos, worst := 0, 0.0
			for _, n := range []int{7, 1, 9, 1, 1, 5} {
				res, err := m.Forward(context.Background(), []Seq{{Tokens: seq[pos : pos+n], Pos: pos, Blocks: blocks, AllLogits: true}})
				if err != nil {
					t.Fatal(err)
				}
				for j := 0; j < n; j++ {
					worst = math.Max(worst, relErr(res[0][j*m.VocabSize():(j+1)*m.VocabSize()], full[pos+j]))
				}
				pos += n
			}
			for ; pos < len(seq); pos++ {
				res, err := m.Forward(context.Background(), []Seq{{Tokens: seq[pos : pos+1], Pos: pos, Blocks: blocks}})
				if err != nil {
					t.Fatal(err)
				}
				worst = math.Max(worst, relErr(res[0], full[pos]))
			}
			t.Logf("%s: worst rel diff incremental vs full %.3g", name, worst)
			if worst > 1e-6 {
				t.Fatalf("incremental differs from full pass: %.3g", worst)
			}
		})
	}
}

// TestBatchIndependence: a sequence's logits are bit-identical alone and in a batch.
func TestBatchIndependence(t *testing.T) {
	g := loadGolden(t, "v3")
	m := loadModel(t, "v3", Options{NumBlocks: 64})
	seq := fullSeq(g)
	ctx := context.Background()
	bA, bB, bC := blocksFor(40, 4, 0), blocksFor(40, 4, 10), blocksFor(40, 4, 20)
	// A alone: prefill 30 tokens.
	alone, err := m.Forward(ctx, []Seq{{Tokens: seq[:30], Blocks: bA, AllLogits: true}})
	if err != nil {
		t.Fatal(err)
	}
	// B and C get some history first.
	if _, err := m.Forward(ctx, []Seq{{Tokens: seq[5:25], Blocks: bB}, {Tokens: seq[:3], Blocks: bC}}); err != nil {
		t.Fatal(err)
	}
	// A again, batched between a decode of B and a chunk of C.
	res, err := m.Forward(ctx, []Seq{
		{Tokens: seq[25:26], Pos: 20, Blocks: bB},
		{Tokens: seq[:30], Blocks: bA, AllLogits: true},
		{Tokens: seq[3:11], Pos: 3, Blocks: bC},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range alone[0] {
		if alone[0][i] != res[1][i] {
			t.Fatalf("logit %d: alone %v, batched %v", i, alone[0][i], res[1][i])
		}
	}
}

func compareModels(t *testing.T, name string, a, b *Model, tol float64) float64 {
	t.Helper()
	seq := fullSeq(loadGolden(t, name))
	la, err := a.Logits(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Logits(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range la {
		worst = math.Max(worst, relErr(lb[i], la[i]))
	}
	if worst > tol {
		t.Fatalf("rel diff %.3g > %.3g", worst, tol)
	}
	return worst
}

// TestAbsorbEqualsNaive: both MLA algorithms agree.
func TestAbsorbEqualsNaive(t *testing.T) {
	for _, name := range []string{"v3", "v2"} {
		a := loadModel(t, name, Options{})
		n := loadModel(t, name, Options{AttnImpl: "naive"})
		t.Logf("%s: absorb vs naive %.3g", name, compareModels(t, name, a, n, 1e-5))
	}
}

// TestWorldSizesAgree: 1, 2, 4 and 8 ranks agree; the reference backend agrees with cpu.
func TestWorldSizesAgree(t *testing.T) {
	for _, name := range []string{"v3", "v2"} {
		one := loadModel(t, name, Options{})
		for _, w := range []int{2, 4, 8} {
			m := loadModel(t, name, Options{WorldSize: w, AttnImpl: []string{"absorb", "naive"}[w/4%2]})
			t.Logf("%s: world %d vs 1: %.3g", name, w, compareModels(t, name, one, m, 1e-5))
		}
		ref := loadModel(t, name, Options{Backend: "reference", WorldSize: 2})
		t.Logf("%s: reference backend (world 2) vs cpu: %.3g", name, compareModels(t, name, one, ref, 1e-5))
	}
}

// writeBF16Copy writes dir's model.safetensors with every F32 weight rounded to bf16
// (the router bias stays F32, as in real checkpoints).
func writeBF16Copy(t *testing.T, src string) string {
	t.Helper()
	return rewriteCheckpoint(t, src, "model.safetensors", func(n string, tt safetensors.Tensor) (string, safetensors.DType, []byte) {
		if tt.DType != safetensors.F32 || strings.HasSuffix(n, "e_score_correction_bias") {
			return n, tt.DType, tt.Data
		}
		v, _ := tt.Float32()
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], backend.ToBF16(x))
		}
		return n, safetensors.BF16, b
	})
}

// rewriteCheckpoint copies the checkpoint folder src (config.json and
// model.safetensors) into a temporary folder, passing every tensor through each
// (which returns its new name, dtype and bytes) into the file out, and returns the
// folder.
func rewriteCheckpoint(t *testing.T, src, out string, each func(name string, tt safetensors.Tensor) (string, safetensors.DType, []byte)) string {
	t.Helper()
	dst := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.OpenFile(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var specs []safetensors.Spec
	var datas [][]byte
	for _, n := range f.Names() {
		tt, _ := f.Tensor(n)
		name, dt, data := each(n, tt)
		specs = append(specs, safetensors.Spec{Name: name, DType: dt, Shape: tt.Shape})
		datas = append(datas, data)
	}
	w, err := safetensors.Create(filepath.Join(dst, out), specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range specs {
		if err := w.WriteTensor(s.Name, datas[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestBF16Weights: bf16-rounded weights stay within 2e-2 of the float32 reference.
func TestBF16Weights(t *testing.T) {
	for _, name := range []string{"v3", "v2"} {
		g := loadGolden(t, name)
		dir := writeBF16Copy(t, ckptDir(name))
		cfg, err := configs.FromCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Load(context.Background(), dir, cfg, Options{NumBlocks: 16, BlockSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Logits(context.Background(), fullSeq(g))
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for i := range logits {
			worst = math.Max(worst, relErr(logits[i], g.logits[i]))
		}
		m.Close()
		t.Logf("%s: bf16 weights vs float32 reference: worst rel err %.3g", name, worst)
		if worst > 2e-2 {
			t.Fatalf("bf16 rel err %.3g > 2e-2", worst)
		}
	}
}

// TestFP8DequantExact: the loader's fp8 dequantization equals torch's fp8.float()*scale
// bit for bit, including partial 128×128 edge blocks.
func TestFP8DequantExact(t *testing.T) {
	g := loadGolden(t, "v3-fp8")
	cfg, err := configs.FromCheckpoint(ckptDir("v3-fp8"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := openCkpt(ckptDir("v3-fp8"), cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.set.Close()
	if len(g.extra) < 4 {
		t.Fatalf("golden has %d dequantized tensors", len(g.extra))
	}
	var specs []tensorSpec
	for l := 0; l < cfg.NLayers; l++ {
		specs = append(specs, layerSpecs(cfg, l)...)
	}
	for name, want := range g.extra {
		var hw *backend.HostWeight
		for _, s := range specs {
			if s.hfName() == name {
				hw = c.readAll(s, 1, nil)[0]
			}
		}
		if hw == nil || hw.DType != backend.F32 {
			t.Fatalf("%s: not loaded as F32 (%v)", name, c.errs)
		}
		for i, v := range want {
			if math.Float32bits(hw.F32[i]) != math.Float32bits(v) {
				t.Fatalf("%s[%d] = %v, torch %v", name, i, hw.F32[i], v)
			}
		}
	}
}

// TestStrictLoader: one error lists every missing and unused tensor.
func TestStrictLoader(t *testing.T) {
	dst := t.TempDir()
	cfgData, _ := os.ReadFile(filepath.Join(ckptDir("v3"), "config.json"))
	_ = os.WriteFile(filepath.Join(dst, "config.json"), cfgData, 0o644)
	f, err := safetensors.OpenFile(filepath.Join(ckptDir("v3"), "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	drop := map[string]bool{"model.layers.1.mlp.experts.3.up_proj.weight": true, "model.norm.weight": true}
	var specs []safetensors.Spec
	var datas [][]byte
	for _, n := range f.Names() {
		if drop[n] {
			continue
		}
		tt, _ := f.Tensor(n)
		specs = append(specs, safetensors.Spec{Name: n, DType: tt.DType, Shape: tt.Shape})
		datas = append(datas, tt.Data)
	}
	specs = append(specs, safetensors.Spec{Name: "model.layers.0.mlp.bogus.weight", DType: safetensors.F32, Shape: []int{1}},
		safetensors.Spec{Name: "model.layers.3.mtp.weight", DType: safetensors.F32, Shape: []int{1}})
	datas = append(datas, make([]byte, 4), make([]byte, 4))
	w, err := safetensors.Create(filepath.Join(dst, "model.safetensors"), specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range specs {
		if err := w.WriteTensor(s.Name, datas[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, _ := configs.FromCheckpoint(dst)
	_, err = Load(context.Background(), dst, cfg, Options{NumBlocks: 4})
	if err == nil {
		t.Fatal("incomplete checkpoint loaded")
	}
	msg := err.Error()
	for _, want := range []string{"2 missing", "model.layers.1.mlp.experts.3.up_proj.weight", "model.norm.weight",
		"1 unused", "model.layers.0.mlp.bogus.weight"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "mtp") {
		t.Errorf("MTP layer (index >= n_layers) reported: %q", msg)
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m := loadModel(t, "v3", Options{NumBlocks: 4})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		s    Seq
	}{
		{"empty", Seq{Blocks: []int32{0}}},
		{"token", Seq{Tokens: []int32{1 << 20}, Blocks: []int32{0}}},
		{"negative pos", Seq{Tokens: []int32{1}, Pos: -1, Blocks: []int32{0}}},
		{"short table", Seq{Tokens: []int32{1, 2, 3, 4, 5}, Blocks: []int32{0}}},
		{"bad block", Seq{Tokens: []int32{1}, Blocks: []int32{4}}},
	} {
		if _, err := m.Forward(ctx, []Seq{tc.s}); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Forward(cctx, []Seq{{Tokens: []int32{1}, Blocks: []int32{0}}}); err == nil {
		t.Error("cancelled context accepted")
	}
	// The model still works after errors.
	if _, err := m.Forward(ctx, []Seq{{Tokens: []int32{1, 2}, Blocks: []int32{0}}}); err != nil {
		t.Fatal(err)
	}
}

func TestRopeFreqsMatchSpec(t *testing.T) {
	// spec §5.4 table: V3 frequencies with YaRN (bits).
	cfg, err := configs.Embedded("config_671B.json")
	if err != nil {
		t.Fatal(err)
	}
	f := RopeFreqs(cfg)
	for i, want := range map[int]uint32{0: 0x3f800000, 10: 0x3d6655c2, 11: 0x3d1fc5ba, 16: 0x3bb43959, 23: 0x380bd472, 31: 0x365fba50} {
		if got := math.Float32bits(f[i]); got != want {
			t.Errorf("f[%d] = %#x, want %#x", i, got, want)
		}
	}
	if s := SoftmaxScale(cfg); math.Abs(float64(s)-0.13523377478122711) > 1e-7 {
		t.Errorf("scale %v", s)
	}
}

// FuzzForwardInputs: arbitrary sequences never panic; invalid ones are errors.
func FuzzForwardInputs(f *testing.F) {
	f.Add([]byte{1, 2, 3}, 0, uint8(1), int32(0))
	f.Add([]byte{255, 0}, 14, uint8(2), int32(3))
	f.Add([]byte{}, -3, uint8(0), int32(-1))
	m := loadModel(f, "v3", Options{NumBlocks: 4, BlockSize: 4})
	f.Fuzz(func(t *testing.T, toks []byte, pos int, nblocks uint8, block int32) {
		s := Seq{Pos: pos, AllLogits: len(toks)%2 == 0}
		for _, b := range toks {
			s.Tokens = append(s.Tokens, int32(b)*3-20)
		}
		for i := 0; i < int(nblocks%6); i++ {
			s.Blocks = append(s.Blocks, block+int32(i))
		}
		res, err := m.Forward(context.Background(), []Seq{s})
		if err == nil {
			want := m.VocabSize()
			if s.AllLogits {
				want *= len(s.Tokens)
			}
			if len(res) != 1 || len(res[0]) != want {
				t.Fatalf("got %d results", len(res))
			}
		}
	})
}
