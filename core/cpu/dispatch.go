package cpu

import (
	"fmt"

	"github.com/dsgate/dsgate/core/backend"
)

// parseISA maps Options.ISA to a level: "" picks the best the CPU supports; "generic"
// forces the portable kernels (kernels.c, the backend's first version, kept as the
// fallback and as the "before" of the benchmarks); "avx2" forces the AVX2+FMA kernels
// (an error when the CPU lacks them).
func parseISA(s string) (int, error) {
	best := detectISA()
	switch s {
	case "":
		return best, nil
	case "generic":
		return isaGeneric, nil
	case "avx2":
		if best < isaAVX2 {
			return 0, fmt.Errorf("cpu: ISA avx2 requested but this CPU (or a !cgo build) lacks AVX2+FMA")
		}
		return isaAVX2, nil
	}
	return 0, fmt.Errorf("cpu: unknown ISA %q (want \"\", generic or avx2)", s)
}

// isaName names a level.
func isaName(l int) string {
	switch {
	case l >= isaAVX512:
		return "avx512 (avx2 kernels)"
	case l >= isaAVX2:
		return "avx2"
	}
	return "generic"
}

// ISA names the kernel set in use: "generic", "avx2", or "avx512 (avx2 kernels)" when
// the CPU has AVX-512 (the AVX2+FMA kernels run there too).
func (b *Backend) ISA() string { return isaName(b.isa) }

// linear computes out[:, 0:n1-n0] = x[:, xc0:xc0+K] · W[n0:n1]ᵀ for a host weight with
// the fastest kernel available at b's ISA level (dense weights: the AVX2 kernel there;
// quantized host weights: the portable kernels, which is where the generic level keeps
// them). The choice depends only on the weight and the level, never on x's row count,
// so results stay row-independent.
func (b *Backend) linear(o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) {
	if fastKernel(b.isa, o, x, w, n0, n1, xc0) {
		return
	}
	linearKernel(o, x, w, n0, n1, xc0)
}

// qheads computes HeadLinear's heads [h0, h1) of n columns each for a packed weight: in
// one pass over their panels when heads are whole panels (each panel reads its head's
// slice of x), else one call per head.
func (b *Backend) qheads(o, x *backend.HostTensor, w *qweight, h0, h1, n int) {
	if x.R == 0 {
		return
	}
	ov, _ := backend.SliceHost(o, 0, o.R, h0*n, (h1-h0)*n)
	if n%panelCols == 0 && qHeadPass(ov, x, w, b.actq, h0*n, h1*n, n) {
		return
	}
	for h := h0; h < h1; h++ {
		ov, _ := backend.SliceHost(o, 0, o.R, h*n, n)
		qKernel(ov, x, w, 0, w.h.K, h*n, (h+1)*n, h*w.h.K, b.actq)
	}
}

// kParts is the number of contiguous ranges a quantized weight's input dimension is
// split into on the fast kernels: 2 when K ≥ 1024, else 1. It depends on the weight
// only (never on the row count or the thread count), and the ranges' results are
// summed in range order, so results stay row-independent and equal for any Threads.
// Splitting k gives two threads work on weights of few panels.
func kParts(w *backend.HostWeight) int {
	if (w.DType == backend.I8 || w.DType == backend.I4) && w.K >= 1024 {
		return 2
	}
	return 1
}

// actBlock is the activation block size of the int8-activation kernel for w, or 0
// when it does not apply: int4 weights whose scale groups are whole blocks (a multiple
// of 64 or 32 inputs) or span all of K (per channel). Blocks of 64 divide the k ranges
// of kParts, so results stay independent of the thread count.
func actBlock(w *backend.HostWeight) int {
	if w.DType != backend.I4 {
		return 0
	}
	switch g := w.GroupSize; {
	case g == 0 || g >= w.K || g%64 == 0:
		return 64
	case g%32 == 0:
		return 32
	}
	return 0
}

// kBound returns the first input row of range p of P (multiples of 64).
func kBound(k, p, parts int) int {
	if p == parts {
		return k
	}
	return (p * k / parts) &^ 63
}

// product is one o = x · Wᵀ of a matmul call, over all of W's output channels.
type product struct {
	o, x *backend.HostTensor
	w    *backend.HostWeight
	qw   *qweight // nil: w keeps the host layout
}

// matmul computes its products over the backend's threads. Packed weights are cut by k
// range (kParts) times panels, and the pieces of all the products go into one pool
// that threads take from as they finish, so a GroupedLinear's experts cost one wait,
// not one per expert, and no thread idles at the end of each expert. Host weights are
// split by columns, one product at a time.
func (b *Backend) matmul(ps ...product) {
	type piece struct{ prod, part, lo, hi int }
	var pieces []piece
	parts := make([][]*backend.HostTensor, len(ps))
	kernels := make([]func(o *backend.HostTensor, k0, k1, n0, n1 int), len(ps))
	for i, pr := range ps {
		if pr.qw == nil {
			b.parallel(pr.w.N, unit(pr.w), func(lo, hi int) {
				ov, _ := backend.SliceHost(pr.o, 0, pr.o.R, lo, hi-lo)
				b.linear(ov, pr.x, pr.w, lo, hi, 0)
			})
			continue
		}
		if pr.x.R == 0 {
			continue
		}
		P := kParts(pr.w)
		units := (pr.w.N + panelCols - 1) / panelCols
		chunks := min(units, max(1, b.threads*chunksPerThread/P))
		parts[i] = make([]*backend.HostTensor, P)
		parts[i][0] = pr.o
		for p := 1; p < P; p++ {
			parts[i][p], _ = backend.NewHostTensor(pr.o.R, pr.o.C)
		}
		kernels[i] = qKernelFor(pr.x, pr.qw, 0, 0, pr.w.K, b.actq)
		for p := 0; p < P; p++ {
			for c := 0; c < chunks; c++ {
				if lo, hi := c*units/chunks*panelCols, min((c+1)*units/chunks*panelCols, pr.w.N); lo < hi {
					pieces = append(pieces, piece{i, p, lo, hi})
				}
			}
		}
	}
	b.spread(len(pieces), func(j int) {
		pc := pieces[j]
		pr, P := ps[pc.prod], len(parts[pc.prod])
		ov, _ := backend.SliceHost(parts[pc.prod][pc.part], 0, pr.o.R, pc.lo, pc.hi-pc.lo)
		kernels[pc.prod](ov, kBound(pr.w.K, pc.part, P), kBound(pr.w.K, pc.part+1, P), pc.lo, pc.hi)
	})
	for i, pr := range ps {
		for p := 1; p < len(parts[i]); p++ {
			for r := 0; r < pr.o.R; r++ {
				or, pp := pr.o.Row(r), parts[i][p].Row(r)
				for j := range or {
					or[j] += pp[j]
				}
			}
		}
	}
}

// mla runs absorbed attention for one sequence over heads [h0, h1): the AVX2 kernel
// (chunks of heads per pass over blocks of cached rows) at that level, else the
// portable one.
func (b *Backend) mla(o, qa, qp *backend.HostTensor, s backend.AttnSeq, h0, h1, lc, r int, cache []float32, width int, slots []int32, scale float32) {
	T := s.Pos + s.N
	if b.isa >= isaAVX2 && lc > 0 && r > 0 {
		mlaFast(o, qa, qp, s, h0, h1, lc, r, cache, width, slots, scale)
		return
	}
	mlaKernel(o, qa, qp, s, h0, h1, lc, r, cache, width, slots, scale, make([]float32, T))
}
