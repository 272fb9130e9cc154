package model

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
	"github.com/dsgate/dsgate/core/dtype"
	"github.com/dsgate/dsgate/core/safetensors"
)

// split says how a tensor is sharded over ranks (spec §3.3, convert.py).
type split uint8

const (
	replicated  split = iota
	splitRows         // dim 0 of the (n, k) weight: output channels (ColumnParallel, vocab)
	splitCols         // dim 1: input channels (RowParallel wo, w2)
	expertOwned       // a routed expert, whole, on rank E / (n_experts / W)
)

// kind is the role of a tensor, which decides the dtypes it may have.
type kind uint8

const (
	kindLinear kind = iota // projection: F32/BF16/F16, fp8 + scale, or I8/I4 + scale
	kindVector             // norm weight or router bias: 1-D
	kindDense              // embedding, LM head, router weight: F32/BF16/F16 only
)

// tensorSpec is one logical tensor of the model: its DeepSeek reference name (without
// ".weight"), its Hugging Face name (without ".weight"), its full (unsharded) shape
// N × K (K = 1 for vectors) and how it is sharded.
type tensorSpec struct {
	ref, hf string
	n, k    int
	split   split
	kind    kind
	expert  int  // routed expert index for expertOwned
	bias    bool // the router's correction bias (".bias" / ".e_score_correction_bias", F32)
}

func (s tensorSpec) refName() string {
	if s.bias {
		return s.ref + ".bias"
	}
	return s.ref + ".weight"
}

func (s tensorSpec) hfName() string {
	if s.bias {
		return s.hf + ".e_score_correction_bias"
	}
	return s.hf + ".weight"
}

// layerNames lists the tensors of layer l (spec §3.1, §3.3), in a fixed order.
func layerSpecs(cfg configs.Model, l int) []tensorSpec {
	d, h := cfg.Dim, cfg.NHeads
	qk := cfg.QKHeadDim()
	p, hp := fmt.Sprintf("layers.%d.", l), fmt.Sprintf("model.layers.%d.", l)
	lin := func(ref, hf string, n, k int, sp split) tensorSpec {
		return tensorSpec{ref: p + ref, hf: hp + hf, n: n, k: k, split: sp, kind: kindLinear}
	}
	vec := func(ref, hf string, n int) tensorSpec {
		return tensorSpec{ref: p + ref, hf: hp + hf, n: n, k: 1, kind: kindVector}
	}
	out := []tensorSpec{vec("attn_norm", "input_layernorm", d), vec("ffn_norm", "post_attention_layernorm", d)}
	if cfg.QLoraRank > 0 {
		out = append(out,
			lin("attn.wq_a", "self_attn.q_a_proj", cfg.QLoraRank, d, replicated),
			vec("attn.q_norm", "self_attn.q_a_layernorm", cfg.QLoraRank),
			lin("attn.wq_b", "self_attn.q_b_proj", h*qk, cfg.QLoraRank, splitRows))
	} else {
		out = append(out, lin("attn.wq", "self_attn.q_proj", h*qk, d, splitRows))
	}
	out = append(out,
		lin("attn.wkv_a", "self_attn.kv_a_proj_with_mqa", cfg.KVLoraRank+cfg.QKRopeHeadDim, d, replicated),
		vec("attn.kv_norm", "self_attn.kv_a_layernorm", cfg.KVLoraRank),
		lin("attn.wkv_b", "self_attn.kv_b_proj", h*(cfg.QKNopeHeadDim+cfg.VHeadDim), cfg.KVLoraRank, splitRows),
		lin("attn.wo", "self_attn.o_proj", d, h*cfg.VHeadDim, splitCols))
	if l < cfg.NDenseLayers {
		return append(out,
			lin("ffn.w1", "mlp.gate_proj", cfg.InterDim, d, splitRows),
			lin("ffn.w3", "mlp.up_proj", cfg.InterDim, d, splitRows),
			lin("ffn.w2", "mlp.down_proj", d, cfg.InterDim, splitCols))
	}
	e := cfg.NRoutedExperts
	out = append(out, tensorSpec{ref: p + "ffn.gate", hf: hp + "mlp.gate", n: e, k: d, kind: kindDense})
	if cfg.HasRouterBias() {
		out = append(out, tensorSpec{ref: p + "ffn.gate", hf: hp + "mlp.gate", n: e, k: 1, kind: kindVector, bias: true})
	}
	for x := 0; x < e; x++ {
		for _, w := range [][2]string{{"w1", "gate_proj"}, {"w3", "up_proj"}, {"w2", "down_proj"}} {
			n, k := cfg.MoeInterDim, d
			if w[0] == "w2" {
				n, k = d, cfg.MoeInterDim
			}
			s := lin(fmt.Sprintf("ffn.experts.%d.%s", x, w[0]), fmt.Sprintf("mlp.experts.%d.%s", x, w[1]), n, k, expertOwned)
			s.expert = x
			out = append(out, s)
		}
	}
	if cfg.NSharedExperts > 0 {
		sw := cfg.NSharedExperts * cfg.MoeInterDim
		out = append(out,
			lin("ffn.shared_experts.w1", "mlp.shared_experts.gate_proj", sw, d, splitRows),
			lin("ffn.shared_experts.w3", "mlp.shared_experts.up_proj", sw, d, splitRows),
			lin("ffn.shared_experts.w2", "mlp.shared_experts.down_proj", d, sw, splitCols))
	}
	return out
}

