package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// quantRow is dsg_quant_act for one row over [0, K) in Go: per block of B, the
// float32 scale amax/127 and q = rint(x·(127/amax)) clamped to ±127.
func quantRow(x []float32, B int) (q []int32, s []float32) {
	q = make([]int32, len(x))
	for b0 := 0; b0 < len(x); b0 += B {
		b1 := min(b0+B, len(x))
		var amax float32
		for _, v := range x[b0:b1] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		var inv float32
		if amax > 0 {
			inv = 127 / amax
		}
		for k := b0; k < b1; k++ {
			p := x[k] * inv
			q[k] = int32(max(-127, min(127, math.RoundToEven(float64(p)))))
		}
		s = append(s, amax/127)
	}
	return q, s
}

// wq returns the int4 value and scale of weight element (n, k).
func wq(hw *backend.HostWeight, n, k int) (int32, float32) {
	g := hw.GroupSize
	if g == 0 {
		g = hw.K
	}
	s := hw.Scale[(k/g)*hw.N+n]
	if s == 0 {
		return 0, 0
	}
	return int32(math.Round(float64(hw.At(n, k)) / float64(s))), s
}

// TestQuantizedActivations checks the int8-activation int4 kernel two ways, on odd
// shapes, every group layout it takes, both sides of the k split and several thread
// counts:
//   - against the arithmetic it documents (fast.h), evaluated here in float64 from
//     exact integer dot products: equal up to float32 rounding of the block sums;
//   - against the float reference: the difference is bounded by the activations'
//     rounding, Σ_k (s_block/2)·|w_nk|, plus float32 rounding.
//
// A batched row must also equal the row alone, bit for bit.
func TestQuantizedActivations(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("the int8-activation kernel needs AVX2; this CPU runs the float kernels (Options.QuantizeActivations is ignored)")
	}
	r := rand.New(rand.NewPCG(61, 62))
	cases := []struct{ n, k, g int }{
		{136, 45, 0}, {264, 100, 32}, {8, 129, 128}, {1096, 75, 64}, {72, 1030, 128}, {16, 1153, 0}, {200, 2048, 128},
	}
	for _, th := range []int{1, 2, 3} {
		g, err := NewGroup(1, Options{Threads: th, QuantizeActivations: true})
		if err != nil {
			t.Fatal(err)
		}
		cb := g[0].(*Backend)
		for _, tc := range cases {
			for _, m := range []int{1, 3, decodeRows, decodeRows + 1, 13} {
				t.Run(fmt.Sprintf("t%d-n%d-k%d-g%d-m%d", th, tc.n, tc.k, tc.g, m), func(t *testing.T) {
					checkQuantizedActivations(t, cb, randWeight(r, backend.I4, tc.n, tc.k, tc.g), m, r)
				})
			}
		}
	}
}

// checkQuantizedActivations runs Linear with cb (QuantizeActivations on) on m guarded
// random rows and checks every element against the documented arithmetic and against
// the float reference (see TestQuantizedActivations), and each row alone against the
// batch.
func checkQuantizedActivations(t *testing.T, cb *Backend, hw *backend.HostWeight, m int, r *rand.Rand) {
	t.Helper()
	ref := backend.NewReference(0, backend.NewComm(1))
	n, k := hw.N, hw.K
	B := actBlock(hw)
	if B == 0 {
		t.Fatalf("group %d: no activation block", hw.GroupSize)
	}
	w, err := cb.LoadWeight(hw)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := guarded(m, k, r, true)
	y, yp := guarded(m, n, r, false)
	if err := cb.Linear(y, x, w); err != nil {
		t.Fatal(err)
	}
	checkGuard(t, yp, m, n)
	got := read(t, cb, y)
	want, _ := backend.NewHostTensor(m, n)
	if err := ref.Linear(want, x, hostRef(hw)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < m; i++ {
		q, s := quantRow(x.Row(i), B)
		for c := 0; c < n; c++ {
			var model, mag, qerr, fmag float64
			for b0 := 0; b0 < k; b0 += B {
				var dot int64
				var ws float32
				for kk := b0; kk < min(b0+B, k); kk++ {
					qw, sw := wq(hw, c, kk)
					dot += int64(q[kk]) * int64(qw)
					ws = sw
					qerr += float64(s[b0/B]) / 2 * math.Abs(float64(hw.At(c, kk)))
					fmag += math.Abs(float64(x.Row(i)[kk]) * float64(hw.At(c, kk)))
				}
				term := float64(dot) * float64(ws) * float64(s[b0/B])
				model += term
				mag += math.Abs(term)
			}
			v := float64(got[i*n+c])
			if d := math.Abs(v - model); d > 2e-6*mag+1e-30 {
				t.Fatalf("row %d col %d: %v, the documented arithmetic gives %v (|Σ terms| %g)", i, c, v, model, mag)
			}
			if d := math.Abs(v - float64(want.Data[i*n+c])); d > 1.001*qerr+4e-6*fmag {
				t.Fatalf("row %d col %d: %v, float reference %v: off by %g, activation rounding bounds it by %g", i, c, v, want.Data[i*n+c], d, qerr)
			}
		}
		xi, _ := backend.SliceHost(x, i, 1, 0, k)
		yi, _ := backend.NewHostTensor(1, n)
		if err := cb.Linear(yi, xi, w); err != nil {
			t.Fatal(err)
		}
		for j, v := range yi.Row(0) {
			if v != got[i*n+j] {
				t.Fatalf("row %d col %d: alone %v, in a batch of %d %v", i, j, v, m, got[i*n+j])
			}
		}
	}
}

// FuzzQuantizedActivations draws a shape, a group size the kernel takes, a row count and
// a seed, and runs checkQuantizedActivations.
func FuzzQuantizedActivations(f *testing.F) {
	f.Add(uint64(1), uint8(1), uint16(136), uint16(45), uint8(0))
	f.Add(uint64(2), uint8(6), uint16(64), uint16(1030), uint8(2))
	f.Fuzz(func(t *testing.T, seed uint64, m uint8, n, k uint16, g uint8) {
		if detectISA() < isaAVX2 {
			t.Skip("the int8-activation kernel needs AVX2")
		}
		M, N, K := int(m%9)+1, (int(n%300)+8)/8*8, int(k%1200)+1
		G := []int{0, 32, 64, 128}[int(g)%4]
		grp, err := NewGroup(1, Options{Threads: 2, QuantizeActivations: true})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(seed, 91))
		checkQuantizedActivations(t, grp[0].(*Backend), randWeight(r, backend.I4, N, K, G), M, r)
	})
}

