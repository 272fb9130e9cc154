package model

import (
	"context"
	"fmt"
	"sort"

	"github.com/dsgate/dsgate/core/backend"
)

// step holds one rank's state during one Forward: the first error (sticky) and the
// tensors to free at the end.
type step struct {
	b   backend.Backend
	err error
	tmp []backend.Tensor
}

func (s *step) fail(what string, err error) {
	if err != nil && s.err == nil {
		s.err = fmt.Errorf("%s: %w", what, err)
	}
}

// ok records err (if any) and reports whether the step is still healthy.
func (s *step) ok(what string, err error) bool {
	s.fail(what, err)
	return s.err == nil
}

func (s *step) alloc(rows, cols int) backend.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := s.b.NewTensor(rows, cols)
	s.fail(fmt.Sprintf("allocate %d×%d", rows, cols), err)
	if err == nil {
		s.tmp = append(s.tmp, t)
	}
	return t
}

func (s *step) cols(t backend.Tensor, c0, n int) backend.Tensor {
	if s.err != nil {
		return nil
	}
	v, err := s.b.Slice(t, 0, t.Rows(), c0, n)
	s.fail("slice", err)
	return v
}

func (s *step) rows(t backend.Tensor, r0, n int) backend.Tensor {
	if s.err != nil {
		return nil
	}
	v, err := s.b.Slice(t, r0, n, 0, t.Cols())
	s.fail("slice", err)
	return v
}

func (s *step) free() {
	if f, ok := s.b.(backend.Freer); ok {
		for _, t := range s.tmp {
			f.Free(t)
		}
	}
	s.tmp = nil
}

// forward runs rank rk's part of one step (class Transformer.forward, spec §5.1) and, on
// every rank, returns the gathered logits per sequence.
func (rk *rank) forward(ctx context.Context, seqs []Seq) ([][]float32, error) {
	m, cfg, b := rk.m, rk.m.cfg, rk.b
	st := &step{b: b}
	defer st.free()

	// Flatten the batch: sequence i's tokens are rows [row0[i], row0[i]+len).
	var ids, pos, slots []int32
	attn := make([]backend.AttnSeq, len(seqs))
	for i, s := range seqs {
		attn[i] = backend.AttnSeq{Row: len(ids), N: len(s.Tokens), Pos: s.Pos, Blocks: s.Blocks}
		for j, t := range s.Tokens {
			ids = append(ids, t)
			p := s.Pos + j
			pos = append(pos, int32(p))
			slots = append(slots, int32(backend.Slot(s.Blocks, m.blockSize, p)))
		}
	}
	M, D := len(ids), cfg.Dim

	// spec §5.1 step 1 / §4.3: vocab-parallel embedding, then all-reduce.
	x := st.alloc(M, D)
	if st.err == nil {
		st.fail("embedding", b.Embedding(x, rk.embed, ids, rk.r*cfg.VocabSize/rk.w))
		st.fail("embedding all-reduce", b.AllReduce(x))
	}
	for l, bl := range rk.layers {
		if err := ctx.Err(); err != nil {
			st.fail("cancelled", err)
		}
		if st.err != nil {
			return nil, st.err
		}
		rk.block(st, l, bl, x, pos, slots, attn)
	}
	if st.err != nil {
		return nil, st.err
	}

	// spec §5.1 steps 5-6: final norm on the rows that need logits, head, all-gather.
	var sel []int32
	for i, s := range seqs {
		if s.AllLogits {
			for j := range s.Tokens {
				sel = append(sel, int32(attn[i].Row+j))
			}
		} else {
			sel = append(sel, int32(attn[i].Row+len(s.Tokens)-1))
		}
	}
	K, V := len(sel), cfg.VocabSize
	hs := st.alloc(K, D)
	local := st.alloc(K, V/rk.w)
	logits := st.alloc(K, V)
	if st.err != nil {
		return nil, st.err
	}
	st.fail("final rows", b.GatherRows(hs, x, sel))
	st.fail("final norm", b.RMSNorm(hs, hs, rk.norm, 1e-6))
	st.fail("head", b.Linear(local, hs, rk.head))
	st.fail("logits all-gather", b.AllGather(logits, local))
	if st.err != nil {
		return nil, st.err
	}
	if rk.r != 0 {
		return nil, nil
	}
	all := make([]float32, K*V)
	if !st.ok("read logits", b.Read(logits, all)) {
		return nil, st.err
	}
	out := make([][]float32, len(seqs))
	k := 0
	for i, s := range seqs {
		n := 1
		if s.AllLogits {
			n = len(s.Tokens)
		}
		out[i] = all[k*V : (k+n)*V : (k+n)*V]
		k += n
	}
	return out, nil
}