// topSpecs lists the tensors outside the layers.
func topSpecs(cfg configs.Model) []tensorSpec {
	return []tensorSpec{
		{ref: "embed", hf: "model.embed_tokens", n: cfg.VocabSize, k: cfg.Dim, split: splitRows, kind: kindDense},
		{ref: "norm", hf: "model.norm", n: cfg.Dim, k: 1, kind: kindVector},
		{ref: "head", hf: "lm_head", n: cfg.VocabSize, k: cfg.Dim, split: splitRows, kind: kindDense},
	}
}

// ownsExpert reports whether rank r of w owns routed expert e.
func ownsExpert(cfg configs.Model, r, w, e int) bool {
	per := cfg.NRoutedExperts / w
	return e/per == r
}

// shardShape returns the (n, k) of rank r's shard of s.
func shardShape(s tensorSpec, w int) (int, int) {
	switch s.split {
	case splitRows:
		return s.n / w, s.k
	case splitCols:
		return s.n, s.k / w
	}
	return s.n, s.k
}

// ckpt reads tensors from an opened checkpoint and records which names were used.
type ckpt struct {
	set  *safetensors.Set
	cfg  configs.Model
	hf   bool // Hugging Face names (full tensors); else DeepSeek names, one file per rank
	used map[string]bool
	miss []string
	errs []error
}

func openCkpt(dir string, cfg configs.Model, world int) (*ckpt, error) {
	set, err := safetensors.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	c := &ckpt{set: set, cfg: cfg, used: map[string]bool{}}
	if set.Layout == safetensors.LayoutMP {
		if set.MP != world {
			set.Close()
			return nil, fmt.Errorf("checkpoint %s is sharded for %d ranks (model{r}-mp%d.safetensors); run it with world size %d", dir, set.MP, set.MP, set.MP)
		}
		return c, nil
	}
	// One set of unique names: HF names if it has model.embed_tokens, else DeepSeek names (mp1 as a single file).
	c.hf = set.Has("model.embed_tokens.weight") || !set.Has("embed.weight")
	if !c.hf && world != 1 {
		set.Close()
		return nil, fmt.Errorf("checkpoint %s holds DeepSeek-named tensors for 1 rank; run it with world size 1", dir)
	}
	return c, nil
}

// names returns every tensor name of the checkpoint (for the unused check).
func (c *ckpt) names() []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range c.set.Entries() {
		if !seen[e.Name] {
			seen[e.Name] = true
			out = append(out, e.Name)
		}
	}
	return out
}

func (c *ckpt) tensor(rank int, name string) (safetensors.Tensor, bool) {
	var t safetensors.Tensor
	var err error
	if c.set.Layout == safetensors.LayoutMP {
		t, err = c.set.RankTensor(rank, name)
	} else {
		if !c.set.Has(name) {
			return t, false
		}
		t, err = c.set.Tensor(name)
	}
	if err != nil {
		return t, false
	}
	c.used[name] = true
	return t, true
}

