//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// Experts holds the routed experts [first, first+count) of one rank, stacked for the
// device-side MoE (RoutedMoE): gate‖up as (E, D, 2I) and down as (E, I, D). In bf16
// precision they are INT8, INT32 (packed int4) or BF16 for aclnnGroupedMatmulV4, with
// bfloat16 antiquant scales (E, N) per channel or (E, G, N) per group; in f32 precision
// they are FLOAT32 (quantized weights dequantized at load), like every f32 weight.
type Experts struct {
	b            *Backend
	first, count int
	gateUp, down stack
}

var _ backend.Experts = (*Experts)(nil)

// First returns the global id of the first expert.
func (e *Experts) First() int { return e.first }

// Count returns the number of experts.
func (e *Experts) Count() int { return e.count }

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

// expert is the (K, N) view of expert z of a dense stack.
func (s *stack) expert(z int) view {
	return view{s.data.ptr, int64(s.e * s.k * s.n), s.dt, []int64{int64(s.k), int64(s.n)}, []int64{int64(s.n), 1}, int64(z * s.k * s.n)}
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

// errNoGMM marks expert weights that aclnnGroupedMatmulV4 does not take; LoadExperts
// then declines them and the model keeps its per-expert path.
var errNoGMM = errors.New("not supported by aclnnGroupedMatmulV4")

// checkStack validates E host weights of equal shape N × K for one stack.
func (b *Backend) checkStack(ws []*backend.HostWeight) error {
	w0 := ws[0]
	for _, w := range ws {
		if w == nil {
			return fmt.Errorf("ascend: experts: missing weight")
		}
		if err := w.Validate(); err != nil {
			return err
		}
		if w.DType != w0.DType || w.N != w0.N || w.K != w0.K || w.GroupSize != w0.GroupSize {
			return fmt.Errorf("ascend: experts: %s does not match %s", w.Name, w0.Name)
		}
	}
	if b.matDT == dtF32 {
		return nil // per-expert aclnnMatmul on the float32 stack: no GMM limits
	}
	if w0.N >= 65536 || w0.K >= 65536 {
		return fmt.Errorf("ascend: experts: %s is %d×%d; GroupedMatmulV4 needs last dims < 65536: %w", w0.Name, w0.N, w0.K, errNoGMM)
	}
	if g := w0.GroupSize; w0.Quantized() && g > 0 && g < w0.K {
		if w0.DType == backend.I8 {
			return fmt.Errorf("ascend: experts: A16W8 grouped matmul takes per-channel scales only (%s has group size %d): %w", w0.Name, g, errNoGMM)
		}
		if w0.K%g != 0 {
			return fmt.Errorf("ascend: experts: group size %d must divide K=%d: %w", g, w0.K, errNoGMM)
		}
	}
	return nil
}

// stackWeights uploads E checked host weights of equal shape N × K as one (E, K, N) stack.
func (b *Backend) stackWeights(ws []*backend.HostWeight) (stack, error) {
	w0 := ws[0]
	s := stack{e: len(ws), k: w0.K, n: w0.N}
	var raw []byte
	switch {
	case w0.Quantized() && b.matDT == dtBF16:
		s.dt = dtI8
		if w0.DType == backend.I4 {
			s.dt = dtI32
		}
		if g := w0.GroupSize; g > 0 && g < w0.K {
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
	case b.matDT == dtF32: // float32 precision: every weight dense float32, (N, K) → (K, N)
		s.dt = dtF32
		f := make([]float32, 0, len(ws)*w0.N*w0.K)
		for _, w := range ws {
			for k := 0; k < w.K; k++ {
				for n := 0; n < w.N; n++ {
					f = append(f, w.At(n, k))
				}
			}
		}
		raw = unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
	default: // dense in bf16 precision: transpose each (N, K) to (K, N) bf16
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

// LoadExperts implements backend.RoutedExperts: it stacks the routed experts
// [first, first+len(w13)) of this rank, w13 (2I × D each, w1 rows first as aclnnSwiGlu
// wants) as gate‖up and w2 (D × I) as down. It returns (nil, nil) — the model then loads
// the experts one by one and composes the MoE from per-expert ops — when
// Options.HostMoE is set, or in bf16 precision for weights aclnnGroupedMatmulV4 does not
// take (int8 with group scales, int4 groups that do not divide K, dims ≥ 65536).
func (b *Backend) LoadExperts(first int, w13, w2 []*backend.HostWeight) (backend.Experts, error) {
	ex, err := b.loadExperts(first, w13, w2)
	if errors.Is(err, errNoGMM) {
		return nil, nil
	}
	if err != nil || ex == nil {
		return nil, err
	}
	return ex, nil
}

func (b *Backend) loadExperts(first int, w13, w2 []*backend.HostWeight) (*Experts, error) {
	if b.hostMoE {
		return nil, nil
	}
	if len(w13) == 0 || len(w13) != len(w2) || first < 0 {
		return nil, fmt.Errorf("ascend: experts: first %d, %d w13 and %d w2", first, len(w13), len(w2))
	}
	if err := b.checkStack(w13); err != nil {
		return nil, err
	}
	if err := b.checkStack(w2); err != nil {
		return nil, err
	}
	if w13[0].N%2 != 0 || w13[0].K != w2[0].N || w13[0].N != 2*w2[0].K {
		return nil, fmt.Errorf("ascend: experts: w1‖w3 is %d×%d but w2 is %d×%d", w13[0].N, w13[0].K, w2[0].N, w2[0].K)
	}
	ex := &Experts{b: b, first: first, count: len(w13)}
	err := b.do(func() error {
		var err error
		if ex.gateUp, err = b.stackWeights(w13); err != nil {
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

// RoutedMoE implements backend.RoutedExperts: the routed-expert part of a MoE layer for
// this rank's experts, on the device: out[i] = Σ_q w[i,q] · Expert_{idx[i,q]}(x[i]) over
// the slots whose expert is local (others contribute 0). idx and w are M × topK (from
// MoEGate); numExperts is the model's routed expert count. The calls:
// aclnnMoeInitRoutingV3 over all experts with the scatter row index (rowIdxType 1), so
// that the rows of this rank's experts form one contiguous block whose offset the host
// knows from idx; the gate‖up matmul, aclnnSwiGlu and the down matmul on that block into
// a zeroed buffer; aclnnMoeTokenUnpermute with the routing weights (rows of other ranks'
// experts are zero). The matmuls are aclnnGroupedMatmulV4 (split M, groupList = counts)
// in bf16 precision, with aclnnCast around the whole op; in f32 precision they are one
// aclnnMatmul per local expert on the float32 stack (see README: GMM V4 takes FLOAT32 on
// A2, but the emulator implements BF16/FP16 x only).
func (b *Backend) RoutedMoE(out, x backend.Tensor, idx []int32, w []float32, topK, numExperts int, experts backend.Experts) error {
	ts, err := b.tensors("routed moe", out, x)
	if err != nil {
		return err
	}
	ex, ok := experts.(*Experts)
	if !ok || ex == nil || ex.b != b {
		return fmt.Errorf("routed moe: experts %T were not loaded by this rank", experts)
	}
	m, d := x.Rows(), x.Cols()
	if topK <= 0 || len(idx) != m*topK || len(w) != m*topK {
		return fmt.Errorf("routed moe: %d ids and %d weights for %d rows × top-%d", len(idx), len(w), m, topK)
	}
	if d != ex.gateUp.k || out.Rows() != m || out.Cols() != d {
		return fmt.Errorf("routed moe: x %d×%d, out %d×%d, experts of dim %d", m, d, out.Rows(), out.Cols(), ex.gateUp.k)
	}
	if ex.first+ex.count > numExperts {
		return fmt.Errorf("routed moe: experts [%d,%d) outside %d", ex.first, ex.first+ex.count, numExperts)
	}
	counts := make([]int64, ex.count)
	before, local := 0, 0
	for _, e := range idx {
		switch {
		case e < 0 || int(e) >= numExperts:
			return fmt.Errorf("routed moe: expert id %d outside [0,%d)", e, numExperts)
		case int(e) < ex.first:
			before++
		case int(e) < ex.first+ex.count:
			counts[int(e)-ex.first]++
			local++
		}
	}
	if m == 0 {
		return nil
	}
	dt := b.matDT
	var probs unsafe.Pointer
	if dt == dtBF16 {
		p := make([]uint16, len(w))
		for i, v := range w {
			p[i] = backend.ToBF16(v)
		}
		probs = unsafe.Pointer(&p[0])
	} else {
		probs = unsafe.Pointer(&w[0])
	}
	o, xt := ts[0], ts[1]
	mk := m * topK
	inter := ex.down.k
	err = b.do(func() error {
		xd := xt.mat()
		if dt != dtF32 {
			xb, err := b.tmp(m, d, dt)
			if err != nil {
				return err
			}
			if err := b.cast(xd, xb); err != nil {
				return err
			}
			xd = xb
		}
		ei, err := b.uploadTmp(unsafe.Pointer(&idx[0]), mk, dtI32)
		if err != nil {
			return err
		}
		ei.dims, ei.strides = []int64{int64(m), int64(topK)}, []int64{int64(topK), 1}
		xe, err := b.tmp(mk, d, dt)
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
			return C.dsg_initRouting(dd.a.p, dd.t(xd), dd.t(ei), C.int64_t(numExperts), 0, rowIdxType, dd.t(xe), dd.t(rowIdx), dd.t(cnt), ws, exe)
		})
		if err != nil {
			return err
		}
		y, err := b.tmp(mk, d, dt)
		if err != nil {
			return err
		}
		if err := b.w.memset0(y.base, dtSize(dt)*mk*d); err != nil {
			return err
		}
		if local > 0 {
			rows := func(v view, r0, n, cols int) view {
				v.dims = []int64{int64(n), int64(cols)}
				v.off += int64(r0 * cols)
				return v
			}
			h, err := b.tmp(local, 2*inter, dt)
			if err != nil {
				return err
			}
			if err := b.expertsMM(rows(xe, before, local, d), &ex.gateUp, counts, h); err != nil {
				return err
			}
			a, err := b.tmp(local, inter, dt)
			if err != nil {
				return err
			}
			err = b.op("aclnnSwiGlu", C.F_aclnnSwiGlu, func(dd *descs, ws *C.uint64_t, exe *C.uintptr_t) C.int {
				return C.dsg_swiglu(dd.a.p, dd.t(h), -1, dd.t(a), ws, exe)
			})
			if err != nil {
				return err
			}
			if err := b.expertsMM(a, &ex.down, counts, rows(y, before, local, d)); err != nil {
				return err
			}
		}
		pv, err := b.uploadTmp(probs, mk, dt)
		if err != nil {
			return err
		}
		pv.dims, pv.strides = []int64{int64(m), int64(topK)}, []int64{int64(topK), 1}
		od := o.mat()
		if dt != dtF32 {
			if od, err = b.tmp(m, d, dt); err != nil {
				return err
			}
		}
		err = b.op("aclnnMoeTokenUnpermute", C.F_aclnnMoeTokenUnpermute, func(dd *descs, ws *C.uint64_t, exe *C.uintptr_t) C.int {
			return C.dsg_unpermute(dd.a.p, dd.t(y), dd.t(rowIdx), dd.t(pv), dd.t(od), ws, exe)
		})
		if err != nil || dt == dtF32 {
			return err
		}
		return b.cast(od, o.mat())
	})
	if err == nil {
		b.routedMoE.Add(1)
	}
	return err
}

// RoutedMoECalls returns how many RoutedMoE calls this rank has run: a MoE layer on the
// model's path counts one per forward step when its experts are stacked.
func (b *Backend) RoutedMoECalls() int64 { return b.routedMoE.Load() }

// expertsMM multiplies the rows of x (grouped by expert: counts[z] rows for expert z, in
// order) by their expert's matrix of s into out: one aclnnGroupedMatmulV4 (split M,
// groupList = counts, groupListType 1) for BF16 / INT8 / INT4 stacks, or one aclnnMatmul
// per non-empty group for FLOAT32 stacks.
func (b *Backend) expertsMM(x view, s *stack, counts []int64, out view) error {
	if s.dt == dtF32 {
		row := int64(0)
		for z, c := range counts {
			if c == 0 {
				continue
			}
			xv, ov := x, out
			xv.dims, ov.dims = []int64{c, x.dims[1]}, []int64{c, out.dims[1]}
			xv.off += row * x.strides[0]
			ov.off += row * out.strides[0]
			if err := b.matmul(false, xv, s.expert(z), ov); err != nil {
				return err
			}
			row += c
		}
		return nil
	}
	gl, err := b.uploadTmp(unsafe.Pointer(&counts[0]), len(counts), dtI64)
	if err != nil {
		return err
	}
	sv, hasScale := s.scales()
	return b.op("aclnnGroupedMatmulV4", C.F_aclnnGroupedMatmulV4, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
		var sl C.uintptr_t
		if hasScale {
			sl = d.list(sv)
		}
		return C.dsg_gmm(d.a.p, d.list(x), d.list(s.weight()), sl, d.t(gl), d.list(out), ws, ex)
	})
}