// block runs one transformer block in place on x (class Block, spec §5.1 step 4).
func (rk *rank) block(st *step, l int, bl *block, x backend.Tensor, pos, slots []int32, seqs []backend.AttnSeq) {
	b, cfg := rk.b, rk.m.cfg
	M, D := x.Rows(), cfg.Dim
	what := func(s string) string { return fmt.Sprintf("layer %d %s", l, s) }

	// h = x + attn(attn_norm(x))
	h := st.alloc(M, D)
	if st.err == nil {
		st.fail(what("attn_norm"), b.RMSNorm(h, x, bl.attnNorm, 1e-6))
	}
	o := rk.attention(st, l, &bl.attn, h, pos, slots, seqs)
	if st.err != nil {
		return
	}
	st.fail(what("wo all-reduce"), b.AllReduce(o))
	st.fail(what("attn residual"), b.Add(x, x, o))

	// x = x + ffn(ffn_norm(x))
	if st.err == nil {
		st.fail(what("ffn_norm"), b.RMSNorm(h, x, bl.ffnNorm, 1e-6))
	}
	var y backend.Tensor
	if bl.dense != nil {
		y = rk.swiglu(st, what("mlp"), bl.dense, h)
	} else {
		y = rk.moe(st, l, bl, h)
	}
	if st.err != nil {
		return
	}
	st.fail(what("ffn all-reduce"), b.AllReduce(y))
	st.fail(what("ffn residual"), b.Add(x, x, y))
}

// attention is MLA (class MLA, spec §5.2) for the rank's heads; it returns the wo
// output before the all-reduce.
func (rk *rank) attention(st *step, l int, a *mla, h backend.Tensor, pos, slots []int32, seqs []backend.AttnSeq) backend.Tensor {
	b, m, cfg := rk.b, rk.m, rk.m.cfg
	M := h.Rows()
	H := cfg.NHeads / rk.w
	dn, r, dv, lc := cfg.QKNopeHeadDim, cfg.QKRopeHeadDim, cfg.VHeadDim, cfg.KVLoraRank
	what := func(s string) string { return fmt.Sprintf("layer %d %s", l, s) }

	// Query: q = wq_b(q_norm(wq_a(x))) or wq(x); rows permuted to [nope | pe].
	q := st.alloc(M, H*(dn+r))
	if a.wqA != nil {
		qa := st.alloc(M, cfg.QLoraRank)
		if st.err == nil {
			st.fail(what("wq_a"), b.Linear(qa, h, a.wqA))
			st.fail(what("q_norm"), b.RMSNorm(qa, qa, a.qNorm, 1e-6))
			st.fail(what("wq_b"), b.Linear(q, qa, a.wqB))
		}
	} else if st.err == nil {
		st.fail(what("wq"), b.Linear(q, h, a.wqB))
	}
	qNope, qPe := st.cols(q, 0, H*dn), st.cols(q, H*dn, H*r)
	if st.err == nil {
		st.fail(what("q rope"), b.Rope(qPe, H, pos, rk.rope)) // spec §5.3
	}

	// Key/value latent: kv = wkv_a(x) = [c | k_pe]; c_n = kv_norm(c); rope(k_pe); cache both.
	kv := st.alloc(M, lc+r)
	if st.err == nil {
		st.fail(what("wkv_a"), b.Linear(kv, h, a.wkvA))
	}
	c, kpe := st.cols(kv, 0, lc), st.cols(kv, lc, r)
	if st.err == nil {
		st.fail(what("kv_norm"), b.RMSNorm(c, c, a.kvNrm, 1e-6))
		st.fail(what("k rope"), b.Rope(kpe, 1, pos, rk.rope))
		st.fail(what("cache write"), b.CacheWrite(rk.cache, l, kv, slots))
	}

	o := st.alloc(M, H*dv)
	if m.opt.AttnImpl == "absorb" {
		// spec §5.2.1: q_abs = q_nope · W_UK per head; attend in latent space; o = W_UV · o_lat.
		qAbs, oLat := st.alloc(M, H*lc), st.alloc(M, H*lc)
		if st.err == nil {
			st.fail(what("q absorb"), b.HeadLinear(qAbs, qNope, a.wUKt, H))
			st.fail(what("mla attention"), b.MLAAttention(oLat, qAbs, qPe, rk.cache, l, H, seqs, m.scale))
			st.fail(what("o absorb"), b.HeadLinear(o, oLat, a.wUV, H))
		}
	} else {
		// spec §5.2.2: expand every cached latent to per-head k_nope and v, plain attention.
		for _, s := range seqs {
			if st.err != nil {
				break
			}
			T := s.Pos + s.N
			lat := st.alloc(T, lc+r)
			kvb := st.alloc(T, H*(dn+dv))
			if st.err != nil {
				break
			}
			st.fail(what("cache read"), b.CacheRead(lat, rk.cache, l, s.Blocks))
			st.fail(what("wkv_b"), b.Linear(kvb, st.cols(lat, 0, lc), a.wkvB))
			one := []backend.AttnSeq{{Row: 0, N: s.N, Pos: s.Pos, KeyRow: 0}}
			st.fail(what("attention"), b.Attention(st.rows(o, s.Row, s.N), st.rows(qNope, s.Row, s.N), st.rows(qPe, s.Row, s.N),
				st.cols(kvb, 0, H*dn), st.cols(lat, lc, r), st.cols(kvb, H*dn, H*dv), H, one, m.scale))
		}
	}
	out := st.alloc(M, cfg.Dim)
	if st.err == nil {
		st.fail(what("wo"), b.Linear(out, o, a.wo))
	}
	return out
}

