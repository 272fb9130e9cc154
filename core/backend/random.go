package backend

import (
	"fmt"
	"math/rand/v2"
)

// RandomQuant returns a random weight-only quantized weight of dtype d (I8 or I4) with
// logical shape n × k and group size g (0 = per-channel), whose scales are exact bf16
// values, and the integer values it packs ([k][n], the FORMATS.md layout). Backend
// checks (gateway ascend-check) and tests use it; the same r gives the same weight.
func RandomQuant(r *rand.Rand, d DType, n, k, g int) (*HostWeight, []int8) {
	lim := 127
	if d == I4 {
		lim = 7
	}
	vals := make([]int8, k*n)
	for i := range vals {
		vals[i] = int8(r.IntN(2*lim+2) - lim - 1)
	}
	rows := 1
	if g > 0 {
		rows = (k + g - 1) / g
	}
	sc := make([]float32, rows*n)
	for i := range sc {
		sc[i] = bf16(ToBF16(float32(r.Float64()*0.02 + 0.001)))
	}
	name := fmt.Sprintf("%v-%dx%d-g%d", d, n, k, g)
	return &HostWeight{Name: name, DType: d, N: n, K: k, Q: PackQuant(d, vals, k, n), Scale: sc, GroupSize: g}, vals
}
