//go:build cgo

package cpu

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo LDFLAGS: -lm
#include "fast.h"
*/
import "C"

import (
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// Instruction-set levels (fast.h).
const (
	isaGeneric = int(C.DSG_ISA_GENERIC)
	isaAVX2    = int(C.DSG_ISA_AVX2)
	isaAVX512  = int(C.DSG_ISA_AVX512)
)

// decodeRows is the largest row count the streaming decode kernel handles; above it
// the GEMM kernel runs (same arithmetic per element).
const decodeRows = int(C.DSG_DECODE_ROWS)

// detectISA returns the best level the running CPU supports.
func detectISA() int { return int(C.dsg_detect_isa()) }

// fastKernel computes out[:, 0:n1-n0] = x[:, xc0:xc0+K] · W[n0:n1]ᵀ for a dense (F32 or
// BF16) weight with the AVX2 kernel and reports true, or reports false when it has no
// fast path for this weight (the caller then runs linearKernel). Shapes were checked
// by the caller.
func fastKernel(isa int, o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) bool {
	if isa < isaAVX2 {
		return false
	}
	var wp unsafe.Pointer
	bits := 32
	switch w.DType {
	case backend.F32:
		wp = unsafe.Pointer(&w.F32[0])
	case backend.BF16:
		wp, bits = unsafe.Pointer(&w.BF16[0]), 16
	default:
		return false
	}
	if x.R == 0 || n1 <= n0 {
		return true
	}
	C.dsg_dlinear_avx2(fptr(x.Data, x.Off+xc0), C.long(x.Stride), C.int(x.R), C.int(w.K), wp, C.int(bits),
		C.int(n0), C.int(n1), fptr(o.Data, o.Off), C.long(o.Stride))
	return true
}

// qKernel computes, over input rows [k0, k1) of a packed weight, out[:, 0:n1-n0] =
// x[:, xc0+k0:xc0+k1] · W[n0:n1, k0:k1]ᵀ (fast.h gives the exact arithmetic). x has at
// least one row. With actq, int4 weights whose groups fit (actBlock) run on int8
// activations and integer dot products.
func qKernel(o, x *backend.HostTensor, w *qweight, k0, k1, n0, n1, xc0 int, actq bool) {
	qKernelFor(x, w, xc0, k0, k1, actq)(o, k0, k1, n0, n1)
}

// qKernelFor returns qKernel for x and w as a function of the output block, for a
// caller that runs many blocks of one product: x's rows over [k0, k1) are quantized
// once (with actq) instead of once per block.
func qKernelFor(x *backend.HostTensor, w *qweight, xc0, k0, k1 int, actq bool) func(o *backend.HostTensor, k0, k1, n0, n1 int) {
	if B := actBlock(w.h); actq && B > 0 {
		a := quantActs(x, xc0, k0, k1, B)
		return func(o *backend.HostTensor, k0, k1, n0, n1 int) { q4a8(o, a, w, k0, k1, n0, n1, 0) }
	}
	return func(o *backend.HostTensor, k0, k1, n0, n1 int) { qlinear(o, x, w, k0, k1, n0, n1, xc0, 0) }
}

// qHeadPass computes output columns [n0, n1) (whole heads of nh columns, nh a multiple
// of 64) of HeadLinear with a packed weight in one pass over their panels, each panel
// reading its head's slice of x, and reports true. With actq it reports false (the
// caller then runs one head at a time) for int4 whose K is not a whole number of
// activation blocks: a head's blocks must not reach into the next head's slice. Same
// arithmetic per element as one call per head.
func qHeadPass(o, x *backend.HostTensor, w *qweight, actq bool, n0, n1, nh int) bool {
	B := actBlock(w.h)
	if actq && B > 0 && w.h.K%B != 0 {
		return false
	}
	if x.R == 0 || n1 <= n0 {
		return true
	}
	if actq && B > 0 {
		// Only these heads' slices of x are quantized: [n0/nh·K, n1/nh·K).
		q4a8(o, quantActs(x, 0, n0/nh*w.h.K, n1/nh*w.h.K, B), w, 0, w.h.K, n0, n1, nh)
	} else {
		qlinear(o, x, w, 0, w.h.K, n0, n1, 0, nh)
	}
	return true
}

// groupOf is w's scale group along K (K itself when per channel).
func groupOf(w *backend.HostWeight) int {
	if w.GroupSize == 0 {
		return w.K
	}
	return w.GroupSize
}

// qlinear runs dsg_qlinear_avx2 over input rows [k0, k1) and output columns [n0, n1)
// (fast.h; nh > 0: HeadLinear heads of nh columns, x's head slices K apart).
func qlinear(o, x *backend.HostTensor, w *qweight, k0, k1, n0, n1, xc0, nh int) {
	scratch := make([]float32, (4*x.R+1)*panelCols)
	C.dsg_qlinear_avx2(fptr(x.Data, x.Off+xc0), C.long(x.Stride), C.int(x.R), unsafe.Pointer(&w.panels[0]), C.int(w.bits()),
		C.int(w.h.K), (*C.float)(unsafe.Pointer(&w.scale[0])), C.long(w.ldsc), C.int(groupOf(w.h)), C.int(k0), C.int(k1),
		C.int(n0), C.int(n1), fptr(o.Data, o.Off), C.long(o.Stride), fptr(scratch, 0), C.int(nh), C.long(w.h.K))
}

// qacts is the rows of x quantized to int8 by dsg_quant_act over inputs [k0, k1) in
// blocks of B (fast.h "Quantized activations").
type qacts struct {
	xq      []int8
	xs      []float32
	xsum    []int32
	m, B    int
	ldq, nb int
}

// quantActs quantizes x[:, xc0+k0 : xc0+k1] (input k of a row at index k).
func quantActs(x *backend.HostTensor, xc0, k0, k1, B int) *qacts {
	a := &qacts{m: x.R, B: B, ldq: (k1 + 64) &^ 63, nb: (k1 + B - 1) / B} // ldq: room for the zero after an odd k1
	a.xq = make([]int8, a.m*a.ldq)
	a.xs = make([]float32, a.m*a.nb)
	a.xsum = make([]int32, a.m*a.nb)
	C.dsg_quant_act(fptr(x.Data, x.Off+xc0), C.long(x.Stride), C.int(a.m), C.int(k0), C.int(k1), C.int(B),
		(*C.int8_t)(unsafe.Pointer(&a.xq[0])), C.long(a.ldq), fptr(a.xs, 0), (*C.int32_t)(unsafe.Pointer(&a.xsum[0])), C.long(a.nb))
	return a
}

// q4a8 runs the int4 × int8 kernel over weight rows [k0, k1) (within each head when
// nh > 0: then a holds every head's slice of nh-column heads in [n0, n1), K apart) and
// output columns [n0, n1).
func q4a8(o *backend.HostTensor, a *qacts, w *qweight, k0, k1, n0, n1, nh int) {
	scratch := make([]int32, 3*a.m*panelCols)
	C.dsg_q4a8_avx2((*C.int8_t)(unsafe.Pointer(&a.xq[0])), C.long(a.ldq), fptr(a.xs, 0), (*C.int32_t)(unsafe.Pointer(&a.xsum[0])),
		C.long(a.nb), C.int(a.m), unsafe.Pointer(&w.panels[0]), C.int(w.h.K), (*C.float)(unsafe.Pointer(&w.scale[0])),
		C.long(w.ldsc), C.int(groupOf(w.h)), C.int(a.B), C.int(k0), C.int(k1), C.int(n0), C.int(n1), fptr(o.Data, o.Off),
		C.long(o.Stride), unsafe.Pointer(&scratch[0]), C.int(nh), C.long(w.h.K))
}

// mlaFast runs absorbed attention for one sequence and heads [h0, h1) with the AVX2
// kernel. lc and r are positive.
func mlaFast(o, qa, qp *backend.HostTensor, s backend.AttnSeq, h0, h1, lc, r int, cache []float32, width int, slots []int32, scale float32) {
	sc := make([]float32, min(h1-h0, int(C.DSG_MLA_HEADS))*(s.Pos+s.N))
	C.dsg_mla_avx2(fptr(qa.Data, qa.Off+s.Row*qa.Stride), C.long(qa.Stride), fptr(qp.Data, qp.Off+s.Row*qp.Stride), C.long(qp.Stride),
		C.int(s.N), C.int(s.Pos), C.int(h0), C.int(h1), C.int(lc), C.int(r), (*C.float)(unsafe.Pointer(&cache[0])), C.long(width),
		(*C.int32_t)(unsafe.Pointer(&slots[0])), C.float(scale), fptr(o.Data, o.Off+s.Row*o.Stride), C.long(o.Stride), fptr(sc, 0))
}

// swigluFast runs dsg_swiglu_avx2 over all rows of x (gate | up) into o.
func swigluFast(o, x *backend.HostTensor) {
	if x.R == 0 || x.C == 0 {
		return
	}
	C.dsg_swiglu_avx2(fptr(x.Data, x.Off), C.long(x.Stride), C.int(x.R), C.int(x.C/2), fptr(o.Data, o.Off), C.long(o.Stride))
}

// streamRead sums p (len a multiple of 64) with vector loads: the bandwidth probe.
func streamRead(p []float32, isa int) float32 {
	if len(p) == 0 {
		return 0
	}
	return float32(C.dsg_stream_read(fptr(p, 0), C.long(len(p)&^63), C.int(isa)))
}

// peakFMA runs iters rounds of 12 independent 8-wide FMA chains (96 FMAs a round).
func peakFMA(iters int, isa int) float32 { return float32(C.dsg_peak_fma(C.long(iters), C.int(isa))) }