// readAll returns the shards of s for the ranks want accepts (nil: every rank); other
// ranks get nil, as do ranks that do not hold s (experts of another rank). Tensors
// only other ranks need are looked up, not read: on several nodes each process touches
// only its own shards' bytes.
func (c *ckpt) readAll(s tensorSpec, world int, want func(r int) bool) []*backend.HostWeight {
	if want == nil {
		want = func(int) bool { return true }
	}
	owns := func(r int) bool { return s.split != expertOwned || ownsExpert(c.cfg, r, world, s.expert) }
	out := make([]*backend.HostWeight, world)
	n, k := shardShape(s, world)
	if !c.hf {
		for r := range out {
			switch {
			case !owns(r):
			case !want(r):
				c.skim(r, s.refName())
			default:
				out[r] = c.readOne(s, s.refName(), r, n, k, false)
			}
		}
		return out
	}
	needed := false
	for r := range out {
		needed = needed || (owns(r) && want(r))
	}
	if !needed {
		c.skim(0, s.hfName())
		return out
	}
	full := c.readOne(s, s.hfName(), 0, s.n, s.k, true)
	if full == nil {
		return out
	}
	for r := range out {
		if !owns(r) || !want(r) {
			continue
		}
		sh, err := shard(full, s, r, world)
		if err != nil {
			c.errs = append(c.errs, err)
			return out
		}
		out[r] = sh
	}
	return out
}

// skim marks a tensor that another process reads (and its scale, if stored) as used
// without touching its bytes; whether it is well-formed is that process's check.
func (c *ckpt) skim(rank int, name string) {
	if _, ok := c.tensor(rank, name); !ok {
		return
	}
	for _, sc := range []string{strings.TrimSuffix(name, ".weight") + ".scale", name + "_scale_inv"} {
		c.tensor(rank, sc)
	}
}

// readOne reads one stored tensor of logical shape (n, k).
func (c *ckpt) readOne(s tensorSpec, name string, rank, n, k int, hf bool) *backend.HostWeight {
	t, ok := c.tensor(rank, name)
	if !ok {
		c.miss = append(c.miss, name)
		return nil
	}
	bad := func(format string, args ...any) *backend.HostWeight {
		c.errs = append(c.errs, fmt.Errorf("tensor %s: %s", name, fmt.Sprintf(format, args...)))
		return nil
	}
	shape := t.Shape
	if s.kind == kindVector {
		if len(shape) != 1 || shape[0] != n {
			return bad("shape %v, want [%d]", shape, n)
		}
		v, err := t.Float32()
		if err != nil {
			return bad("%v", err)
		}
		return backend.Vector(name, v)
	}
	switch t.DType {
	case safetensors.F32, safetensors.BF16, safetensors.F16:
		if len(shape) != 2 || shape[0] != n || shape[1] != k {
			return bad("shape %v, want [%d %d]", shape, n, k)
		}
		if t.DType == safetensors.BF16 {
			u, err := t.Uint16s()
			if err != nil {
				return bad("%v", err)
			}
			return &backend.HostWeight{Name: name, DType: backend.BF16, N: n, K: k, BF16: u}
		}
		v, err := t.Float32()
		if err != nil {
			return bad("%v", err)
		}
		return &backend.HostWeight{Name: name, DType: backend.F32, N: n, K: k, F32: v}
	case safetensors.F8E4M3:
		if s.kind != kindLinear {
			return bad("fp8 is only supported for projections")
		}
		if len(shape) != 2 || shape[0] != n || shape[1] != k {
			return bad("shape %v, want [%d %d]", shape, n, k)
		}
		scaleName := strings.TrimSuffix(name, ".weight") + ".scale"
		if hf {
			scaleName = name + "_scale_inv"
		}
		st, ok := c.tensor(rank, scaleName)
		if !ok {
			c.miss = append(c.miss, scaleName+" (block scale of fp8 "+name+")")
			return nil
		}
		sn, sk := (n+127)/128, (k+127)/128
		if len(st.Shape) != 2 || st.Shape[0] != sn || st.Shape[1] != sk {
			return bad("scale %s shape %v, want [%d %d]", scaleName, st.Shape, sn, sk)
		}
		sc, err := st.Float32()
		if err != nil {
			return bad("%v", err)
		}
		return dequantFP8(name, t.Data, n, k, sc)
	case safetensors.I8, safetensors.I32:
		if s.kind != kindLinear {
			return bad("quantized dtype %s is only supported for projections", t.DType)
		}
		w := &backend.HostWeight{Name: name, N: n, K: k}
		if t.DType == safetensors.I8 {
			w.DType = backend.I8
			if len(shape) != 2 || shape[0] != k || shape[1] != n {
				return bad("int8 shape %v, want transposed [%d %d]", shape, k, n)
			}
		} else {
			w.DType = backend.I4
			if n%8 != 0 || len(shape) != 2 || shape[0] != k || shape[1] != n/8 {
				return bad("int4 (I32) shape %v, want transposed packed [%d %d]", shape, k, n/8)
			}
		}
		w.Q = append([]byte(nil), t.Data...)
		scaleName := strings.TrimSuffix(name, ".weight") + ".scale"
		st, ok := c.tensor(rank, scaleName)
		if !ok {
			c.miss = append(c.miss, scaleName+" (scale of quantized "+name+")")
			return nil
		}
		sc, err := st.Float32()
		if err != nil {
			return bad("%v", err)
		}
		w.Scale = sc
		switch {
		case len(st.Shape) == 1 && st.Shape[0] == n:
			w.GroupSize = 0
		case len(st.Shape) == 2 && st.Shape[1] == n && st.Shape[0] > 0:
			g := c.cfg.QuantGroupSize
			if g <= 0 {
				g = (k + st.Shape[0] - 1) / st.Shape[0]
			}
			if (k+g-1)/g != st.Shape[0] {
				return bad("scale %s has %d groups, which does not fit k=%d with group size %d", scaleName, st.Shape[0], k, g)
			}
			w.GroupSize = g
			if st.Shape[0] == 1 {
				w.GroupSize = 0
			}
		default:
			return bad("scale %s shape %v, want [%d] or [groups %d]", scaleName, st.Shape, n, n)
		}
		if err := w.Validate(); err != nil {
			return bad("%v", err)
		}
		return w
	}
	return bad("unsupported dtype %s", t.DType)
}

