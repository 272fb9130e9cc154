package ascend

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/dsgate/dsgate/core/backend"
)

// CheckResult is one row of the operator check (gateway ascend-check): an op of
// backend.Backend run on the Ascend ranks and on backend.Reference with the same inputs.
type CheckResult struct {
	Op        string  // backend op and case
	CANN      string  // the CANN calls behind it
	RelErr    float64 // max |ascend − reference| / max |reference|
	Tolerance float64
	Err       error
}

// Pass reports whether the case ran and stayed within tolerance.
func (c CheckResult) Pass() bool { return c.Err == nil && c.RelErr <= c.Tolerance }

// checkCase runs an op on every rank of a group and returns rank outputs concatenated.
type checkCase struct {
	op, cann string
	tolBF16  float64 // tolerance in bf16 precision (f32 precision: tolF32)
	run      func(bs []backend.Backend, r *rand.Rand) ([]float32, error)
}

const tolF32 = 2e-5

// onAll runs fn for every rank concurrently (collectives need every rank) and joins
// their outputs in rank order.
func onAll(bs []backend.Backend, fn func(b backend.Backend) ([]float32, error)) ([]float32, error) {
	outs := make([][]float32, len(bs))
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = fn(b)
		}()
	}
	wg.Wait()
	var all []float32
	for _, o := range outs {
		all = append(all, o...)
	}
	return all, errors.Join(errs...)
}

// rank0 runs fn on the first rank only.
func rank0(fn func(b backend.Backend, r *rand.Rand) ([]float32, error)) func([]backend.Backend, *rand.Rand) ([]float32, error) {
	return func(bs []backend.Backend, r *rand.Rand) ([]float32, error) { return fn(bs[0], r) }
}

func rnd(r *rand.Rand, n int, s float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64() * s)
	}
	return out
}

func newT(b backend.Backend, rows, cols int, data []float32) (backend.Tensor, error) {
	t, err := b.NewTensor(rows, cols)
	if err == nil && data != nil {
		err = b.Write(t, data)
	}
	return t, err
}

func readT(b backend.Backend, t backend.Tensor, err error) ([]float32, error) {
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Rows()*t.Cols())
	return out, b.Read(t, out)
}

func ints(xs []int32) []float32 {
	out := make([]float32, len(xs))
	for i, x := range xs {
		out[i] = float32(x)
	}
	return out
}

// randWeight makes a random host weight: F32/BF16 dense, or I8/I4 with group size g.
func randWeight(r *rand.Rand, d backend.DType, n, k, g int) *backend.HostWeight {
	if d == backend.F32 || d == backend.BF16 {
		w := &backend.HostWeight{Name: fmt.Sprintf("w%v", d), DType: backend.F32, N: n, K: k, F32: rnd(r, n*k, 0.1)}
		if d == backend.BF16 {
			return w.ToBF16()
		}
		return w
	}
	w, _ := backend.RandomQuant(r, d, n, k, g)
	w.Name = fmt.Sprintf("w%v", d)
	return w
}

// linearCase checks Linear (x and out as strided views) for one weight type.
func linearCase(d backend.DType, n, k, g int, cann string) checkCase {
	return checkCase{op: fmt.Sprintf("Linear %v %dx%d g%d", d, n, k, g), cann: cann, tolBF16: 2e-2,
		run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			w, err := b.LoadWeight(randWeight(r, d, n, k, g))
			if err != nil {
				return nil, err
			}
			xa, err := newT(b, 5, k+3, rnd(r, 5*(k+3), 1))
			if err != nil {
				return nil, err
			}
			x, _ := b.Slice(xa, 1, 4, 2, k)
			oa, err := newT(b, 4, n+2, nil)
			if err != nil {
				return nil, err
			}
			o, _ := b.Slice(oa, 0, 4, 1, n)
			return readT(b, oa, b.Linear(o, x, w))
		})}
}

