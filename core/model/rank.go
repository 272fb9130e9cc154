package model

import (
	"context"
	"fmt"
	"runtime"

	"github.com/dsgate/dsgate/core/backend"
)

// rank is one tensor-parallel rank: its backend, its shard of the weights, its cache.
type rank struct {
	b    backend.Backend
	r, w int
	m    *Model

	embed backend.Weight // [V/W, D]
	norm  backend.Weight // [D]
	head  backend.Weight // [V/W, D]
	cache backend.Cache  // layers × blocks × BlockSize × (Lc + R)
	rope  backend.RopeTable
	rx    backend.RoutedExperts // the backend's device-side MoE, when it has one

	layers []*block
}

// mla holds one layer's attention weights (class MLA of model.py); H = local heads.
type mla struct {
	wqA   backend.Weight // [q_lora_rank, D] (nil without q_lora)
	qNorm backend.Weight // [q_lora_rank]
	wqB   backend.Weight // [H·(Dn+R), q_lora_rank or D], rows permuted to [nope of all heads | pe of all heads]
	wkvA  backend.Weight // [Lc+R, D]
	kvNrm backend.Weight // [Lc]
	wUKt  backend.Weight // absorb: [H·Lc, Dn] F32, per head W_UKᵀ
	wUV   backend.Weight // absorb: [H·Dv, Lc], per head W_UV
	wkvB  backend.Weight // naive: [H·(Dn+Dv), Lc], rows permuted to [k_nope of all heads | v of all heads]
	wo    backend.Weight // [D, H·Dv]
}

// mlp is a SwiGLU MLP (class MLP / Expert): w13 = w1 ‖ w3 rows.
type mlp struct {
	w13 backend.Weight // [2·I, D]
	w2  backend.Weight // [D, I]
}

// block is one transformer block (class Block).
type block struct {
	attnNorm, ffnNorm backend.Weight // [D]
	attn              mla
	dense             *mlp            // dense layers
	gate              backend.Weight  // MoE: router [E, D]
	bias              backend.Weight  // MoE: correction bias [E] (nil if none)
	experts           []mlp           // MoE: local routed experts [e0, e0+len), per expert
	stack             backend.Experts // MoE: the same experts stacked by rx (then experts is nil)
	e0                int
	shared            *mlp // MoE: shared experts (nil if n_shared_experts == 0)
}

// load reads every tensor for every rank, then uploads; problems are reported all at once.
func (m *Model) load(ctx context.Context, c *ckpt) error {
	cfg, w := m.cfg, m.opt.WorldSize
	host := make([]map[string]*backend.HostWeight, w)
	for r := range host {
		host[r] = map[string]*backend.HostWeight{}
	}
	var specs []tensorSpec
	specs = append(specs, topSpecs(cfg)...)
	for l := 0; l < cfg.NLayers; l++ {
		specs = append(specs, layerSpecs(cfg, l)...)
	}
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		for r, hw := range c.readAll(s, w, m.local) {
			if hw != nil {
				host[r][s.refName()] = hw
			}
		}
	}
	if err := c.problems(); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	for _, rk := range m.ranks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := rk.build(host[rk.r]); err != nil {
			return fmt.Errorf("model: rank %d: %w", rk.r, err)
		}
		host[rk.r] = nil
	}
	return nil
}

