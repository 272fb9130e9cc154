// Package cpu is dsgate's CPU backend: it implements core/backend with cgo C kernels
// (fast.c: AVX2+FMA, chosen at run time; kernels.c: the portable set, with a pure-Go
// twin when cgo is off; KERNELS.md explains both) for the ops that carry the work —
// Linear, HeadLinear, GroupedLinear and absorbed MLA attention — and reuses the
// reference for the cheap ones. Ranks are goroutines sharing memory: a group of W
// backends shares one backend.Comm, and each rank holds only its shard (spec §3.3).
//
// Kernels cut their output columns (or attention heads; quantized weights also into a
// fixed number of k ranges) into pieces that Threads goroutines take as they finish;
// every output element is computed by the same operations in the same order whatever
// the split and whatever the number of rows, so results are deterministic and
// row-independent. Dense weights keep the host layout of backend.HostWeight (F32/BF16
// [N,K]); on the AVX2 kernels, quantized ones (I8/I4, transposed [K,N] as in
// convert/FORMATS.md) are repacked at load into panels of 64 output columns whose K
// rows are contiguous (panels.go), which the kernels read as one sequential stream per
// panel.
package cpu

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/dsgate/dsgate/core/backend"
)

// Options configures a CPU group.
type Options struct {
	// Threads is the number of goroutines each rank uses inside one op; 0 means
	// max(1, GOMAXPROCS / world size).
	Threads int
	// ISA selects the kernel set: "" (best for this CPU), "generic" or "avx2"
	// (see Backend.ISA and BENCHMARKS.md).
	ISA string
	// QuantizeActivations runs int4 weights on int8 activations (per row, per block
	// of 64 inputs, absmax scaling) with integer dot products, as llama.cpp does:
	// about 2× faster at decode, with a relative error of a few 1e-3 per matmul
	// that the int4 weights' own error (about 1e-1) dwarfs. Off by default: the CPU
	// backend is the oracle other backends are checked against.
	QuantizeActivations bool
}

// Backend is one rank of a CPU group. Its ops must be called from one goroutine at a
// time (the rank's goroutine).
type Backend struct {
	*backend.Reference
	threads int
	isa     int
	actq    bool
}

var _ backend.Backend = (*Backend)(nil)

// NewGroup returns the W rank backends of a CPU group sharing one communicator.
func NewGroup(worldSize int, opt Options) ([]backend.Backend, error) {
	if worldSize <= 0 {
		return nil, fmt.Errorf("cpu: bad world size %d", worldSize)
	}
	th := opt.Threads
	if th <= 0 {
		th = max(1, runtime.GOMAXPROCS(0)/worldSize)
	}
	isa, err := parseISA(opt.ISA)
	if err != nil {
		return nil, err
	}
	if opt.QuantizeActivations && opt.ISA == "" && !QuantizeActivationsAvailable() {
		return nil, fmt.Errorf("cpu: quantized activations need the avx2 kernels (x86-64 with AVX2+FMA and cgo); this CPU runs the generic ones")
	}
	c := backend.NewComm(worldSize)
	out := make([]backend.Backend, worldSize)
	for r := range out {
		out[r] = &Backend{Reference: backend.NewReference(r, c), threads: th, isa: isa, actq: opt.QuantizeActivations}
	}
	return out, nil
}

// QuantizeActivationsAvailable reports whether this CPU has the int8-activation kernel
// (Options.QuantizeActivations); without it, NewGroup refuses the option unless the
// generic kernels were asked for by name (which always keep the float arithmetic).
func QuantizeActivationsAvailable() bool { return detectISA() >= isaAVX2 }

// Factory returns a backend.Factory for CPU groups with these options.
func Factory(opt Options) backend.Factory {
	return func(w int) ([]backend.Backend, error) { return NewGroup(w, opt) }
}

// LoadWeight validates hw and, on the AVX2 kernels, repacks quantized weights into
// panels (KERNELS.md "Layout: panels, packed at load"); the handle then holds no
// reference to hw's bytes. Other weights, and every weight on the generic kernels, keep
// hw as it is.
func (b *Backend) LoadWeight(hw *backend.HostWeight) (backend.Weight, error) {
	if b.isa < isaAVX2 || hw == nil || !hw.Quantized() {
		return b.Reference.LoadWeight(hw)
	}
	if err := hw.Validate(); err != nil {
		return nil, err
	}
	return packQuant(hw)
}

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// Threads returns the goroutines used per op.
func (b *Backend) Threads() int { return b.threads }

// parallel splits [0, n) in units of unit into contiguous ranges and runs fn on each,
// over the backend's threads (the last range absorbs the remainder). Each element's
// arithmetic never depends on the range it falls in.
func (b *Backend) parallel(n, unit int, fn func(lo, hi int)) {
	units := (n + unit - 1) / unit
	parts := min(b.threads*chunksPerThread, units)
	b.spread(parts, func(p int) {
		lo, hi := p*units/parts*unit, min((p+1)*units/parts*unit, n)
		if lo < hi {
			fn(lo, hi)
		}
	})
}

// chunksPerThread is how many pieces an op is cut into per thread: threads take the
// next piece when they finish one, so a thread that the machine slows down (other
// processes, a busier memory channel) holds the others up by at most one piece.
const chunksPerThread = 4

// spread runs fn(0) … fn(items-1) on up to b.threads goroutines (the caller's among
// them), each taking the next item when done with one.
func (b *Backend) spread(items int, fn func(i int)) {
	workers := min(b.threads, items)
	if workers <= 1 {
		for i := 0; i < items; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1)) - 1; i < items; i = int(next.Add(1)) - 1 {
			fn(i)
		}
	}
	var wg sync.WaitGroup
	for t := 1; t < workers; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