// routedMoECase runs a MoE layer's routed experts: the backend's device-side MoE
// (backend.RoutedExperts) where it has one, else — the reference — the composition
// core/model uses without it (GatherRows, GroupedLinear, SwiGLU, GroupedLinear,
// MoECombine).
func routedMoECase(b backend.Backend, r *rand.Rand) ([]float32, error) {
	const E, D, I, M, topK = 4, 64, 32, 5, 2
	var w13, w2 []*backend.HostWeight
	for e := 0; e < E; e++ {
		w13 = append(w13, randWeight(r, backend.I8, 2*I, D, 0))
		w2 = append(w2, randWeight(r, backend.I8, D, I, 0))
	}
	idx := []int32{0, 2, 3, 0, 1, 3, 2, 1, 0, 3}
	wts := []float32{0.5, 1.5, 1, 0.25, 0.75, 2, 1, 1, 0.5, 0.5}
	x, err := newT(b, M, D, rnd(r, M*D, 1))
	if err != nil {
		return nil, err
	}
	out, err := newT(b, M, D, nil)
	if err != nil {
		return nil, err
	}
	if re, ok := b.(backend.RoutedExperts); ok {
		ex, err := re.LoadExperts(0, w13, w2)
		if err != nil {
			return nil, err
		}
		if ex == nil {
			return nil, errors.New("LoadExperts declined int8 per-channel experts")
		}
		return readT(b, out, re.RoutedMoE(out, x, idx, wts, topK, E, ex))
	}
	var rows []int32
	var ws []float32
	counts := make([]int, E)
	var up, down []backend.Weight
	for e := 0; e < E; e++ {
		for t := 0; t < M; t++ {
			for q := 0; q < topK; q++ {
				if int(idx[t*topK+q]) == e {
					rows, ws = append(rows, int32(t)), append(ws, wts[t*topK+q])
					counts[e]++
				}
			}
		}
		u, err := b.LoadWeight(w13[e])
		if err != nil {
			return nil, err
		}
		d, err := b.LoadWeight(w2[e])
		if err != nil {
			return nil, err
		}
		up, down = append(up, u), append(down, d)
	}
	R := len(rows)
	xs, err1 := newT(b, R, D, nil)
	g, err2 := newT(b, R, 2*I, nil)
	a, err3 := newT(b, R, I, nil)
	ye, err4 := newT(b, R, D, nil)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, err
	}
	err = errors.Join(b.GatherRows(xs, x, rows), b.GroupedLinear(g, xs, up, counts), b.SwiGLU(a, g),
		b.GroupedLinear(ye, a, down, counts), b.MoECombine(out, ye, rows, ws))
	return readT(b, out, err)
}

