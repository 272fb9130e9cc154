package convert

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/core/dtype"
	"github.com/dsgate/dsgate/core/safetensors"
)

// synth describes a synthetic DeepSeek-V3-shaped Hugging Face checkpoint (bf16).
type synth struct {
	dim, inter, moeInter, layers, dense, heads, nope, rope, vdim, qlora, kvlora, experts, shared, vocab int
	shards                                                                                              int
	noMTP                                                                                               bool // omit the MTP layer
	fp8                                                                                                 bool // linears as F8_E4M3 + weight_scale_inv
}

// tinySynth is small and shardable over 8 ranks with int4 groups of 32 on every
// row-split tensor (k/8 a multiple of 32).
var tinySynth = synth{dim: 256, inter: 512, moeInter: 256, layers: 2, dense: 1, heads: 8, nope: 16, rope: 16,
	vdim: 32, qlora: 64, kvlora: 64, experts: 8, shared: 1, vocab: 512, shards: 3}

// benchSynth is about 1.0e9 parameters: 2.0 GB in bf16, 1.0 GB in fp8.
var benchSynth = synth{dim: 2048, inter: 8192, moeInter: 1408, layers: 3, dense: 1, heads: 16, nope: 128, rope: 64,
	vdim: 128, qlora: 512, kvlora: 512, experts: 48, shared: 2, vocab: 16384, shards: 4, noMTP: true}

type synthTensor struct {
	name  string
	shape []int
	f32   bool
	fp8   bool // F8_E4M3 weight
	scale bool // F32 weight_scale_inv
}

func (s synth) tensors() []synthTensor {
	var ts []synthTensor
	add := func(name string, shape ...int) {
		lin := strings.HasSuffix(name, "proj.weight")
		ts = append(ts, synthTensor{name: name, shape: shape, fp8: s.fp8 && lin})
		if s.fp8 && lin {
			ts = append(ts, synthTensor{name: name + "_scale_inv", shape: []int{(shape[0] + 127) / 128, (shape[1] + 127) / 128}, f32: true, scale: true})
		}
	}
	add("model.embed_tokens.weight", s.vocab, s.dim)
	last := s.layers
	if s.noMTP {
		last--
	}
	for l := 0; l <= last; l++ { // layer s.layers is the MTP module
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", s.dim)
		add(p+"self_attn.q_a_proj.weight", s.qlora, s.dim)
		add(p+"self_attn.q_a_layernorm.weight", s.qlora)
		add(p+"self_attn.q_b_proj.weight", s.heads*(s.nope+s.rope), s.qlora)
		add(p+"self_attn.kv_a_proj_with_mqa.weight", s.kvlora+s.rope, s.dim)
		add(p+"self_attn.kv_a_layernorm.weight", s.kvlora)
		add(p+"self_attn.kv_b_proj.weight", s.heads*(s.nope+s.vdim), s.kvlora)
		add(p+"self_attn.o_proj.weight", s.dim, s.heads*s.vdim)
		add(p+"post_attention_layernorm.weight", s.dim)
		if l < s.dense {
			add(p+"mlp.gate_proj.weight", s.inter, s.dim)
			add(p+"mlp.up_proj.weight", s.inter, s.dim)
			add(p+"mlp.down_proj.weight", s.dim, s.inter)
			continue
		}
		add(p+"mlp.gate.weight", s.experts, s.dim)
		ts = append(ts, synthTensor{name: p + "mlp.gate.e_score_correction_bias", shape: []int{s.experts}, f32: true})
		for e := range s.experts {
			add(p+fmt.Sprintf("mlp.experts.%d.gate_proj.weight", e), s.moeInter, s.dim)
			add(p+fmt.Sprintf("mlp.experts.%d.up_proj.weight", e), s.moeInter, s.dim)
			add(p+fmt.Sprintf("mlp.experts.%d.down_proj.weight", e), s.dim, s.moeInter)
		}
		add(p+"mlp.shared_experts.gate_proj.weight", s.moeInter*s.shared, s.dim)
		add(p+"mlp.shared_experts.up_proj.weight", s.moeInter*s.shared, s.dim)
		add(p+"mlp.shared_experts.down_proj.weight", s.dim, s.moeInter*s.shared)
	}
	add("model.norm.weight", s.dim)
	add("lm_head.weight", s.vocab, s.dim)
	return ts
}

// rng is a small xorshift generator (deterministic, fast enough for gigabytes).
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*r = rng(x)
	return x
}

