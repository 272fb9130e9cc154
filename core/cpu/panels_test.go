package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// TestPackQuant checks the panel layout byte by byte against the checkpoint layout:
// panel p, row k holds the (K, N) row k's bytes of columns [64p, 64p+64), zero past N;
// scales are padded to a multiple of 64 columns with zeros. The packed weight must not
// share memory with the host weight (LoadWeight's callers free it).
func TestPackQuant(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	for _, tc := range []struct {
		d       backend.DType
		n, k, g int
	}{{backend.I8, 64, 3, 0}, {backend.I8, 100, 7, 4}, {backend.I4, 200, 5, 2}, {backend.I4, 8, 9, 0}, {backend.I4, 256, 130, 64}} {
		hw := randWeight(r, tc.d, tc.n, tc.k, tc.g)
		w, err := packQuant(hw)
		if err != nil {
			t.Fatal(err)
		}
		pb, rowBytes := panelBytes(tc.d), len(hw.Q)/tc.k
		np := (tc.n + 63) / 64
		if len(w.panels) != np*tc.k*pb || w.ldsc != np*64 {
			t.Fatalf("%v %d×%d: %d panel bytes, ldsc %d", tc.d, tc.n, tc.k, len(w.panels), w.ldsc)
		}
		for p := 0; p < np; p++ {
			for k := 0; k < tc.k; k++ {
				for j := 0; j < pb; j++ {
					var want byte
					if c := p*pb + j; c < rowBytes {
						want = hw.Q[k*rowBytes+c]
					}
					if got := w.panels[(p*tc.k+k)*pb+j]; got != want {
						t.Fatalf("%v %d×%d: panel %d row %d byte %d = %d, want %d", tc.d, tc.n, tc.k, p, k, j, got, want)
					}
				}
			}
		}
		groups := len(hw.Scale) / tc.n
		if len(w.scale) != groups*w.ldsc {
			t.Fatalf("%d scales, want %d", len(w.scale), groups*w.ldsc)
		}
		for g := 0; g < groups; g++ {
			for c := 0; c < w.ldsc; c++ {
				var want float32
				if c < tc.n {
					want = hw.Scale[g*tc.n+c]
				}
				if got := w.scale[g*w.ldsc+c]; got != want {
					t.Fatalf("scale group %d column %d = %v, want %v", g, c, got, want)
				}
			}
		}
		hw.Q[0] ^= 0xFF
		hw.Scale[0] = -1
		if w.panels[0] == hw.Q[0] || w.scale[0] == -1 {
			t.Fatal("packed weight shares memory with the host weight")
		}
	}
	if _, err := packQuant(randWeight(r, backend.BF16, 4, 4, 0)); err == nil {
		t.Fatal("packed a bf16 weight")
	}
}

// TestPackedZeroRows: every op on a packed weight accepts an input of no rows,
// including the one-head-at-a-time HeadLinear path (heads that are not whole panels).
func TestPackedZeroRows(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("weights are packed on the avx2 kernels only")
	}
	r := rand.New(rand.NewPCG(63, 64))
	for _, actq := range []bool{false, true} {
		g, err := NewGroup(1, Options{Threads: 2, QuantizeActivations: actq})
		if err != nil {
			t.Fatal(err)
		}
		cb := g[0].(*Backend)
		for _, d := range []backend.DType{backend.I8, backend.I4} {
			w, err := cb.LoadWeight(randWeight(r, d, 3*40, 64, 0))
			if err != nil {
				t.Fatal(err)
			}
			x, _ := backend.NewHostTensor(0, 3*64)
			y, _ := backend.NewHostTensor(0, 3*40)
			if err := cb.HeadLinear(y, x, w, 3); err != nil {
				t.Fatal(err)
			}
			x1, _ := backend.NewHostTensor(0, 64)
			if err := cb.Linear(y, x1, w); err != nil {
				t.Fatal(err)
			}
			if err := cb.GroupedLinear(y, x1, []backend.Weight{w}, []int{0}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
