//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// WQBMM limits on Atlas A2/A3: k and n each in [1, 65535]. Larger matrices are split;
// n chunks stay multiples of 8 so that packed int4 words are never cut.
const (
	maxK = 65535
	maxN = 65528
)

// cast enqueues aclnnCast(src) → dst (also used as a strided copy when the dtypes match).
func (b *Backend) cast(src, dst view) error {
	return b.op("aclnnCast", C.F_aclnnCast, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_cast(d.a.p, d.t(src), C.int(dst.dt), d.t(dst), ws, ex)
	})
}

func (b *Backend) matmul(batch bool, x, w, out view) error {
	name, idx, bi := "aclnnMatmul", C.int(C.F_aclnnMatmul), C.int(0)
	if batch {
		name, idx, bi = "aclnnBatchMatMul", C.F_aclnnBatchMatMul, 1
	}
	return b.op(name, idx, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		// cubeMathType 1 = ALLOW_FP32_DOWN_PRECISION (HF32 for float32 on the NPU).
		return C.dsg_matmul(d.a.p, bi, d.t(x), d.t(w), d.t(out), 1, ws, ex)
	})
}

func (b *Backend) add(x, y, out view) error {
	return b.op("aclnnAdd", C.F_aclnnAdd, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_add(d.a.p, d.t(x), d.t(y), d.scalar(1), d.t(out), ws, ex)
	})
}

func (b *Backend) muls(x view, s float32, out view) error {
	return b.op("aclnnMuls", C.F_aclnnMuls, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_muls(d.a.p, d.t(x), d.scalar(s), d.t(out), ws, ex)
	})
}

func (b *Backend) indexSelect(x view, idx view, out view) error {
	return b.op("aclnnIndexSelect", C.F_aclnnIndexSelect, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_indexSelect(d.a.p, d.t(x), 0, d.t(idx), d.t(out), ws, ex)
	})
}

// Embedding looks up this rank's vocabulary shard; ids outside it read the zero row N.
func (b *Backend) Embedding(out backend.Tensor, table backend.Weight, ids []int32, rowOffset int) error {
	ts, err := b.tensors("embedding", out)
	if err != nil {
		return err
	}
	w, err := asWeight("embedding", table)
	if err != nil {
		return err
	}
	if !w.dense {
		return fmt.Errorf("embedding: table %s must be a dense F32/BF16 matrix", w.name)
	}
	if err := backend.CheckShape("embedding", "out", out, len(ids), w.k); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	local := make([]int64, len(ids))
	for i, id := range ids {
		r := int(id) - rowOffset
		if r < 0 || r >= w.n {
			r = w.n
		}
		local[i] = int64(r)
	}
	o := ts[0]
	return b.do(func() error {
		idx, err := b.uploadTmp(unsafe.Pointer(&local[0]), len(local), dtI64)
		if err != nil {
			return err
		}
		tab := view{w.data.ptr, int64((w.n + 1) * w.k), w.dataT, []int64{int64(w.n + 1), int64(w.k)}, []int64{int64(w.k), 1}, 0}
		dst := o.mat()
		if w.dataT != dtF32 {
			if dst, err = b.tmp(len(ids), w.k, w.dataT); err != nil {
				return err
			}
		}
		err = b.op("aclnnEmbedding", C.F_aclnnEmbedding, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_embedding(d.a.p, d.t(tab), d.t(idx), d.t(dst), ws, ex)
		})
		if err != nil || w.dataT == dtF32 {
			return err
		}
		return b.cast(dst, o.mat())
	})
}

