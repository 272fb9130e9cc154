//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// Experts holds the routed experts [First, First+Count) of one rank, stacked for
// aclnnGroupedMatmulV4: gate‖up as (E, D, 2I) and down as (E, I, D), in INT8, INT32
// (packed int4) or BF16, with bfloat16 antiquant scales (E, N) per channel or (E, G, N)
// per group.
type Experts struct {
	First, Count int
	gateUp, down stack
}

type stack struct {
	data, scale *devBuf
	dt          int
	e, k, n     int
	groups      int // 0 = per channel
}

func (s *stack) weight() view {
	nn := s.n
	if s.dt == dtI32 {
		nn = s.n / 8
	}
	return view{s.data.ptr, int64(s.e * s.k * nn), s.dt, []int64{int64(s.e), int64(s.k), int64(nn)}, []int64{int64(s.k * nn), int64(nn), 1}, 0}
}

func (s *stack) scales() (view, bool) {
	if s.scale == nil {
		return view{}, false
	}
	if s.groups == 0 {
		return view{s.scale.ptr, int64(s.e * s.n), dtBF16, []int64{int64(s.e), int64(s.n)}, []int64{int64(s.n), 1}, 0}, true
	}
	return view{s.scale.ptr, int64(s.e * s.groups * s.n), dtBF16, []int64{int64(s.e), int64(s.groups), int64(s.n)},
		[]int64{int64(s.groups * s.n), int64(s.n), 1}, 0}, true
}

// stackWeights uploads E host weights of equal shape N × K as one (E, K, N) stack.
func (b *Backend) stackWeights(ws []*backend.HostWeight) (stack, error) {
	w0 := ws[0]
	s := stack{e: len(ws), k: w0.K, n: w0.N}
	for _, w := range ws {
		if err := w.Validate(); err != nil {
			return s, err
		}
		if w.DType != w0.DType || w.N != w0.N || w.K != w0.K || w.GroupSize != w0.GroupSize {
			return s, fmt.Errorf("ascend: experts: %s does not match %s", w.Name, w0.Name)
		}
	}
	if w0.N >= 65536 || w0.K >= 65536 {
		return s, fmt.Errorf("ascend: experts: %s is %d×%d; GroupedMatmulV4 needs last dims < 65536", w0.Name, w0.N, w0.K)
	}
	var raw []byte
	switch w0.DType {
	case backend.I8, backend.I4:
		s.dt = dtI8
		if w0.DType == backend.I4 {
			s.dt = dtI32
		}
		if g := w0.GroupSize; g > 0 && g < w0.K {
			if w0.DType == backend.I8 {
				return s, fmt.Errorf("ascend: experts: A16W8 grouped matmul supports per-channel scales only (%s has group size %d)", w0.Name, g)
			}
			if w0.K%g != 0 {
				return s, fmt.Errorf("ascend: experts: group size %d must divide K=%d", g, w0.K)
			}
			s.groups = w0.K / g
		}
		var sc []uint16
		for _, w := range ws {
			raw = append(raw, w.Q...)
			for _, v := range w.Scale {
				sc = append(sc, backend.ToBF16(v))
			}
		}
		buf, err := b.w.newBuf(2 * len(sc))
		if err != nil {
			return s, err
		}
		s.scale = buf
		if err := b.w.upload(buf.ptr, unsafe.Pointer(&sc[0]), 2*len(sc)); err != nil {
			return s, err
		}
	default: // dense: transpose each (N, K) to (K, N) bf16
		s.dt = dtBF16
		h := make([]uint16, 0, len(ws)*w0.N*w0.K)
		for _, w := range ws {
			for k := 0; k < w.K; k++ {
				for n := 0; n < w.N; n++ {
					h = append(h, backend.ToBF16(w.At(n, k)))
				}
			}
		}
		raw = unsafe.Slice((*byte)(unsafe.Pointer(&h[0])), 2*len(h))
	}
	buf, err := b.w.newBuf(len(raw))
	if err != nil {
		return s, err
	}
	s.data = buf
	return s, b.w.upload(buf.ptr, unsafe.Pointer(&raw[0]), len(raw))
}

