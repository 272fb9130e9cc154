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

// linear computes out[:, 0:n1-n0] = x[:, xc0:xc0+K] · W[n0:n1]ᵀ with the fastest kernel
// available at b's ISA level. The choice depends only on the weight and the level,
// never on x's row count, so results stay row-independent.
func (b *Backend) linear(o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) {
	if fastKernel(b.isa, o, x, w, n0, n1, xc0) {
		return
	}
	linearKernel(o, x, w, n0, n1, xc0)
}