// swiglu computes w2(silu(w1 x) ⊙ w3 x) (class MLP, spec §4.5), before any all-reduce.
func (rk *rank) swiglu(st *step, what string, w *mlp, x backend.Tensor) backend.Tensor {
	b := rk.b
	M := x.Rows()
	g := st.alloc(M, w.w13.N())
	a := st.alloc(M, w.w13.N()/2)
	y := st.alloc(M, w.w2.N())
	if st.err == nil {
		st.fail(what+" w1|w3", b.Linear(g, x, w.w13))
		st.fail(what+" swiglu", b.SwiGLU(a, g))
		st.fail(what+" w2", b.Linear(y, a, w.w2))
	}
	return y
}

// moe is the MoE layer (class MoE, spec §5.5) for the rank's experts plus the shared
// experts; it returns the rank's partial sum before the all-reduce.
func (rk *rank) moe(st *step, l int, bl *block, x backend.Tensor) backend.Tensor {
	b, m, cfg := rk.b, rk.m, rk.m.cfg
	M, D := x.Rows(), cfg.Dim
	what := func(s string) string { return fmt.Sprintf("layer %d %s", l, s) }
	logits := st.alloc(M, cfg.NRoutedExperts)
	if st.err != nil {
		return nil
	}
	st.fail(what("router"), b.Linear(logits, x, bl.gate))
	if st.err != nil {
		return nil
	}
	idx, wts, err := b.MoEGate(logits, bl.bias, m.gate)
	if !st.ok(what("moe gate"), err) {
		return nil
	}
	var y backend.Tensor
	if bl.stack != nil {
		// Device-side MoE over the rank's stacked experts (backend.RoutedExperts).
		y = st.alloc(M, D)
		if st.err == nil {
			st.fail(what("routed experts"), rk.rx.RoutedMoE(y, x, idx, wts, m.gate.TopK, cfg.NRoutedExperts, bl.stack))
		}
	} else {
		y = rk.routed(st, l, bl, x, idx, wts)
	}
	if bl.shared != nil {
		z := rk.swiglu(st, what("shared experts"), bl.shared, x)
		if st.err == nil {
			st.fail(what("shared add"), b.Add(y, y, z))
		}
	}
	return y
}

// routed is the routed-expert part of the MoE layer composed of per-expert ops
// (GatherRows, GroupedLinear, SwiGLU, GroupedLinear, MoECombine) for the rank's experts;
// idx and wts are MoEGate's output.
func (rk *rank) routed(st *step, l int, bl *block, x backend.Tensor, idx []int32, wts []float32) backend.Tensor {
	b, m, cfg := rk.b, rk.m, rk.m.cfg
	M, D := x.Rows(), cfg.Dim
	what := func(s string) string { return fmt.Sprintf("layer %d %s", l, s) }
	// Dispatch: the (expert, token) pairs of this rank's experts, by expert then token —
	// the reference's accumulation order (spec §5.5 "Experts and combination").
	type pair struct {
		e, tok int32
		w      float32
	}
	var pairs []pair
	k := m.gate.TopK
	for t := 0; t < M; t++ {
		for j := 0; j < k; j++ {
			e := int(idx[t*k+j])
			if e >= bl.e0 && e < bl.e0+len(bl.experts) {
				pairs = append(pairs, pair{int32(e), int32(t), wts[t*k+j]})
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].e != pairs[j].e {
			return pairs[i].e < pairs[j].e
		}
		return pairs[i].tok < pairs[j].tok
	})
	R := len(pairs)
	rows := make([]int32, R)
	ws := make([]float32, R)
	counts := make([]int, len(bl.experts))
	for i, p := range pairs {
		rows[i], ws[i] = p.tok, p.w
		counts[int(p.e)-bl.e0]++
	}
	y := st.alloc(M, D)
	var ye backend.Tensor
	if R > 0 {
		inter := cfg.MoeInterDim
		xs, g, a := st.alloc(R, D), st.alloc(R, 2*inter), st.alloc(R, inter)
		ye = st.alloc(R, D)
		w13 := make([]backend.Weight, len(bl.experts))
		w2 := make([]backend.Weight, len(bl.experts))
		for i, e := range bl.experts {
			w13[i], w2[i] = e.w13, e.w2
		}
		if st.err == nil {
			st.fail(what("dispatch"), b.GatherRows(xs, x, rows))
			st.fail(what("experts w1|w3"), b.GroupedLinear(g, xs, w13, counts))
			st.fail(what("experts swiglu"), b.SwiGLU(a, g))
			st.fail(what("experts w2"), b.GroupedLinear(ye, a, w2, counts))
		}
	} else {
		ye = st.alloc(0, D)
	}
	if st.err == nil {
		st.fail(what("combine"), b.MoECombine(y, ye, rows, ws))
	}
	return y
}
