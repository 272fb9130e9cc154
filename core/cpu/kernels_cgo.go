//go:build cgo

package cpu

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo LDFLAGS: -lm
#include "kernels.h"
*/
import "C"

import (
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// cgoEnabled reports whether the C kernels are in use.
const cgoEnabled = true

func fptr(s []float32, off int) *C.float { return (*C.float)(unsafe.Pointer(&s[off])) }

// linearKernel computes out[:, 0:n1-n0] = x[:, xc0:xc0+K] · W[n0:n1]ᵀ. Shapes were
// checked by the caller; x has at least one row.
func linearKernel(o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) {
	if x.R == 0 || n1 <= n0 {
		return
	}
	xp := fptr(x.Data, x.Off+xc0)
	yp := fptr(o.Data, o.Off)
	switch w.DType {
	case backend.F32:
		C.dsg_linear_f32(xp, C.int(x.Stride), C.int(x.R), C.int(w.K), (*C.float)(unsafe.Pointer(&w.F32[0])),
			C.int(n0), C.int(n1), yp, C.int(o.Stride))
	case backend.BF16:
		C.dsg_linear_bf16(xp, C.int(x.Stride), C.int(x.R), C.int(w.K), (*C.uint16_t)(unsafe.Pointer(&w.BF16[0])),
			C.int(n0), C.int(n1), yp, C.int(o.Stride))
	default:
		bits, g := 8, w.GroupSize
		if w.DType == backend.I4 {
			bits = 4
		}
		if g == 0 {
			g = w.K
		}
		C.dsg_linear_q(xp, C.int(x.Stride), C.int(x.R), C.int(w.K), unsafe.Pointer(&w.Q[0]), C.int(bits), C.int(w.N),
			(*C.float)(unsafe.Pointer(&w.Scale[0])), C.int(g), C.int(n0), C.int(n1), yp, C.int(o.Stride))
	}
}

// mlaKernel runs absorbed attention for one sequence and heads [h0, h1).
func mlaKernel(o, qa, qp *backend.HostTensor, s backend.AttnSeq, h0, h1, lc, r int, cache []float32, width int, slots []int32, scale float32, scratch []float32) {
	if s.N == 0 {
		return
	}
	C.dsg_mla(fptr(qa.Data, qa.Off+s.Row*qa.Stride), C.int(qa.Stride), fptr(qp.Data, qp.Off+s.Row*qp.Stride), C.int(qp.Stride),
		C.int(s.N), C.int(s.Pos), C.int(h0), C.int(h1), C.int(lc), C.int(r), (*C.float)(unsafe.Pointer(&cache[0])), C.int(width),
		(*C.int32_t)(unsafe.Pointer(&slots[0])), C.float(scale), fptr(o.Data, o.Off+s.Row*o.Stride), C.int(o.Stride), fptr(scratch, 0))
}
