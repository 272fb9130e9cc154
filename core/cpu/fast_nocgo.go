//go:build !cgo

package cpu

import "github.com/dsgate/dsgate/core/backend"

// Instruction-set levels; without cgo only the pure-Go kernels exist.
const (
	isaGeneric = 0
	isaAVX2    = 2
	isaAVX512  = 3
)

const decodeRows = 8

func detectISA() int { return isaGeneric }

// fastKernel has no fast path without cgo.
func fastKernel(isa int, o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) bool {
	return false
}

// qKernel, qHeadPass and qKernelFor are never called without cgo: the ISA is generic there, so
// LoadWeight never packs a weight.
func qKernel(o, x *backend.HostTensor, w *qweight, k0, k1, n0, n1, xc0 int, actq bool) {
	panic("cpu: packed weight without cgo")
}

func qHeadPass(o, x *backend.HostTensor, w *qweight, actq bool, n0, n1, nh int) bool {
	panic("cpu: packed weight without cgo")
}

func qKernelFor(x *backend.HostTensor, w *qweight, xc0, k0, k1 int, actq bool) func(o *backend.HostTensor, k0, k1, n0, n1 int) {
	panic("cpu: packed weight without cgo")
}

// mlaFast is never called without cgo (the ISA is generic); it runs the portable kernel.
func mlaFast(o, qa, qp *backend.HostTensor, s backend.AttnSeq, h0, h1, lc, r int, cache []float32, width int, slots []int32, scale float32) {
	mlaKernel(o, qa, qp, s, h0, h1, lc, r, cache, width, slots, scale, make([]float32, s.Pos+s.N))
}

// swigluFast is never called without cgo (the ISA is generic).
func swigluFast(o, x *backend.HostTensor) {
	panic("cpu: avx2 swiglu without cgo")
}

// streamRead sums p in 8 lanes (the bandwidth probe's pure-Go twin).
func streamRead(p []float32, isa int) float32 {
	var s [8]float32
	for i := 0; i+8 <= len(p); i += 8 {
		for j := range s {
			s[j] += p[i+j]
		}
	}
	return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]
}

// peakFMA runs iters rounds of 96 multiply-adds.
func peakFMA(iters int, isa int) float32 {
	var a [96]float32
	for i := range a {
		a[i] = float32(i)
	}
	for it := 0; it < iters; it++ {
		for i := range a {
			a[i] = a[i]*0.999999 + 1e-7
		}
	}
	var s float32
	for _, v := range a {
		s += v
	}
	return s
}