// TestQuantizedActivationsAvailability: with the ISA left to detection, the option
// is accepted exactly where the kernel exists and refused with the reason elsewhere
// (arm64, !cgo builds), never silently ignored.
func TestQuantizedActivationsAvailability(t *testing.T) {
	_, err := NewGroup(1, Options{QuantizeActivations: true})
	if QuantizeActivationsAvailable() != (err == nil) {
		t.Fatalf("kernel available %v, NewGroup error %v", QuantizeActivationsAvailable(), err)
	}
	if err != nil && !strings.Contains(err.Error(), "need the avx2 kernels") {
		t.Fatalf("unclear refusal: %v", err)
	}
}

// TestQuantizedActivationsScope: int8 weights, groups the kernel cannot take and the
// generic kernel set keep the float arithmetic with the option on (bit-identical to the
// option off).
func TestQuantizedActivationsScope(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	for _, isa := range isas() {
		on, err := NewGroup(1, Options{Threads: 2, ISA: isa, QuantizeActivations: true})
		if err != nil {
			t.Fatal(err)
		}
		off := isaGroup(t, isa, 2)
		for _, tc := range []struct {
			d       backend.DType
			n, k, g int
		}{{backend.I8, 72, 130, 64}, {backend.I4, 64, 130, 16}, {backend.BF16, 9, 40, 0}} {
			if tc.d == backend.I4 && isa == "avx2" {
				// The kernel takes groups that are multiples of 32 only.
				if b := actBlock(&backend.HostWeight{DType: backend.I4, K: tc.k, GroupSize: tc.g}); b != 0 {
					t.Fatalf("group %d got block %d", tc.g, b)
				}
			}
			hw := randWeight(r, tc.d, tc.n, tc.k, tc.g)
			x, _ := guarded(3, tc.k, r, true)
			var outs [2][]float32
			for i, b := range []*Backend{on[0].(*Backend), off} {
				w, _ := b.LoadWeight(hw)
				y, _ := backend.NewHostTensor(3, tc.n)
				if err := b.Linear(y, x, w); err != nil {
					t.Fatal(err)
				}
				outs[i] = y.Data
			}
			for j := range outs[0] {
				if outs[0][j] != outs[1][j] {
					t.Fatalf("%s %v g%d: option changed element %d: %v vs %v", isa, tc.d, tc.g, j, outs[0][j], outs[1][j])
				}
			}
		}
	}
}

// TestQuantizedActivationsNaN: a NaN or an infinity in a row reaches that row's outputs
// (as through the float kernels) and leaves the other rows alone.
func TestQuantizedActivationsNaN(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("the int8-activation kernel needs AVX2")
	}
	r := rand.New(rand.NewPCG(81, 82))
	g, err := NewGroup(1, Options{Threads: 2, QuantizeActivations: true})
	if err != nil {
		t.Fatal(err)
	}
	cb := g[0].(*Backend)
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		hw := randWeight(r, backend.I4, 64, 200, 0)
		w, _ := cb.LoadWeight(hw)
		x, _ := guarded(3, 200, r, true)
		x.Row(1)[137] = bad
		y, _ := backend.NewHostTensor(3, 64)
		if err := cb.Linear(y, x, w); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 64; j++ {
			if v := y.Row(1)[j]; !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
				t.Fatalf("%v in row 1: output %d is %v", bad, j, v)
			}
			for _, i := range []int{0, 2} {
				if v := y.Row(i)[j]; math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%v in row 1 reached row %d", bad, i)
				}
			}
		}
	}
}