// LoadExperts stacks the routed experts [first, first+len(w1)) of this rank: w1 and w3
// (I × D each, fused as gate‖up, gate first as aclnnSwiGlu wants) and w2 (D × I).
func (b *Backend) LoadExperts(first int, w1, w3, w2 []*backend.HostWeight) (*Experts, error) {
	if len(w1) == 0 || len(w1) != len(w3) || len(w1) != len(w2) {
		return nil, fmt.Errorf("ascend: experts: %d w1, %d w3, %d w2", len(w1), len(w3), len(w2))
	}
	gu := make([]*backend.HostWeight, len(w1))
	for i := range w1 {
		var err error
		if gu[i], err = backend.ConcatRows(w1[i].Name+"‖w3", w1[i], w3[i]); err != nil {
			return nil, err
		}
	}
	ex := &Experts{First: first, Count: len(w1)}
	err := b.do(func() error {
		var err error
		if ex.gateUp, err = b.stackWeights(gu); err != nil {
			return err
		}
		if ex.down, err = b.stackWeights(w2); err != nil {
			return err
		}
		return b.w.sync()
	})
	if err != nil {
		return nil, err
	}
	if ex.gateUp.k != ex.down.n || ex.gateUp.n != 2*ex.down.k {
		return nil, fmt.Errorf("ascend: experts: w1/w3 are %d×%d but w2 is %d×%d", ex.gateUp.n/2, ex.gateUp.k, ex.down.n, ex.down.k)
	}
	return ex, nil
}

// listDescs creates a one-tensor aclTensorList (the list owns the tensor).
func (d *descs) list(v view) C.uintptr_t {
	if d.err != nil {
		return 0
	}
	t := d.t(v)
	d.tensors = d.tensors[:len(d.tensors)-1] // owned by the list from here on
	h := C.dsg_tensorList(d.a.p, &t, 1)
	if h == 0 {
		d.err = d.a.check("aclCreateTensorList", -1)
		return 0
	}
	d.lists = append(d.lists, h)
	return h
}