// RMSNorm runs aclnnRmsNorm (float32 x and gamma; rstd goes to scratch).
func (b *Backend) RMSNorm(out, x backend.Tensor, w backend.Weight, eps float32) error {
	ts, err := b.tensors("rmsnorm", out, x)
	if err != nil {
		return err
	}
	wt, err := asWeight("rmsnorm", w)
	if err != nil {
		return err
	}
	if !wt.vec1 || wt.n != x.Cols() {
		return fmt.Errorf("rmsnorm: weight %s is %d×%d, want %d×1", wt.name, wt.n, wt.k, x.Cols())
	}
	if err := backend.CheckShape("rmsnorm", "out", out, x.Rows(), x.Cols()); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	return b.do(func() error {
		rstd, err := b.tmp(x.Rows(), 1, dtF32)
		if err != nil {
			return err
		}
		return b.op("aclnnRmsNorm", C.F_aclnnRmsNorm, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_rmsNorm(d.a.p, d.t(ts[1].mat()), d.t(wt.vec()), C.double(eps), d.t(ts[0].mat()), d.t(rstd), ws, ex)
		})
	})
}

func checkLinear(op string, out, x backend.Tensor, w *Weight) error {
	if x.Cols() != w.k {
		return fmt.Errorf("%s: x is %d×%d but weight %s is %d×%d", op, x.Rows(), x.Cols(), w.name, w.n, w.k)
	}
	return backend.CheckShape(op, "out of "+w.name, out, x.Rows(), w.n)
}

// Linear computes out = x · Wᵀ: aclnnMatmul for dense weights, and
// aclnnWeightQuantBatchMatmulV2 for I8/I4 (bfloat16 activations, split into k ≤ 65535
// and n ≤ 65528 pieces).
func (b *Backend) Linear(out, x backend.Tensor, w backend.Weight) error {
	ts, err := b.tensors("linear", out, x)
	if err != nil {
		return err
	}
	wt, err := asWeight("linear", w)
	if err != nil {
		return err
	}
	if err := checkLinear("linear", out, x, wt); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	return b.do(func() error { return b.linear(ts[0].mat(), ts[1].mat(), wt) })
}

