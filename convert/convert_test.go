package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/safetensors"
)

const fp8Dir = "testdata/fp8ckpt"

func run(t testing.TB, opt Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func openSet(t testing.TB, dir string) *safetensors.Set {
	t.Helper()
	s, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func checkManifest(t *testing.T, dir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) < 3 {
		t.Fatalf("manifest has %d lines", len(lines))
	}
	for _, l := range lines {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("bad manifest line %q", l)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(data)
		if hex.EncodeToString(h[:]) != sum {
			t.Fatalf("manifest: %s does not match", name)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

// TestFP8ToBF16MatchesReference: fp8-bf16 gives exactly the bf16 weights the reference
// dequantization (numpy f32 multiply + ml_dtypes RNE, = torch) computed, including
// partial 128x128 edge blocks and a scale stored in another shard.
func TestFP8ToBF16MatchesReference(t *testing.T) {
	out := t.TempDir()
	run(t, Options{Mode: ModeFP8BF16, In: fp8Dir, Out: out})
	exp, err := safetensors.OpenFile("testdata/expected_bf16.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	got := openSet(t, out)
	in := openSet(t, fp8Dir)
	if got.Layout != safetensors.LayoutHFIndex || len(got.Files) != 2 {
		t.Fatalf("output layout %s with %d files", got.Layout, len(got.Files))
	}
	checked := 0
	for _, e := range in.Entries() {
		if strings.HasSuffix(e.Name, "_scale_inv") {
			if got.Has(e.Name) {
				t.Errorf("%s kept", e.Name)
			}
			continue
		}
		g, err := got.Tensor(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if f, _ := got.FileOf(e.Name); filepath.Base(f.Path) != e.File {
			t.Errorf("%s moved from %s to %s", e.Name, e.File, filepath.Base(f.Path))
		}
		if e.DType != safetensors.F8E4M3 {
			src, _ := in.Tensor(e.Name)
			if g.DType != e.DType || !bytes.Equal(g.Data, src.Data) {
				t.Errorf("%s: not copied unchanged", e.Name)
			}
			continue
		}
		want, err := exp.Tensor(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if g.DType != safetensors.BF16 || !slices.Equal(g.Shape, e.Shape) {
			t.Fatalf("%s: %s %v", e.Name, g.DType, g.Shape)
		}
		if !bytes.Equal(g.Data, want.Data) {
			t.Fatalf("%s: dequantized bf16 differs from the reference", e.Name)
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("only %d fp8 tensors checked", checked)
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if bytes.Contains(cfg, []byte("quantization_config")) || !bytes.Contains(cfg, []byte(`"hidden_size"`)) {
		t.Errorf("config.json: %s", cfg)
	}
	if _, err := os.Stat(filepath.Join(out, "tokenizer_config.json")); err != nil {
		t.Error(err)
	}
	checkManifest(t, out)
}

func TestDequantFP8Errors(t *testing.T) {
	dst := make([]uint16, 4)
	if err := DequantFP8(dst, make([]byte, 4), 2, 2, []float32{1, 2}); err == nil {
		t.Error("wrong scale count accepted")
	}
	if err := DequantFP8(dst, make([]byte, 3), 2, 2, []float32{1}); err == nil {
		t.Error("wrong weight size accepted")
	}
}

// refDim is the split dimension (reference orientation (n, k)) of a reference name.
func refDim(name string) int {
	parts := strings.Split(name, ".")
	if strings.Contains(name, ".experts.") {
		return -1
	}
	switch parts[len(parts)-2] {
	case "embed", "head", "wq", "wq_b", "wkv_b", "w1", "w3":
		return 0
	case "wo", "w2":
		return 1
	}
	return -1
}

// concat joins row-major 2-D (or 1-D) byte tensors along axis.
func concat(parts [][]byte, shapes [][]int, esz, axis int) []byte {
	if axis == 0 || len(shapes[0]) == 1 {
		return bytes.Join(parts, nil)
	}
	rows := shapes[0][0]
	var out []byte
	for r := range rows {
		for i, p := range parts {
			w := shapes[i][1] * esz
			out = append(out, p[r*w:(r+1)*w]...)
		}
	}
	return out
}

// TestMPConcatenatesToMP1: an mp8 conversion's rank tensors, joined as FORMATS.md
// says, equal the mp1 conversion byte for byte, in every mode.
func TestMPConcatenatesToMP1(t *testing.T) {
	in := t.TempDir()
	writeSynth(t, in, tinySynth, 42)
	for _, tc := range []struct {
		mode  string
		group int
	}{{ModeBF16BF16, -1}, {ModeBF16Int8, -1}, {ModeBF16Int4, 0}, {ModeBF16Int4, 32}} {
		t.Run(fmt.Sprintf("%s-g%d", tc.mode, tc.group), func(t *testing.T) {
			o1, o8 := t.TempDir(), t.TempDir()
			run(t, Options{Mode: tc.mode, In: in, Out: o1, MP: 1, GroupSize: tc.group})
			run(t, Options{Mode: tc.mode, In: in, Out: o8, MP: 8, GroupSize: tc.group})
			s1, s8 := openSet(t, o1), openSet(t, o8)
			if s8.Layout != safetensors.LayoutMP || s8.MP != 8 {
				t.Fatalf("mp8 output: %s %d", s8.Layout, s8.MP)
			}
			quant := tc.mode != ModeBF16BF16
			seen := 0
			for _, name := range s1.Names() {
				full, _ := s1.Tensor(name)
				var parts [][]byte
				var shapes [][]int
				for r := range 8 {
					tn, err := s8.RankTensor(r, name)
					if err != nil {
						continue // routed expert on another rank
					}
					parts = append(parts, tn.Data)
					shapes = append(shapes, tn.Shape)
				}
				base := strings.TrimSuffix(strings.TrimSuffix(name, ".weight"), ".scale")
				isQ := quant && Quantized(base+".weight")
				dim := refDim(base + ".weight")
				var got []byte
				switch {
				case strings.Contains(name, ".experts."):
					if len(parts) != 1 {
						t.Fatalf("%s on %d ranks", name, len(parts))
					}
					got = parts[0]
				case dim < 0:
					for _, p := range parts[1:] {
						if !bytes.Equal(p, parts[0]) {
							t.Fatalf("%s: replicated tensor differs across ranks", name)
						}
					}
					got = parts[0]
				case !isQ:
					got = concat(parts, shapes, full.DType.Size(), dim)
				case strings.HasSuffix(name, ".weight"): // stored (k, n): n-split joins axis 1
					got = concat(parts, shapes, full.DType.Size(), 1-dim)
				case len(full.Shape) == 1 && dim == 1: // per-channel scale of a row-split tensor
					for _, p := range parts[1:] {
						if !bytes.Equal(p, parts[0]) {
							t.Fatalf("%s: per-channel scale differs across ranks", name)
						}
					}
					got = parts[0]
				default: // scale (n,) or (groups, n)
					got = concat(parts, shapes, 2, 1-dim)
				}
				if !bytes.Equal(got, full.Data) {
					t.Fatalf("%s: mp8 shards do not join to the mp1 tensor", name)
				}
				seen++
			}
			if seen < 50 {
				t.Fatalf("only %d tensors compared", seen)
			}
			if quant && !s1.Has("layers.1.ffn.experts.3.w2.scale") {
				t.Fatal("expert scale missing")
			}
			checkManifest(t, o8)
		})
	}
}

// TestReferenceFormat checks names, dtypes, shapes and the config of a DeepSeek-format
// conversion from the fp8 golden checkpoint, and that bf16-bf16 weights equal the
// reference dequantization.
func TestReferenceFormat(t *testing.T) {
	exp, err := safetensors.OpenFile("testdata/expected_bf16.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	out := t.TempDir()
	run(t, Options{Mode: ModeBF16BF16, In: fp8Dir, Out: out, MP: 2})
	s := openSet(t, out)
	for _, name := range s.Names() {
		if strings.HasPrefix(name, "layers.2.") {
			t.Fatalf("MTP tensor %s kept", name)
		}
	}
	for hf, ref := range map[string]string{
		"model.layers.0.self_attn.q_b_proj.weight":      "layers.0.attn.wq_b.weight",
		"model.layers.1.mlp.experts.3.down_proj.weight": "layers.1.ffn.experts.3.w2.weight",
		"model.layers.0.self_attn.o_proj.weight":        "layers.0.attn.wo.weight",
	} {
		want, _ := exp.Tensor(hf)
		var parts [][]byte
		var shapes [][]int
		for r := range 2 {
			tn, err := s.RankTensor(r, ref)
			if err != nil {
				continue
			}
			parts = append(parts, tn.Data)
			shapes = append(shapes, tn.Shape)
		}
		got := parts[0]
		if d := refDim(ref); d >= 0 {
			got = concat(parts, shapes, 2, d)
		}
		if !bytes.Equal(got, want.Data) {
			t.Errorf("%s: differs from the reference dequantization of %s", ref, hf)
		}
	}
	bias, err := s.RankTensor(1, "layers.1.ffn.gate.bias")
	if err != nil || bias.DType != safetensors.F32 {
		t.Fatalf("router bias: %v %v", bias.DType, err)
	}
	if e, err := s.RankTensor(1, "layers.1.ffn.experts.3.w1.weight"); err != nil || !slices.Equal(e.Shape, []int{48, 200}) {
		t.Fatalf("expert 3 on rank 1: %v", err)
	}
	if _, err := s.RankTensor(0, "layers.1.ffn.experts.3.w1.weight"); err == nil {
		t.Fatal("expert 3 also on rank 0")
	}
	cfg, err := configs.FromCheckpoint(out)
	if err != nil || cfg.Dtype != "bf16" || cfg.Dim != 200 {
		t.Fatalf("config: %+v %v", cfg, err)
	}

	out4 := t.TempDir()
	run(t, Options{Mode: ModeBF16Int4, In: fp8Dir, Out: out4, MP: 2, GroupSize: -1})
	s4 := openSet(t, out4)
	w, _ := s4.RankTensor(0, "layers.0.ffn.w2.weight") // (n=200, k=272) split on k
	sc, _ := s4.RankTensor(0, "layers.0.ffn.w2.scale") // groups over the rank's 136 rows
	if w.DType != safetensors.I32 || !slices.Equal(w.Shape, []int{136, 25}) || !slices.Equal(sc.Shape, []int{2, 200}) || sc.DType != safetensors.BF16 {
		t.Fatalf("int4 w2: %s %v, scale %s %v", w.DType, w.Shape, sc.DType, sc.Shape)
	}
	if emb, _ := s4.RankTensor(1, "embed.weight"); emb.DType != safetensors.BF16 || !slices.Equal(emb.Shape, []int{128, 200}) {
		t.Fatalf("embed: %v", emb.Shape)
	}
	cfg, err = configs.FromCheckpoint(out4)
	if err != nil || cfg.Dtype != "int4" || cfg.QuantGroupSize != 128 {
		t.Fatalf("int4 config: %+v %v", cfg, err)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
	}
	return dst
}

func editIndex(t *testing.T, dir string, fn func(wm map[string]string)) {
	t.Helper()
	p := filepath.Join(dir, safetensors.IndexFile)
	raw, _ := os.ReadFile(p)
	var idx struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	fn(idx.WeightMap)
	b, _ := json.Marshal(idx)
	os.WriteFile(p, b, 0o644)
}

// rewrite replaces one tensor of a shard with a new spec and data.
func rewrite(t *testing.T, path, name string, spec safetensors.Spec, data []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.FromBytes(path, raw)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		tn, _ := f.Tensor(n)
		if n == name {
			tn = safetensors.Tensor{TensorInfo: safetensors.TensorInfo{Name: spec.Name, DType: spec.DType, Shape: spec.Shape}, Data: data}
		}
		ts = append(ts, tn)
	}
	if err := safetensors.WriteFile(path, ts, f.Metadata()); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	shard1 := "model-00001-of-00002.safetensors"
	qa := "model.layers.0.self_attn.q_a_proj.weight"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		opt   Options
		want  []string
	}{
		{"missing index", func(t *testing.T, d string) { os.Remove(filepath.Join(d, safetensors.IndexFile)) },
			Options{Mode: ModeFP8BF16}, []string{"missing model.safetensors.index.json"}},
		{"missing scale", func(t *testing.T, d string) {
			editIndex(t, d, func(wm map[string]string) { delete(wm, qa+"_scale_inv") })
		}, Options{Mode: ModeBF16Int8}, []string{shard1, qa, "_scale_inv", "missing"}},
		{"scale shape mismatch", func(t *testing.T, d string) {
			rewrite(t, filepath.Join(d, shard1), qa+"_scale_inv", safetensors.Spec{Name: qa + "_scale_inv", DType: safetensors.F32, Shape: []int{1, 1}}, make([]byte, 4))
		}, Options{Mode: ModeFP8BF16}, []string{"shape mismatch", qa + "_scale_inv", "[2 2]"}},
		{"unknown tensor", func(t *testing.T, d string) {
			rewrite(t, filepath.Join(d, shard1), "model.layers.0.input_layernorm.weight", safetensors.Spec{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", DType: safetensors.F32, Shape: []int{2}}, make([]byte, 8))
			editIndex(t, d, func(wm map[string]string) {
				delete(wm, "model.layers.0.input_layernorm.weight")
				wm["model.layers.0.self_attn.rotary_emb.inv_freq"] = shard1
			})
		}, Options{Mode: ModeBF16BF16}, []string{shard1, "unknown tensor name", "rotary_emb.inv_freq"}},
		{"unsupported dtype", func(t *testing.T, d string) {
			rewrite(t, filepath.Join(d, shard1), "model.layers.0.input_layernorm.weight", safetensors.Spec{Name: "model.layers.0.input_layernorm.weight", DType: safetensors.I32, Shape: []int{200}}, make([]byte, 800))
		}, Options{Mode: ModeBF16BF16}, []string{shard1, "model.layers.0.input_layernorm.weight", "unsupported dtype I32"}},
		{"nan fp8 weight", func(t *testing.T, d string) {
			data := make([]byte, 136*200)
			data[77] = 0x7F
			rewrite(t, filepath.Join(d, shard1), qa, safetensors.Spec{Name: qa, DType: safetensors.F8E4M3, Shape: []int{136, 200}}, data)
		}, Options{Mode: ModeBF16Int8}, []string{shard1, qa, "non-finite"}},
		{"inf bf16 weight", func(t *testing.T, d string) {
			data := make([]byte, 2*136*200)
			data[2*5+1], data[2*5] = 0x7F, 0x80
			rewrite(t, filepath.Join(d, shard1), qa, safetensors.Spec{Name: qa, DType: safetensors.BF16, Shape: []int{136, 200}}, data)
		}, Options{Mode: ModeBF16Int4}, []string{shard1, qa, "non-finite value at element 5"}},
		{"heads not divisible", nil, Options{Mode: ModeBF16BF16, MP: 3}, []string{"n_heads (4) is not divisible by world size 3"}},
		{"experts not divisible", nil, Options{Mode: ModeBF16BF16, MP: 8}, []string{"n_routed_experts (4) is not divisible by world size 8"}},
		{"n-experts disagrees", nil, Options{Mode: ModeBF16BF16, NExperts: 8}, []string{"--n-experts 8"}},
		{"bad group", nil, Options{Mode: ModeBF16Int4, GroupSize: 48}, []string{"--group-size"}},
		{"group for int8", nil, Options{Mode: ModeBF16Int8, GroupSize: 64}, []string{"bf16-int4 only"}},
		{"unknown mode", nil, Options{Mode: "fp8-int2"}, []string{"unknown mode"}},
		{"fp8-bf16 sharded", nil, Options{Mode: ModeFP8BF16, MP: 2}, []string{"does not shard"}},
		{"int4 channels", nil, Options{Mode: ModeBF16Int4, MP: 4}, []string{"int4 packs 8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := copyDir(t, fp8Dir)
			if tc.setup != nil {
				tc.setup(t, in)
			}
			opt := tc.opt
			opt.In, opt.Out = in, t.TempDir()
			if opt.GroupSize == 0 && opt.Mode != ModeBF16Int4 {
				opt.GroupSize = -1
			}
			_, err := Run(context.Background(), opt)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// A DeepSeek-format folder is not an HF input.
	out := t.TempDir()
	run(t, Options{Mode: ModeBF16BF16, In: fp8Dir, Out: out, MP: 2})
	if _, err := Run(context.Background(), Options{Mode: ModeBF16Int8, In: out, Out: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "already in DeepSeek's reference format") {
		t.Fatalf("mp input: %v", err)
	}
}

// TestInterruptAndResume cancels conversions midway: nothing that looks finished is
// left behind, and the rerun resumes (fp8-bf16 keeps the finished shard) or restarts,
// giving the same bytes as an uninterrupted run.
func TestInterruptAndResume(t *testing.T) {
	clean := t.TempDir()
	run(t, Options{Mode: ModeFP8BF16, In: fp8Dir, Out: clean})
	ref := t.TempDir()
	run(t, Options{Mode: ModeBF16Int4, In: fp8Dir, Out: ref, MP: 2, GroupSize: 32})

	in := openSet(t, fp8Dir)
	first := 0
	for _, e := range in.Entries() {
		if e.File == "model-00001-of-00002.safetensors" && !strings.HasSuffix(e.Name, "_scale_inv") {
			first++
		}
	}
	interrupt := func(opt Options, after int) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := 0
		opt.Progress = func(done, total int64) {
			if calls++; calls == after {
				cancel()
			}
		}
		if _, err := Run(ctx, opt); !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted run: %v", err)
		}
		ents, _ := os.ReadDir(opt.Out)
		for _, e := range ents {
			if (opt.Mode == ModeFP8BF16 && strings.Contains(e.Name(), ".tmp-")) || e.Name() == ManifestFile {
				t.Fatalf("interrupted run left %s", e.Name())
			}
		}
	}

	out := t.TempDir()
	opt := Options{Mode: ModeFP8BF16, In: fp8Dir, Out: out}
	interrupt(opt, first+2)
	if _, err := os.Stat(filepath.Join(out, "model-00001-of-00002.safetensors")); err != nil {
		t.Fatal("finished shard missing after the interruption")
	}
	if _, err := os.Stat(filepath.Join(out, "model-00002-of-00002.safetensors")); err == nil {
		t.Fatal("unfinished shard exists")
	}
	res := run(t, opt)
	if res.Resumed != 1 {
		t.Fatalf("resumed %d files, want 1", res.Resumed)
	}
	sameFiles(t, clean, out)
	if res := run(t, opt); res.Resumed != 2 || res.BytesIn != 0 {
		t.Fatalf("rerun of a complete conversion: %+v", res)
	}

	// Sharded modes resume inside the pass: from the state saved at the interruption,
	// and from periodic checkpoints (here after every tensor) when the process is
	// killed, which the copy of the folder taken mid-run stands for.
	out = t.TempDir()
	opt = Options{Mode: ModeBF16Int4, In: fp8Dir, Out: out, MP: 2, GroupSize: 32, CheckpointBytes: 1}
	killed := t.TempDir()
	calls := 0
	snap := opt
	snap.Progress = func(done, total int64) {
		if calls++; calls == 5 {
			// A snapshot of the folder mid-run is what a kill -9 leaves: the state
			// file holds the checkpoint after job 4 (job 5's comes after this
			// callback), the temporary files possibly more bytes than it.
			copyInto(t, out, killed)
		}
	}
	run(t, snap)
	sameFiles(t, ref, out)
	kopt := opt
	kopt.Out = killed
	res = run(t, kopt)
	if res.ResumedBytes == 0 {
		t.Fatal("killed run did not resume from its checkpoint")
	}
	sameFiles(t, ref, killed)

	out = t.TempDir()
	opt.Out = out
	interrupt(opt, 7)
	if ents, _ := filepath.Glob(filepath.Join(out, "model*-mp2.safetensors")); len(ents) != 0 {
		t.Fatalf("interrupted sharded run left %v", ents)
	}
	res = run(t, opt)
	if res.ResumedBytes == 0 {
		t.Fatal("interrupted run did not resume")
	}
	sameFiles(t, ref, out)
	checkManifest(t, out)

	// Other parameters in the same folder: a clean restart, no stale files.
	run(t, Options{Mode: ModeBF16Int8, In: fp8Dir, Out: out, MP: 1})
	if _, err := os.Stat(filepath.Join(out, "model0-mp2.safetensors")); err == nil {
		t.Fatal("files of the earlier mp2 conversion left behind")
	}
	checkManifest(t, out)
}

// copyInto copies the regular files of src (including hidden temporaries) into dst.
func copyInto(t *testing.T, src, dst string) {
	t.Helper()
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			continue // renamed meanwhile
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	ma, _ := os.ReadFile(filepath.Join(a, ManifestFile))
	mb, _ := os.ReadFile(filepath.Join(b, ManifestFile))
	if len(ma) == 0 || !bytes.Equal(ma, mb) {
		t.Fatalf("outputs differ:\n%s\nvs\n%s", ma, mb)
	}
}