// heavy returns an approximately normal value with occasional large outliers.
func (r *rng) heavy() float32 {
	x := r.next()
	// Sum of four 16-bit uniforms ~ normal (Irwin-Hall), scaled to unit variance.
	u := float64(x&0xFFFF+(x>>16)&0xFFFF+(x>>32)&0xFFFF+(x>>48)&0xFFFF)/65536 - 2
	v := float32(u * math.Sqrt(3))
	if r.next()%997 == 0 {
		v *= 30 // heavy tail
	}
	return v
}

// writeSynth writes the checkpoint to dir: shards, index, HF config.json and a
// tokenizer stub. Tensor data is generated one tensor at a time.
func writeSynth(tb testing.TB, dir string, s synth, seed uint64) int64 {
	tb.Helper()
	ts := s.tensors()
	var total int64
	sizes := make([]int64, len(ts))
	for i, t := range ts {
		n := int64(2)
		switch {
		case t.f32:
			n = 4
		case t.fp8:
			n = 1
		}
		for _, d := range t.shape {
			n *= int64(d)
		}
		sizes[i] = n
		total += n
	}
	shardOf := make([]int, len(ts))
	var acc int64
	for i := range ts {
		shardOf[i] = min(int(acc*int64(s.shards)/total), s.shards-1)
		acc += sizes[i]
	}
	weightMap := map[string]string{}
	r := rng(seed | 1)
	for sh := range s.shards {
		fn := fmt.Sprintf("model-%05d-of-%05d.safetensors", sh+1, s.shards)
		var specs []safetensors.Spec
		var idx []int
		for i, t := range ts {
			if shardOf[i] != sh {
				continue
			}
			dt := safetensors.BF16
			switch {
			case t.f32:
				dt = safetensors.F32
			case t.fp8:
				dt = safetensors.F8E4M3
			}
			specs = append(specs, safetensors.Spec{Name: t.name, DType: dt, Shape: t.shape})
			idx = append(idx, i)
			weightMap[t.name] = fn
		}
		w, err := safetensors.Create(filepath.Join(dir, fn), specs, map[string]string{"format": "pt"})
		if err != nil {
			tb.Fatal(err)
		}
		for _, i := range idx {
			t := ts[i]
			buf := make([]byte, sizes[i])
			scale := float32(0.02)
			if len(t.shape) == 1 {
				scale = 1
			}
			switch {
			case t.scale:
				for j := 0; j < len(buf); j += 4 {
					binary.LittleEndian.PutUint32(buf[j:], math.Float32bits(float32(r.next()%1000+1)*1e-5))
				}
			case t.fp8:
				for j := 0; j < len(buf); j += 8 {
					x := r.next()
					for b := range min(8, len(buf)-j) {
						c := byte(x >> (8 * b))
						if c&0x7F == 0x7F {
							c ^= 1 // not NaN
						}
						buf[j+b] = c
					}
				}
			case t.f32:
				for j := 0; j < len(buf); j += 4 {
					binary.LittleEndian.PutUint32(buf[j:], math.Float32bits(r.heavy()*scale))
				}
			default:
				for j := 0; j < len(buf); j += 2 {
					binary.LittleEndian.PutUint16(buf[j:], dtype.F32ToBF16(r.heavy()*scale))
				}
			}
			if t.name == "model.layers.0.self_attn.o_proj.weight" && !t.fp8 {
				// An all-zero output channel: its scale must stay finite.
				cols := t.shape[1]
				clear(buf[3*cols*2 : 4*cols*2])
			}
			if err := w.WriteTensor(t.name, buf); err != nil {
				tb.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap})
	cfg, _ := json.Marshal(map[string]any{
		"vocab_size": s.vocab, "hidden_size": s.dim, "intermediate_size": s.inter, "moe_intermediate_size": s.moeInter,
		"num_hidden_layers": s.layers, "first_k_dense_replace": s.dense, "num_attention_heads": s.heads,
		"n_routed_experts": s.experts, "n_shared_experts": s.shared, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
		"topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "routed_scaling_factor": 2.5,
		"q_lora_rank": s.qlora, "kv_lora_rank": s.kvlora, "qk_nope_head_dim": s.nope, "qk_rope_head_dim": s.rope,
		"v_head_dim": s.vdim, "rope_theta": 10000, "max_position_embeddings": 4096, "bos_token_id": 0, "eos_token_id": 1,
	})
	for name, data := range map[string][]byte{safetensors.IndexFile: idx, "config.json": cfg, "tokenizer_config.json": []byte(`{"stub":true}`)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return total
}