// checkCases lists every op case; world is the group size.
func checkCases(world int) []checkCase {
	cs := []checkCase{
		{op: "Embedding BF16 (vocab shard)", cann: "aclnnEmbedding, aclnnCast", tolBF16: tolF32, run: func(bs []backend.Backend, r *rand.Rand) ([]float32, error) {
			hw := randWeight(r, backend.BF16, 10, 12, 0)
			ids := []int32{0, 3, 9, 15, 27, 2}
			return onAll(bs, func(b backend.Backend) ([]float32, error) {
				w, err := b.LoadWeight(hw)
				if err != nil {
					return nil, err
				}
				o, err := newT(b, len(ids), 12, nil)
				if err != nil {
					return nil, err
				}
				return readT(b, o, b.Embedding(o, w, ids, 10*b.Rank()))
			})
		}},
		{op: "RMSNorm", cann: "aclnnRmsNorm", tolBF16: tolF32, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			w, err := b.LoadWeight(backend.Vector("norm", rnd(r, 48, 1)))
			if err != nil {
				return nil, err
			}
			x, err := newT(b, 5, 48, rnd(r, 5*48, 2))
			if err != nil {
				return nil, err
			}
			return readT(b, x, b.RMSNorm(x, x, w, 1e-6))
		})},
		linearCase(backend.F32, 24, 40, 0, "aclnnMatmul, aclnnCast"),
		linearCase(backend.BF16, 24, 40, 0, "aclnnMatmul, aclnnCast"),
		linearCase(backend.I8, 24, 70, 0, "aclnnWeightQuantBatchMatmulV2 (INT8), aclnnCast"),
		linearCase(backend.I8, 16, 96, 32, "aclnnWeightQuantBatchMatmulV2 (INT8, per-group), aclnnCast"),
		linearCase(backend.I4, 40, 33, 0, "aclnnWeightQuantBatchMatmulV2 (INT32 = packed int4), aclnnCast"),
		linearCase(backend.I4, 16, 129, 64, "aclnnWeightQuantBatchMatmulV2 (packed int4, per-group), aclnnCast"),
		{op: "HeadLinear BF16 + I4", cann: "aclnnBatchMatMul, aclnnWeightQuantBatchMatmulV2 (dense copy), aclnnCast", tolBF16: 2e-2,
			run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
				var all []float32
				for _, d := range []backend.DType{backend.BF16, backend.I4} {
					w, err := b.LoadWeight(randWeight(r, d, 4*16, 24, 0))
					if err != nil {
						return nil, err
					}
					x, err := newT(b, 3, 4*24, rnd(r, 3*4*24, 1))
					if err != nil {
						return nil, err
					}
					o, err := newT(b, 3, 4*16, nil)
					if err != nil {
						return nil, err
					}
					out, err := readT(b, o, b.HeadLinear(o, x, w, 4))
					if err != nil {
						return nil, err
					}
					all = append(all, out...)
				}
				return all, nil
			})},
		{op: "GroupedLinear I4", cann: "aclnnWeightQuantBatchMatmulV2 per group", tolBF16: 2e-2, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			var ws []backend.Weight
			for range 3 {
				w, err := b.LoadWeight(randWeight(r, backend.I4, 16, 32, 0))
				if err != nil {
					return nil, err
				}
				ws = append(ws, w)
			}
			x, err := newT(b, 5, 32, rnd(r, 5*32, 1))
			if err != nil {
				return nil, err
			}
			o, err := newT(b, 5, 16, nil)
			if err != nil {
				return nil, err
			}
			return readT(b, o, b.GroupedLinear(o, x, ws, []int{2, 0, 3}))
		})},
		{op: "Rope (interleaved)", cann: "aclnnIndexSelect, aclnnRotaryPositionEmbedding mode 1", tolBF16: tolF32, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			freqs := []float32{1, 0.3, 0.05, 0.001}
			tab, err := b.NewRopeTable(freqs, 64)
			if err != nil {
				return nil, err
			}
			x, err := newT(b, 4, 3*8, rnd(r, 4*3*8, 1))
			if err != nil {
				return nil, err
			}
			return readT(b, x, b.Rope(x, 3, []int32{0, 5, 17, 63}, tab))
		})},
		{op: "CacheWrite + CacheRead", cann: "aclnnInplaceIndexCopy, aclnnIndexSelect, aclnnCast", tolBF16: 4e-3, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			c, err := b.NewCache(2, 4, 4, 24)
			if err != nil {
				return nil, err
			}
			kv, err := newT(b, 6, 24, rnd(r, 6*24, 1))
			if err != nil {
				return nil, err
			}
			if err := b.CacheWrite(c, 1, kv, []int32{8, 9, 10, 11, 4, 5}); err != nil {
				return nil, err
			}
			o, err := newT(b, 6, 24, nil)
			if err != nil {
				return nil, err
			}
			return readT(b, o, b.CacheRead(o, c, 1, []int32{2, 1}))
		})},
		{op: "MLAAttention (prefill + decode)", cann: "aclnnIndexSelect, aclnnMatmul, aclnnAdd, aclnnMuls, aclnnSoftmax", tolBF16: 2e-2,
			run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
				const heads, lc, rr, bs = 2, 16, 8, 4
				c, err := b.NewCache(1, 8, bs, lc+rr)
				if err != nil {
					return nil, err
				}
				kv, err := newT(b, 9, lc+rr, rnd(r, 9*(lc+rr), 1))
				if err != nil {
					return nil, err
				}
				// seq A: blocks {3,1}, positions 0..5 (prefill 6); seq B: block {6}, positions 0..2 cached, decode 1.
				if err := b.CacheWrite(c, 0, kv, []int32{12, 13, 14, 15, 4, 5, 24, 25, 26}); err != nil {
					return nil, err
				}
				qa, err := newT(b, 7, heads*lc, rnd(r, 7*heads*lc, 0.5))
				if err != nil {
					return nil, err
				}
				qp, err := newT(b, 7, heads*rr, rnd(r, 7*heads*rr, 0.5))
				if err != nil {
					return nil, err
				}
				o, err := newT(b, 7, heads*lc, nil)
				if err != nil {
					return nil, err
				}
				seqs := []backend.AttnSeq{{Row: 0, N: 6, Pos: 0, Blocks: []int32{3, 1}}, {Row: 6, N: 1, Pos: 2, Blocks: []int32{6}}}
				return readT(b, o, b.MLAAttention(o, qa, qp, c, 0, heads, seqs, 0.3))
			})},
		{op: "Attention (naive)", cann: "aclnnBatchMatMul, aclnnMatmul, aclnnAdd, aclnnMuls, aclnnSoftmax", tolBF16: tolF32 * 10,
			run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
				const heads, dn, rr, dv = 2, 8, 4, 6
				mk := func(rows, cols int) backend.Tensor {
					t, _ := newT(b, rows, cols, rnd(r, rows*cols, 0.7))
					return t
				}
				qn, qp, kn, kp, v := mk(4, heads*dn), mk(4, heads*rr), mk(5, heads*dn), mk(5, rr), mk(5, heads*dv)
				o, err := newT(b, 4, heads*dv, nil)
				if err != nil {
					return nil, err
				}
				seqs := []backend.AttnSeq{{Row: 0, N: 3, Pos: 0, KeyRow: 0}, {Row: 3, N: 1, Pos: 1, KeyRow: 3}}
				return readT(b, o, b.Attention(o, qn, qp, kn, kp, v, heads, seqs, 0.4))
			})},
		{op: "MoEGate sigmoid, groups", cann: "aclnnMoeGatingTopK", tolBF16: 1e-5, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			bias, err := b.LoadWeight(backend.Vector("bias", rnd(r, 32, 0.1)))
			if err != nil {
				return nil, err
			}
			l, err := newT(b, 5, 32, rnd(r, 5*32, 2))
			if err != nil {
				return nil, err
			}
			idx, w, err := b.MoEGate(l, bias, backend.GateParams{TopK: 4, Groups: 4, TopGroups: 2, Score: backend.Sigmoid, GroupScore: backend.GroupTop2Sum, Normalize: true, RouteScale: 2.5})
			return append(ints(idx), w...), err
		})},
		{op: "MoEGate softmax (host composition)", cann: "aclrtMemcpy D2H + host routing", tolBF16: 1e-6, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			l, err := newT(b, 3, 16, rnd(r, 3*16, 2))
			if err != nil {
				return nil, err
			}
			idx, w, err := b.MoEGate(l, nil, backend.GateParams{TopK: 3, Groups: 4, TopGroups: 2, Score: backend.Softmax, GroupScore: backend.GroupMax, RouteScale: 1})
			return append(ints(idx), w...), err
		})},
		{op: "GatherRows", cann: "aclnnIndexSelect", tolBF16: 0, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			x, err := newT(b, 5, 7, rnd(r, 35, 1))
			if err != nil {
				return nil, err
			}
			o, err := newT(b, 4, 7, nil)
			if err != nil {
				return nil, err
			}
			return readT(b, o, b.GatherRows(o, x, []int32{4, 0, 4, 2}))
		})},
		{op: "SwiGLU", cann: "aclnnSwiGlu", tolBF16: tolF32, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			x, err := newT(b, 3, 20, rnd(r, 60, 2))
			if err != nil {
				return nil, err
			}
			o, err := newT(b, 3, 10, nil)
			if err != nil {
				return nil, err
			}
			return readT(b, o, b.SwiGLU(o, x))
		})},
		{op: "MoECombine", cann: "aclnnMoeTokenUnpermute", tolBF16: tolF32, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			y, err := newT(b, 6, 8, rnd(r, 48, 1))
			if err != nil {
				return nil, err
			}
			o, err := newT(b, 4, 8, rnd(r, 32, 1))
			if err != nil {
				return nil, err
			}
			return readT(b, o, b.MoECombine(o, y, []int32{0, 2, 0, 3, 2, 0}, []float32{0.5, 1, 0.25, 2, -1, 0.125}))
		})},
		{op: "RoutedMoE int8 E4 top-2", cann: "aclnnMoeInitRoutingV3, aclnnGroupedMatmulV4, aclnnSwiGlu, aclnnMoeTokenUnpermute", tolBF16: 3e-2,
			run: rank0(routedMoECase)},
		{op: "Add", cann: "aclnnAdd", tolBF16: 0, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			x, err := newT(b, 3, 9, rnd(r, 27, 1))
			if err != nil {
				return nil, err
			}
			y, err := newT(b, 3, 9, rnd(r, 27, 1))
			if err != nil {
				return nil, err
			}
			return readT(b, x, b.Add(x, x, y))
		})},
		{op: "ArgMax + TopN", cann: "aclnnArgMax, aclnnTopk", tolBF16: 0, run: rank0(func(b backend.Backend, r *rand.Rand) ([]float32, error) {
			x, err := newT(b, 3, 50, rnd(r, 150, 1))
			if err != nil {
				return nil, err
			}
			am, err := b.ArgMax(x)
			if err != nil {
				return nil, err
			}
			idx, v, err := b.TopN(x, 5)
			return append(append(ints(am), ints(idx)...), v...), err
		})},
	}
	if world > 1 {
		cs = append(cs,
			checkCase{op: fmt.Sprintf("AllReduce (W=%d)", world), cann: "HcclAllReduce (fp32, sum)", tolBF16: 1e-6, run: func(bs []backend.Backend, r *rand.Rand) ([]float32, error) {
				data := rnd(r, len(bs)*4*6, 1)
				return onAll(bs, func(b backend.Backend) ([]float32, error) {
					x, err := newT(b, 4, 6, data[b.Rank()*24:(b.Rank()+1)*24])
					if err != nil {
						return nil, err
					}
					v, _ := b.Slice(x, 1, 3, 2, 3)
					return readT(b, x, b.AllReduce(v))
				})
			}},
			checkCase{op: fmt.Sprintf("AllGather (W=%d)", world), cann: "HcclAllGather, aclnnCast", tolBF16: 0, run: func(bs []backend.Backend, r *rand.Rand) ([]float32, error) {
				data := rnd(r, len(bs)*3*5, 1)
				return onAll(bs, func(b backend.Backend) ([]float32, error) {
					x, err := newT(b, 3, 5, data[b.Rank()*15:(b.Rank()+1)*15])
					if err != nil {
						return nil, err
					}
					o, err := newT(b, 3, 5*b.WorldSize(), nil)
					if err != nil {
						return nil, err
					}
					return readT(b, o, b.AllGather(o, x))
				})
			}})
	}
	return cs
}