// build assembles and uploads rank rk's weights from its host shard.
func (rk *rank) build(h map[string]*backend.HostWeight) error {
	cfg := rk.m.cfg
	b := rk.b
	var err error
	up := func(hw *backend.HostWeight) backend.Weight {
		if err != nil {
			return nil
		}
		var wt backend.Weight
		wt, err = b.LoadWeight(hw)
		if err != nil {
			err = fmt.Errorf("upload %s: %w", hw.Name, err)
		}
		return wt
	}
	// Each host weight is taken out of h when used: once uploaded, the backend holds
	// what it needs (a device copy, or a repacked one on the CPU), so the host copy can
	// be collected layer by layer instead of doubling the peak memory of a load.
	get := func(name string) *backend.HostWeight {
		hw := h[name]
		delete(h, name)
		return hw
	}
	cat := func(name string, parts ...*backend.HostWeight) *backend.HostWeight {
		if err != nil {
			return nil
		}
		var out *backend.HostWeight
		out, err = backend.ConcatRows(name, parts...)
		return out
	}
	rk.rx, _ = b.(backend.RoutedExperts)
	rk.embed = up(get("embed.weight"))
	rk.norm = up(get("norm.weight"))
	rk.head = up(get("head.weight"))
	H := cfg.NHeads / rk.w
	dn, r, dv, lc := cfg.QKNopeHeadDim, cfg.QKRopeHeadDim, cfg.VHeadDim, cfg.KVLoraRank
	for l := 0; l < cfg.NLayers; l++ {
		p := fmt.Sprintf("layers.%d.", l)
		bl := &block{attnNorm: up(get(p + "attn_norm.weight")), ffnNorm: up(get(p + "ffn_norm.weight"))}
		a := &bl.attn
		wq := get(p + "attn.wq.weight")
		if cfg.QLoraRank > 0 {
			a.wqA = up(get(p + "attn.wq_a.weight"))
			a.qNorm = up(get(p + "attn.q_norm.weight"))
			wq = get(p + "attn.wq_b.weight")
		}
		// Query rows: head h row h·(Dn+R)+j; reorder to [nope(all heads) | pe(all heads)].
		perm := make([]int, 0, H*(dn+r))
		for hh := 0; hh < H; hh++ {
			for j := 0; j < dn; j++ {
				perm = append(perm, hh*(dn+r)+j)
			}
		}
		for hh := 0; hh < H; hh++ {
			for j := 0; j < r; j++ {
				perm = append(perm, hh*(dn+r)+dn+j)
			}
		}
		if err == nil {
			var sel *backend.HostWeight
			if sel, err = wq.SelectRows(wq.Name, perm); err == nil {
				a.wqB = up(sel)
			}
		}
		a.wkvA = up(get(p + "attn.wkv_a.weight"))
		a.kvNrm = up(get(p + "attn.kv_norm.weight"))
		wkvb := get(p + "attn.wkv_b.weight")
		if err == nil {
			err = rk.buildKVB(a, wkvb, H, dn, dv, lc)
		}
		a.wo = up(get(p + "attn.wo.weight"))
		if l < cfg.NDenseLayers {
			bl.dense = &mlp{
				w13: up(cat(p+"ffn.w13", get(p+"ffn.w1.weight"), get(p+"ffn.w3.weight"))),
				w2:  up(get(p + "ffn.w2.weight")),
			}
		} else {
			bl.gate = up(get(p + "ffn.gate.weight"))
			if cfg.HasRouterBias() {
				bl.bias = up(get(p + "ffn.gate.bias"))
			}
			per := cfg.NRoutedExperts / rk.w
			bl.e0 = rk.r * per
			w13s := make([]*backend.HostWeight, 0, per)
			w2s := make([]*backend.HostWeight, 0, per)
			for e := bl.e0; e < bl.e0+per; e++ {
				q := fmt.Sprintf("%sffn.experts.%d.", p, e)
				w13s = append(w13s, cat(q+"w13", get(q+"w1.weight"), get(q+"w3.weight")))
				w2s = append(w2s, get(q+"w2.weight"))
			}
			// One copy of the experts on the device: stacked for the backend's
			// device-side MoE when it takes them, else one weight per expert.
			if rk.rx != nil && err == nil {
				if bl.stack, err = rk.rx.LoadExperts(bl.e0, w13s, w2s); err != nil {
					err = fmt.Errorf("upload %sffn.experts [%d,%d): %w", p, bl.e0, bl.e0+per, err)
				} else if bl.stack != nil && (bl.stack.First() != bl.e0 || bl.stack.Count() != per) {
					err = fmt.Errorf("upload %sffn.experts: backend stacked [%d,+%d), want [%d,+%d)", p, bl.stack.First(), bl.stack.Count(), bl.e0, per)
				}
			}
			if bl.stack == nil {
				for i := range w13s {
					bl.experts = append(bl.experts, mlp{w13: up(w13s[i]), w2: up(w2s[i])})
				}
			}
			if cfg.NSharedExperts > 0 {
				q := p + "ffn.shared_experts."
				bl.shared = &mlp{
					w13: up(cat(q+"w13", get(q+"w1.weight"), get(q+"w3.weight"))),
					w2:  up(get(q + "w2.weight")),
				}
			}
		}
		if err != nil {
			return err
		}
		rk.layers = append(rk.layers, bl)
		runtime.GC() // collect this layer's host weights before the next one's uploads
	}
	if err != nil {
		return err
	}
	if rk.cache, err = b.NewCache(cfg.NLayers, rk.m.numBlocks, rk.m.blockSize, lc+r); err != nil {
		return fmt.Errorf("allocate kv cache: %w", err)
	}
	if rk.rope, err = b.NewRopeTable(rk.m.freqs, cfg.MaxSeqLen); err != nil {
		return fmt.Errorf("rope table: %w", err)
	}
	return nil
}

// buildKVB derives the absorbed (W_UKᵀ, W_UV) or naive ([k_nope | v]) weights from
// wkv_b, whose row h·(Dn+Dv)+j is head h's k_nope dim j (j < Dn) or value dim j−Dn.
func (rk *rank) buildKVB(a *mla, wkvb *backend.HostWeight, H, dn, dv, lc int) error {
	var err error
	if rk.m.opt.AttnImpl == "naive" {
		perm := make([]int, 0, H*(dn+dv))
		for h := 0; h < H; h++ {
			for j := 0; j < dn; j++ {
				perm = append(perm, h*(dn+dv)+j)
			}
		}
		for h := 0; h < H; h++ {
			for j := 0; j < dv; j++ {
				perm = append(perm, h*(dn+dv)+dn+j)
			}
		}
		sel, err := wkvb.SelectRows(wkvb.Name+"[k|v]", perm)
		if err != nil {
			return err
		}
		a.wkvB, err = rk.b.LoadWeight(sel)
		return err
	}
	// W_UKᵀ: row h·Lc+c, column d = wkv_b[h·(Dn+Dv)+d, c] (float32, dequantized).
	ukt := &backend.HostWeight{Name: wkvb.Name + "[UK^T]", DType: backend.F32, N: H * lc, K: dn, F32: make([]float32, H*lc*dn)}
	for h := 0; h < H; h++ {
		for d := 0; d < dn; d++ {
			for c := 0; c < lc; c++ {
				ukt.F32[(h*lc+c)*dn+d] = wkvb.At(h*(dn+dv)+d, c)
			}
		}
	}
	if a.wUKt, err = rk.b.LoadWeight(ukt); err != nil {
		return err
	}
	vrows := make([]int, 0, H*dv)
	for h := 0; h < H; h++ {
		for j := 0; j < dv; j++ {
			vrows = append(vrows, h*(dn+dv)+dn+j)
		}
	}
	uv, err := wkvb.SelectRows(wkvb.Name+"[UV]", vrows)
	if err != nil {
		return err
	}
	a.wUV, err = rk.b.LoadWeight(uv)
	return err
}