// FusedMoE computes the routed-expert part of a MoE layer for this rank's experts on
// the device: out[i] = Σ_q w[i,q] · Expert_{idx[i,q]}(x[i]) over the slots whose expert is
// local (others contribute 0). idx and w are M × topK (from MoEGate); numExperts is the
// model's routed expert count. The calls: aclnnCast, aclnnMoeInitRoutingV3 (scatter row
// index, all experts, so the local rows are one contiguous block), aclnnGroupedMatmulV4
// (gate‖up) → aclnnSwiGlu → aclnnGroupedMatmulV4 (down) into a zeroed buffer,
// aclnnMoeTokenUnpermute, aclnnCast. It needs bf16 precision.
func (b *Backend) FusedMoE(out, x backend.Tensor, idx []int32, w []float32, topK, numExperts int, ex *Experts) error {
	ts, err := b.tensors("fused moe", out, x)
	if err != nil {
		return err
	}
	m, d := x.Rows(), x.Cols()
	if b.matDT != dtBF16 {
		return fmt.Errorf("fused moe: needs bf16 precision")
	}
	if topK <= 0 || len(idx) != m*topK || len(w) != m*topK {
		return fmt.Errorf("fused moe: %d ids and %d weights for %d rows × top-%d", len(idx), len(w), m, topK)
	}
	if d != ex.gateUp.k || out.Rows() != m || out.Cols() != d {
		return fmt.Errorf("fused moe: x %d×%d, out %d×%d, experts of dim %d", m, d, out.Rows(), out.Cols(), ex.gateUp.k)
	}
	if ex.First < 0 || ex.First+ex.Count > numExperts {
		return fmt.Errorf("fused moe: experts [%d,%d) outside %d", ex.First, ex.First+ex.Count, numExperts)
	}
	counts := make([]int64, ex.Count)
	before, local := 0, 0
	for _, e := range idx {
		switch {
		case e < 0 || int(e) >= numExperts:
			return fmt.Errorf("fused moe: expert id %d outside [0,%d)", e, numExperts)
		case int(e) < ex.First:
			before++
		case int(e) < ex.First+ex.Count:
			counts[int(e)-ex.First]++
			local++
		}
	}
	if m == 0 {
		return nil
	}
	probs := make([]uint16, len(w))
	for i, v := range w {
		probs[i] = backend.ToBF16(v)
	}
	o, xt := ts[0], ts[1]
	mk := m * topK
	inter := ex.down.k
	return b.do(func() error {
		xb, err := b.tmp(m, d, dtBF16)
		if err != nil {
			return err
		}
		if err := b.cast(xt.mat(), xb); err != nil {
			return err
		}
		ei, err := b.uploadTmp(unsafe.Pointer(&idx[0]), mk, dtI32)
		if err != nil {
			return err
		}
		ei.dims, ei.strides = []int64{int64(m), int64(topK)}, []int64{int64(topK), 1}
		xe, err := b.tmp(mk, d, dtBF16)
		if err != nil {
			return err
		}
		rowIdx, err := b.tmp(1, mk, dtI32)
		if err != nil {
			return err
		}
		rowIdx.dims, rowIdx.strides = []int64{int64(mk)}, []int64{1}
		cnt, err := b.tmp(1, numExperts, dtI64)
		if err != nil {
			return err
		}
		cnt.dims, cnt.strides = []int64{int64(numExperts)}, []int64{1}
		rowIdxType := C.int64_t(1) // scatter: rowIdx[slot] = expanded row, what MoeTokenUnpermute reads
		if b.gatherRowIdx {
			rowIdxType = 0
		}
		err = b.op("aclnnMoeInitRoutingV3", C.F_aclnnMoeInitRoutingV3, func(dd *descs, ws *C.uint64_t, exe *C.uintptr_t) C.int {
			return C.dsg_initRouting(dd.a.p, dd.t(xb), dd.t(ei), C.int64_t(numExperts), 0, rowIdxType, dd.t(xe), dd.t(rowIdx), dd.t(cnt), ws, exe)
		})
		if err != nil {
			return err
		}
		y, err := b.tmp(mk, d, dtBF16)
		if err != nil {
			return err
		}
		if err := b.w.memset0(y.base, 2*mk*d); err != nil {
			return err
		}
		if local > 0 {
			gl, err := b.uploadTmp(unsafe.Pointer(&counts[0]), ex.Count, dtI64)
			if err != nil {
				return err
			}
			rows := func(v view, r0, n, cols int) view {
				v.dims = []int64{int64(n), int64(cols)}
				v.off += int64(r0 * cols)
				return v
			}
			h, err := b.tmp(local, 2*inter, dtBF16)
			if err != nil {
				return err
			}
			if err := b.gmm(rows(xe, before, local, d), &ex.gateUp, gl, h); err != nil {
				return err
			}
			a, err := b.tmp(local, inter, dtBF16)
			if err != nil {
				return err
			}
			err = b.op("aclnnSwiGlu", C.F_aclnnSwiGlu, func(dd *descs, ws *C.uint64_t, exe *C.uintptr_t) C.int {
				return C.dsg_swiglu(dd.a.p, dd.t(h), -1, dd.t(a), ws, exe)
			})
			if err != nil {
				return err
			}
			if err := b.gmm(a, &ex.down, gl, rows(y, before, local, d)); err != nil {
				return err
			}
		}
		pv, err := b.uploadTmp(unsafe.Pointer(&probs[0]), mk, dtBF16)
		if err != nil {
			return err
		}
		pv.dims, pv.strides = []int64{int64(m), int64(topK)}, []int64{int64(topK), 1}
		ob, err := b.tmp(m, d, dtBF16)
		if err != nil {
			return err
		}
		err = b.op("aclnnMoeTokenUnpermute", C.F_aclnnMoeTokenUnpermute, func(dd *descs, ws *C.uint64_t, exe *C.uintptr_t) C.int {
			return C.dsg_unpermute(dd.a.p, dd.t(y), dd.t(rowIdx), dd.t(pv), dd.t(ob), ws, exe)
		})
		if err != nil {
			return err
		}
		return b.cast(ob, o.mat())
	})
}

// gmm enqueues aclnnGroupedMatmulV4 (split M, groupList of counts) for one stack.
func (b *Backend) gmm(x view, s *stack, groupList, out view) error {
	sv, hasScale := s.scales()
	return b.op("aclnnGroupedMatmulV4", C.F_aclnnGroupedMatmulV4, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		var sl C.uintptr_t
		if hasScale {
			sl = d.list(sv)
		}
		return C.dsg_gmm(d.a.p, d.list(x), d.list(s.weight()), sl, d.t(groupList), d.list(out), ws, ex)
	})
}