// Check runs every op case on the Ascend ranks (built from opt) and on the reference,
// and reports the relative error of each. It needs CANN (or the emulator) at
// opt.CANNHome.
func Check(opt Options, worldSize int) ([]CheckResult, error) {
	bs, err := NewGroup(worldSize, opt)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, b := range bs {
			b.Close()
		}
	}()
	ref, err := backend.NewReferenceGroup(worldSize)
	if err != nil {
		return nil, err
	}
	tol := func(c checkCase) float64 {
		if opt.Precision == "f32" {
			return 10 * tolF32 // float32 throughout: only summation order differs
		}
		return c.tolBF16
	}
	var out []CheckResult
	for i, c := range checkCases(worldSize) {
		res := CheckResult{Op: c.op, CANN: c.cann, Tolerance: tol(c)}
		seed := uint64(i + 1)
		want, err := c.run(ref, rand.New(rand.NewPCG(seed, 7)))
		if err != nil {
			res.Err = fmt.Errorf("reference: %w", err)
			out = append(out, res)
			continue
		}
		got, err := c.run(bs, rand.New(rand.NewPCG(seed, 7)))
		if err != nil {
			res.Err = err
		} else {
			res.RelErr = relErr(got, want)
		}
		out = append(out, res)
	}
	return out, nil
}

// relErr is max|a−b| / max|b| (∞ on length mismatch or NaN).
func relErr(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = math.Max(m, math.Abs(float64(b[i])))
	}
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	return d / math.Max(m, 1e-30)
}