// dequantFP8 computes W[r,c] = f32(fp8[r,c]) × scale[r/128, c/128] in float32 (spec §3.2,
// without the reference's final bf16 rounding: dsgate computes in float32).
func dequantFP8(name string, data []byte, n, k int, scale []float32) *backend.HostWeight {
	tab := dtype.E4M3Table()
	sk := (k + 127) / 128
	out := make([]float32, n*k)
	for r := 0; r < n; r++ {
		srow := scale[(r/128)*sk:]
		for c := 0; c < k; c++ {
			out[r*k+c] = tab[data[r*k+c]] * srow[c/128]
		}
	}
	return &backend.HostWeight{Name: name, DType: backend.F32, N: n, K: k, F32: out}
}

// shard slices a full F32/BF16 tensor for rank r (HF checkpoints).
func shard(full *backend.HostWeight, s tensorSpec, r, w int) (*backend.HostWeight, error) {
	if w == 1 {
		return full, nil
	}
	switch s.split {
	case splitRows:
		n := s.n / w
		rows := make([]int, n)
		for i := range rows {
			rows[i] = r*n + i
		}
		return full.SelectRows(full.Name, rows)
	case splitCols:
		k := s.k / w
		out := &backend.HostWeight{Name: full.Name, DType: full.DType, N: full.N, K: k}
		for i := 0; i < full.N; i++ {
			switch full.DType {
			case backend.F32:
				out.F32 = append(out.F32, full.F32[i*full.K+r*k:i*full.K+(r+1)*k]...)
			case backend.BF16:
				out.BF16 = append(out.BF16, full.BF16[i*full.K+r*k:i*full.K+(r+1)*k]...)
			default:
				return nil, fmt.Errorf("tensor %s: cannot split %v by columns", full.Name, full.DType)
			}
		}
		return out, nil
	}
	return full, nil
}

// ignoredName reports tensors a checkpoint may carry that dsgate does not use: the MTP
// layers (index ≥ n_layers; the reference drops them too, spec §3.1).
func ignoredName(cfg configs.Model, name string) bool {
	for _, p := range []string{"model.layers.", "layers."} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			i := strings.IndexByte(rest, '.')
			if i > 0 {
				if l, err := strconv.Atoi(rest[:i]); err == nil && l >= cfg.NLayers {
					return true
				}
			}
		}
	}
	return false
}

// problems returns one error listing every missing, malformed and unused tensor.
func (c *ckpt) problems() error {
	var unused []string
	for _, n := range c.names() {
		if !c.used[n] && !ignoredName(c.cfg, n) {
			unused = append(unused, n)
		}
	}
	if len(c.miss) == 0 && len(unused) == 0 && len(c.errs) == 0 {
		return nil
	}
	sort.Strings(unused)
	var parts []string
	if len(c.miss) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing tensors: %s", len(c.miss), strings.Join(dedup(c.miss), ", ")))
	}
	if len(unused) > 0 {
		parts = append(parts, fmt.Sprintf("%d unused tensors: %s", len(unused), strings.Join(unused, ", ")))
	}
	if len(c.errs) > 0 {
		parts = append(parts, errors.Join(c.errs...).Error())
	}
	return fmt.Errorf("checkpoint %s does not match the config: %s", c.set.Dir, strings.Join(parts, "; "))
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