// linear is Linear on views (on the rank's thread). o and x are float32 (M,N) / (M,K).
func (b *Backend) linear(o, x view, w *Weight) error {
	m := int(x.dims[0])
	if w.dense {
		if w.dataT == dtF32 {
			return b.matmul(false, x, w.denseT(0, w.n), o)
		}
		xb, err := b.tmp(m, w.k, w.dataT)
		if err != nil {
			return err
		}
		yb, err := b.tmp(m, w.n, w.dataT)
		if err != nil {
			return err
		}
		if err := b.cast(x, xb); err != nil {
			return err
		}
		if err := b.matmul(false, xb, w.denseT(0, w.n), yb); err != nil {
			return err
		}
		return b.cast(yb, o)
	}
	kstep := maxK
	if w.group > 0 {
		kstep = maxK / w.group * w.group
	}
	for k0 := 0; k0 < w.k; k0 += kstep {
		kc := min(kstep, w.k-k0)
		xb, err := b.tmp(m, kc, dtBF16)
		if err != nil {
			return err
		}
		xs := x
		xs.dims = []int64{int64(m), int64(kc)}
		xs.off += int64(k0)
		if err := b.cast(xs, xb); err != nil {
			return err
		}
		for n0 := 0; n0 < w.n; n0 += maxN {
			nc := min(maxN, w.n-n0)
			yb, err := b.tmp(m, nc, dtBF16)
			if err != nil {
				return err
			}
			if err := b.wqbmm(xb, w, k0, kc, n0, nc, yb); err != nil {
				return err
			}
			os := o
			os.dims = []int64{int64(m), int64(nc)}
			os.off += int64(n0)
			if k0 == 0 {
				err = b.cast(yb, os)
			} else {
				var yf view
				if yf, err = b.tmp(m, nc, dtF32); err == nil {
					if err = b.cast(yb, yf); err == nil {
						err = b.add(os, yf, os)
					}
				}
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// wqbmm enqueues aclnnWeightQuantBatchMatmulV2 for rows [k0,k0+kc) and columns
// [n0,n0+nc) of a quantized weight.
func (b *Backend) wqbmm(xb view, w *Weight, k0, kc, n0, nc int, yb view) error {
	var wv view
	if w.dataT == dtI32 {
		wv = view{w.data.ptr, int64(w.k * w.n / 8), dtI32, []int64{int64(kc), int64(nc / 8)}, []int64{int64(w.n / 8), 1}, int64(k0*w.n/8 + n0/8)}
	} else {
		wv = view{w.data.ptr, int64(w.k * w.n), dtI8, []int64{int64(kc), int64(nc)}, []int64{int64(w.n), 1}, int64(k0*w.n + n0)}
	}
	srows := 1
	if w.group > 0 {
		srows = (w.k + w.group - 1) / w.group
	}
	g := w.group
	var sv view
	switch {
	case g == 0:
		sv = view{w.scale.ptr, int64(srows * w.n), dtBF16, []int64{int64(nc)}, []int64{1}, int64(n0)}
	case kc <= g: // one group: per-channel with that group's scales
		sv = view{w.scale.ptr, int64(srows * w.n), dtBF16, []int64{int64(nc)}, []int64{1}, int64(k0/g*w.n + n0)}
		g = 0
	default:
		sv = view{w.scale.ptr, int64(srows * w.n), dtBF16, []int64{int64((kc + g - 1) / g), int64(nc)}, []int64{int64(w.n), 1}, int64(k0/g*w.n + n0)}
	}
	return b.op("aclnnWeightQuantBatchMatmulV2", C.F_aclnnWeightQuantBatchMatmulV2, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_wqbmm(d.a.p, d.t(xb), d.t(wv), d.t(sv), C.int(g), d.t(yb), ws, ex)
	})
}

// headDense returns the (K, N) dense transposed matrix used by HeadLinear and its dtype:
// the weight itself for dense weights; for quantized weights a bfloat16 copy made once
// on the device by aclnnWeightQuantBatchMatmulV2 with an identity x (Wᵀ = I · dequant(W)).
func (b *Backend) headDense(w *Weight) (C.uintptr_t, int64, int64, int, error) {
	if w.dense {
		return w.data.ptr, int64(w.k), 1, w.dataT, nil
	}
	if w.headT == nil {
		if w.k > maxK || w.n > maxN {
			return 0, 0, 0, 0, fmt.Errorf("head linear: quantized weight %s too large for the dense copy", w.name)
		}
		eye := make([]uint16, w.k*w.k)
		for i := 0; i < w.k; i++ {
			eye[i*w.k+i] = backend.ToBF16(1)
		}
		xb, err := b.uploadTmp(unsafe.Pointer(&eye[0]), len(eye), dtBF16)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		xb.dims, xb.strides = []int64{int64(w.k), int64(w.k)}, []int64{int64(w.k), 1}
		buf, err := b.w.newBuf(2 * w.k * w.n)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		yb := view{buf.ptr, int64(w.k * w.n), dtBF16, []int64{int64(w.k), int64(w.n)}, []int64{int64(w.n), 1}, 0}
		if err := b.wqbmm(xb, w, 0, w.k, 0, w.n, yb); err != nil {
			return 0, 0, 0, 0, err
		}
		w.headT = buf
	}
	return w.headT.ptr, 1, int64(w.n), dtBF16, nil
}

// HeadLinear runs one matmul per head as a single aclnnBatchMatMul over strided views.
func (b *Backend) HeadLinear(out, x backend.Tensor, w backend.Weight, heads int) error {
	ts, err := b.tensors("head linear", out, x)
	if err != nil {
		return err
	}
	wt, err := asWeight("head linear", w)
	if err != nil {
		return err
	}
	if heads <= 0 || wt.n%heads != 0 {
		return fmt.Errorf("head linear: weight %s has %d rows, not divisible into %d heads", wt.name, wt.n, heads)
	}
	if x.Cols() != heads*wt.k {
		return fmt.Errorf("head linear: x has %d columns, want %d heads × %d", x.Cols(), heads, wt.k)
	}
	if err := backend.CheckShape("head linear", "out", out, x.Rows(), wt.n); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	o, xt := ts[0], ts[1]
	m, n, k := x.Rows(), wt.n/heads, wt.k
	return b.do(func() error {
		// element (p, j) of Wᵀ is at ptr + p·sp + j·sj (in elements).
		ptr, sj, sp, dt, err := b.headDense(wt)
		if err != nil {
			return err
		}
		storage := int64((wt.n + 1) * wt.k)
		if !wt.dense {
			storage = int64(wt.n * wt.k)
		}
		wv := view{ptr, storage, dt, []int64{int64(heads), int64(k), int64(n)}, []int64{int64(n) * sj, sp, sj}, 0}
		xv := xt.v3(heads, m, k, k, xt.stride, 1, 0)
		ov := o.v3(heads, m, n, n, o.stride, 1, 0)
		if dt == dtF32 {
			return b.matmul(true, xv, wv, ov)
		}
		xb, err := b.tmp(m, heads*k, dt)
		if err != nil {
			return err
		}
		yb, err := b.tmp(m, heads*n, dt)
		if err != nil {
			return err
		}
		if err := b.cast(xt.mat(), xb); err != nil {
			return err
		}
		xbv := view{xb.base, xb.storage, dt, []int64{int64(heads), int64(m), int64(k)}, []int64{int64(k), int64(heads * k), 1}, 0}
		ybv := view{yb.base, yb.storage, dt, []int64{int64(heads), int64(m), int64(n)}, []int64{int64(n), int64(heads * n), 1}, 0}
		if err := b.matmul(true, xbv, wv, ybv); err != nil {
			return err
		}
		return b.cast(yb, o.mat())
	})
}

// GroupedLinear applies one weight per consecutive row group (one Linear per non-empty
// group; the counts are host values, so no device-side group list is needed).
func (b *Backend) GroupedLinear(out, x backend.Tensor, ws []backend.Weight, counts []int) error {
	ts, err := b.tensors("grouped linear", out, x)
	if err != nil {
		return err
	}
	if len(ws) != len(counts) {
		return fmt.Errorf("grouped linear: %d weights but %d counts", len(ws), len(counts))
	}
	wts := make([]*Weight, len(ws))
	total := 0
	for g, w := range ws {
		if wts[g], err = asWeight("grouped linear", w); err != nil {
			return err
		}
		if counts[g] < 0 {
			return fmt.Errorf("grouped linear: negative count %d", counts[g])
		}
		if wts[g].k != x.Cols() || wts[g].n != out.Cols() {
			return fmt.Errorf("grouped linear: weight %s is %d×%d, want %d×%d", wts[g].name, wts[g].n, wts[g].k, out.Cols(), x.Cols())
		}
		total += counts[g]
	}
	if total != x.Rows() || out.Rows() != x.Rows() {
		return fmt.Errorf("grouped linear: counts sum to %d, x has %d rows, out %d", total, x.Rows(), out.Rows())
	}
	o, xt := ts[0], ts[1]
	return b.do(func() error {
		row := 0
		for g, w := range wts {
			c := counts[g]
			if c == 0 {
				continue
			}
			ov, xv := o.mat(), xt.mat()
			ov.dims[0], xv.dims[0] = int64(c), int64(c)
			ov.off += int64(row * o.stride)
			xv.off += int64(row * xt.stride)
			if err := b.linear(ov, xv, w); err != nil {
				return err
			}
			row += c
		}
		return nil
	})
}

// Rope rotates interleaved pairs in place with aclnnRotaryPositionEmbedding (mode 1)
// after gathering each row's cos/sin with aclnnIndexSelect.
func (b *Backend) Rope(x backend.Tensor, heads int, pos []int32, table backend.RopeTable) error {
	ts, err := b.tensors("rope", x)
	if err != nil {
		return err
	}
	rt, ok := table.(*Rope)
	if !ok {
		return fmt.Errorf("rope: table %T is not an ascend table", table)
	}
	if err := backend.CheckRope(x, heads, pos, rt); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	xt, m, d := ts[0], x.Rows(), 2*rt.pairs
	p64 := i64s(pos)
	return b.do(func() error {
		idx, err := b.uploadTmp(unsafe.Pointer(&p64[0]), m, dtI64)
		if err != nil {
			return err
		}
		var cs [2]view
		for i, src := range []*devBuf{rt.cos, rt.sin} {
			if cs[i], err = b.tmp(m, d, dtF32); err != nil {
				return err
			}
			tab := view{src.ptr, int64(rt.maxPos * d), dtF32, []int64{int64(rt.maxPos), int64(d)}, []int64{int64(d), 1}, 0}
			if err := b.indexSelect(tab, idx, cs[i]); err != nil {
				return err
			}
			cs[i].dims, cs[i].strides = []int64{1, int64(m), 1, int64(d)}, []int64{int64(m * d), int64(d), int64(d), 1}
		}
		xv := view{xt.buf.ptr, int64(xt.buf.bytes / 4), dtF32, []int64{1, int64(m), int64(heads), int64(d)},
			[]int64{int64(m * xt.stride), int64(xt.stride), int64(d), 1}, int64(xt.off)}
		return b.op("aclnnRotaryPositionEmbedding", C.F_aclnnRotaryPositionEmbedding, func(dd *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_rope(dd.a.p, dd.t(xv), dd.t(cs[0]), dd.t(cs[1]), 1, dd.t(xv), ws, ex)
		})
	})
}

func asCache(op string, c backend.Cache) (*Cache, error) {
	d, ok := c.(*Cache)
	if !ok || d == nil {
		return nil, fmt.Errorf("%s: cache %T is not an ascend cache", op, c)
	}
	return d, nil
}

// CacheWrite scatters kv rows into cache slots with aclnnInplaceIndexCopy.
func (b *Backend) CacheWrite(c backend.Cache, layer int, kv backend.Tensor, slots []int32) error {
	ts, err := b.tensors("cache write", kv)
	if err != nil {
		return err
	}
	cc, err := asCache("cache write", c)
	if err != nil {
		return err
	}
	if err := backend.CheckCacheWrite(cc, layer, kv, slots); err != nil {
		return err
	}
	if len(slots) == 0 {
		return nil
	}
	s64 := i64s(slots)
	return b.do(func() error {
		idx, err := b.uploadTmp(unsafe.Pointer(&s64[0]), len(s64), dtI64)
		if err != nil {
			return err
		}
		src := ts[0].mat()
		if cc.dt != dtF32 {
			if src, err = b.tmp(len(slots), cc.width, cc.dt); err != nil {
				return err
			}
			if err := b.cast(ts[0].mat(), src); err != nil {
				return err
			}
		}
		lv := cc.layer(layer)
		return b.op("aclnnInplaceIndexCopy", C.F_aclnnInplaceIndexCopy, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_indexCopy(d.a.p, d.t(lv), 0, d.t(idx), d.t(src), ws, ex)
		})
	})
}

// gatherCache gathers positions [0, n) of a block table into a float32 (n, width)
// scratch matrix (on the rank's thread).
func (b *Backend) gatherCache(cc *Cache, layer int, blocks []int32, n int) (view, error) {
	s := make([]int64, n)
	for t := range s {
		s[t] = int64(backend.Slot(blocks, cc.bs, t))
	}
	idx, err := b.uploadTmp(unsafe.Pointer(&s[0]), n, dtI64)
	if err != nil {
		return view{}, err
	}
	g, err := b.tmp(n, cc.width, cc.dt)
	if err != nil {
		return view{}, err
	}
	if err := b.indexSelect(cc.layer(layer), idx, g); err != nil {
		return view{}, err
	}
	if cc.dt == dtF32 {
		return g, nil
	}
	f, err := b.tmp(n, cc.width, dtF32)
	if err != nil {
		return view{}, err
	}
	return f, b.cast(g, f)
}

// CacheRead gathers a sequence's cached rows (aclnnIndexSelect).
func (b *Backend) CacheRead(out backend.Tensor, c backend.Cache, layer int, blocks []int32) error {
	ts, err := b.tensors("cache read", out)
	if err != nil {
		return err
	}
	cc, err := asCache("cache read", c)
	if err != nil {
		return err
	}
	if layer < 0 || layer >= cc.layers {
		return fmt.Errorf("cache read: layer %d outside [0,%d)", layer, cc.layers)
	}
	if err := backend.CheckShape("cache read", "out", out, -1, cc.width); err != nil {
		return err
	}
	if err := backend.CheckBlocks(cc, blocks, out.Rows()); err != nil {
		return fmt.Errorf("cache read: %w", err)
	}
	if out.Rows() == 0 {
		return nil
	}
	return b.do(func() error {
		g, err := b.gatherCache(cc, layer, blocks, out.Rows())
		if err != nil {
			return err
		}
		return b.cast(g, ts[0].mat())
	})
}

// causalMask uploads the (n, 1, t) additive mask of a query chunk at position pos:
// −inf where key t > pos + i.
func (b *Backend) causalMask(n, pos, t int) (view, error) {
	m := make([]float32, n*t)
	inf := float32(math.Inf(-1))
	for i := 0; i < n; i++ {
		for j := pos + i + 1; j < t; j++ {
			m[i*t+j] = inf
		}
	}
	v, err := b.uploadTmp(unsafe.Pointer(&m[0]), n*t, dtF32)
	v.dims, v.strides = []int64{int64(n), 1, int64(t)}, []int64{int64(t), int64(t), 1}
	return v, err
}

// softmaxScaled turns raw scores s (…, T) plus s2 into softmax((s + s2)·scale + mask).
func (b *Backend) softmaxScaled(s, s2 view, scale float32, mask *view) error {
	if err := b.add(s, s2, s); err != nil {
		return err
	}
	if err := b.muls(s, scale, s); err != nil {
		return err
	}
	if mask != nil {
		if err := b.add(s, *mask, s); err != nil {
			return err
		}
	}
	return b.op("aclnnSoftmax", C.F_aclnnSoftmax, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		return C.dsg_softmax(d.a.p, d.t(s), -1, d.t(s), ws, ex)
	})
}

// MLAAttention is absorbed MLA over the paged latent cache, composed per sequence from
// aclnnIndexSelect (gather the context), two aclnnMatmul (latent and rope scores),
// aclnnAdd / aclnnMuls / causal mask, aclnnSoftmax and aclnnMatmul (weighted latent
// sum). aclnnFusedInferAttentionScoreV3 is the fused equivalent on hardware (README).
func (b *Backend) MLAAttention(out, qAbs, qPe backend.Tensor, c backend.Cache, layer int, heads int, seqs []backend.AttnSeq, scale float32) error {
	ts, err := b.tensors("mla attention", out, qAbs, qPe)
	if err != nil {
		return err
	}
	cc, err := asCache("mla attention", c)
	if err != nil {
		return err
	}
	lc, r, err := backend.CheckMLA(out, qAbs, qPe, cc, layer, heads, seqs)
	if err != nil {
		return err
	}
	o, qa, qp := ts[0], ts[1], ts[2]
	return b.do(func() error {
		for _, s := range seqs {
			if s.N == 0 {
				continue
			}
			T := s.Pos + s.N
			ctx, err := b.gatherCache(cc, layer, s.Blocks, T)
			if err != nil {
				return err
			}
			w := int64(cc.width)
			latT := view{ctx.base, ctx.storage, dtF32, []int64{int64(lc), int64(T)}, []int64{1, w}, 0}
			peT := view{ctx.base, ctx.storage, dtF32, []int64{int64(r), int64(T)}, []int64{1, w}, int64(lc)}
			lat := view{ctx.base, ctx.storage, dtF32, []int64{int64(T), int64(lc)}, []int64{w, 1}, 0}
			var sc [2]view
			for i := range sc {
				if sc[i], err = b.tmp(s.N*heads, T, dtF32); err != nil {
					return err
				}
				sc[i].dims, sc[i].strides = []int64{int64(s.N), int64(heads), int64(T)}, []int64{int64(heads * T), int64(T), 1}
			}
			if err := b.matmul(false, qa.v3(s.N, heads, lc, qa.stride, lc, 1, s.Row*qa.stride), latT, sc[0]); err != nil {
				return err
			}
			if err := b.matmul(false, qp.v3(s.N, heads, r, qp.stride, r, 1, s.Row*qp.stride), peT, sc[1]); err != nil {
				return err
			}
			var mask *view
			if s.N > 1 {
				m, err := b.causalMask(s.N, s.Pos, T)
				if err != nil {
					return err
				}
				mask = &m
			}
			if err := b.softmaxScaled(sc[0], sc[1], scale, mask); err != nil {
				return err
			}
			if err := b.matmul(false, sc[0], lat, o.v3(s.N, heads, lc, o.stride, lc, 1, s.Row*o.stride)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Attention is plain causal attention with a shared rope key, composed per sequence
// from aclnnBatchMatMul / aclnnMatmul, aclnnAdd, aclnnMuls, aclnnSoftmax.
func (b *Backend) Attention(out, qNope, qPe, kNope, kPe, v backend.Tensor, heads int, seqs []backend.AttnSeq, scale float32) error {
	ts, err := b.tensors("attention", out, qNope, qPe, kNope, kPe, v)
	if err != nil {
		return err
	}
	dn, r, dv, err := backend.CheckAttention(out, qNope, qPe, kNope, kPe, v, heads, seqs)
	if err != nil {
		return err
	}
	o, qn, qp, kn, kp, vv := ts[0], ts[1], ts[2], ts[3], ts[4], ts[5]
	return b.do(func() error {
		for _, s := range seqs {
			if s.N == 0 {
				continue
			}
			T := s.Pos + s.N
			var sc [2]view
			for i := range sc {
				if sc[i], err = b.tmp(heads*s.N, T, dtF32); err != nil {
					return err
				}
				sc[i].dims, sc[i].strides = []int64{int64(heads), int64(s.N), int64(T)}, []int64{int64(s.N * T), int64(T), 1}
			}
			qv := qn.v3(heads, s.N, dn, dn, qn.stride, 1, s.Row*qn.stride)
			kv := kn.v3(heads, dn, T, dn, 1, kn.stride, s.KeyRow*kn.stride)
			if err := b.matmul(true, qv, kv, sc[0]); err != nil {
				return err
			}
			pv := qp.v3(heads, s.N, r, r, qp.stride, 1, s.Row*qp.stride)
			kpv := view{kp.buf.ptr, int64(kp.buf.bytes / 4), dtF32, []int64{int64(r), int64(T)}, []int64{1, int64(kp.stride)}, int64(kp.off + s.KeyRow*kp.stride)}
			if err := b.matmul(false, pv, kpv, sc[1]); err != nil {
				return err
			}
			var mask *view
			if s.N > 1 {
				m, err := b.causalMask(s.N, s.Pos, T)
				if err != nil {
					return err
				}
				m.dims, m.strides = []int64{1, int64(s.N), int64(T)}, []int64{int64(s.N * T), int64(T), 1}
				mask = &m
			}
			if err := b.softmaxScaled(sc[0], sc[1], scale, mask); err != nil {
				return err
			}
			vview := vv.v3(heads, T, dv, dv, vv.stride, 1, s.KeyRow*vv.stride)
			if err := b.matmul(true, sc[0], vview, o.v3(heads, s.N, dv, dv, o.stride, 1, s.Row*o.stride)); err != nil {
				return err
			}
		}
		return nil
	})
}