func unit(w *backend.HostWeight) int {
	if w.DType == backend.I4 || w.DType == backend.I8 {
		return 64
	}
	return 16
}

// SwiGLU computes silu(gate) ⊙ up; with the AVX2 kernels in C, whose e^x is a vector
// polynomial within 2 ulp (fast.h), instead of the reference's float64 math.Exp per
// element, which cost 2–4 % of a batch-8 decode step (BENCHMARKS.md).
func (b *Backend) SwiGLU(out, x backend.Tensor) error {
	if b.isa < isaAVX2 {
		return b.Reference.SwiGLU(out, x)
	}
	o, err := backend.AsHost("swiglu", out)
	if err != nil {
		return err
	}
	xh, err := backend.AsHost("swiglu", x)
	if err != nil {
		return err
	}
	if err := backend.CheckSwiGLU(o, xh); err != nil {
		return err
	}
	swigluFast(o, xh)
	return nil
}

// Linear computes out = x · Wᵀ with the C kernels.
func (b *Backend) Linear(out, x backend.Tensor, w backend.Weight) error {
	o, xh, wh, qw, err := args("linear", out, x, w)
	if err != nil {
		return err
	}
	if err := backend.CheckLinear("linear", o, xh, wh); err != nil {
		return err
	}
	b.matmul(product{o, xh, wh, qw})
	return nil
}

// HeadLinear computes one Linear per head with the C kernels.
func (b *Backend) HeadLinear(out, x backend.Tensor, w backend.Weight, heads int) error {
	o, xh, wh, qw, err := args("head linear", out, x, w)
	if err != nil {
		return err
	}
	if err := backend.CheckHeadLinear(o, xh, wh, heads); err != nil {
		return err
	}
	n := wh.N / heads
	if qw == nil && wh.DType == backend.I4 && n%8 != 0 {
		return b.Reference.HeadLinear(out, x, w, heads)
	}
	b.parallel(heads, 1, func(lo, hi int) {
		if qw != nil {
			b.qheads(o, xh, qw, lo, hi, n)
			return
		}
		for h := lo; h < hi; h++ {
			ov, _ := backend.SliceHost(o, 0, o.R, h*n, n)
			b.linear(ov, xh, wh, h*n, (h+1)*n, h*wh.K)
		}
	})
	return nil
}

// GroupedLinear applies one weight per row group with the C kernels.
func (b *Backend) GroupedLinear(out, x backend.Tensor, ws []backend.Weight, counts []int) error {
	o, err := backend.AsHost("grouped linear", out)
	if err != nil {
		return err
	}
	xh, err := backend.AsHost("grouped linear", x)
	if err != nil {
		return err
	}
	hws := make([]*backend.HostWeight, len(ws))
	qws := make([]*qweight, len(ws))
	for g, w := range ws {
		if hws[g], qws[g], err = weightArgs("grouped linear", w); err != nil {
			return err
		}
	}
	if err := backend.CheckGroupedShapes(o, xh, ws, counts); err != nil {
		return err
	}
	var ps []product
	row := 0
	for g, c := range counts {
		if c == 0 {
			continue
		}
		xs, _ := backend.SliceHost(xh, row, c, 0, xh.C)
		os, _ := backend.SliceHost(o, row, c, 0, o.C)
		ps = append(ps, product{os, xs, hws[g], qws[g]})
		row += c
	}
	b.matmul(ps...)
	return nil
}

// MLAAttention runs absorbed attention with the C kernel, heads split over threads.
func (b *Backend) MLAAttention(out, qAbs, qPe backend.Tensor, c backend.Cache, layer int, heads int, seqs []backend.AttnSeq, scale float32) error {
	o, err := backend.AsHost("mla attention", out)
	if err != nil {
		return err
	}
	qa, err := backend.AsHost("mla attention", qAbs)
	if err != nil {
		return err
	}
	qp, err := backend.AsHost("mla attention", qPe)
	if err != nil {
		return err
	}
	hc, ok := c.(*backend.HostCache)
	if !ok || hc == nil {
		return fmt.Errorf("mla attention: cache %T is not a host cache", c)
	}
	lc, r, err := backend.CheckMLA(o, qa, qp, hc, layer, heads, seqs)
	if err != nil {
		return err
	}
	layerData := hc.Data[layer*hc.NBlocks*hc.BSize*hc.Wid : (layer+1)*hc.NBlocks*hc.BSize*hc.Wid]
	for _, s := range seqs {
		if s.N == 0 {
			continue
		}
		T := s.Pos + s.N
		slots := make([]int32, T)
		for t := range slots {
			slots[t] = int32(backend.Slot(s.Blocks, hc.BSize, t))
		}
		b.parallel(heads, 1, func(lo, hi int) {
			b.mla(o, qa, qp, s, lo, hi, lc, r, layerData, hc.Wid, slots, scale)
		})
	}
	return nil
}

// args resolves an op's output, input and weight (see weightArgs).
func args(op string, out, x backend.Tensor, w backend.Weight) (o, xh *backend.HostTensor, wh *backend.HostWeight, qw *qweight, err error) {
	if o, err = backend.AsHost(op, out); err != nil {
		return
	}
	if xh, err = backend.AsHost(op, x); err != nil {
		return
	}
	wh, qw, err = weightArgs(op, w)
	return
}
