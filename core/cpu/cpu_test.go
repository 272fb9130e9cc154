package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

const sentinel = float32(-12345.5)

// guarded returns a rows × cols view inside a larger tensor whose surroundings hold a
// sentinel value (STYLE.md point 10), plus the parent to check later.
func guarded(rows, cols int, r *rand.Rand, fill bool) (*backend.HostTensor, *backend.HostTensor) {
	pr, pc := rows+2, cols+5
	parent, _ := backend.NewHostTensor(pr, pc)
	for i := range parent.Data {
		parent.Data[i] = sentinel
	}
	v, _ := backend.SliceHost(parent, 1, rows, 2, cols)
	for i := 0; i < rows; i++ {
		row := v.Row(i)
		for j := range row {
			if fill {
				row[j] = float32(r.NormFloat64())
			} else {
				row[j] = 0
			}
		}
	}
	return v, parent
}

func checkGuard(t *testing.T, parent *backend.HostTensor, rows, cols int) {
	t.Helper()
	for i := 0; i < parent.R; i++ {
		for j := 0; j < parent.C; j++ {
			inside := i >= 1 && i < 1+rows && j >= 2 && j < 2+cols
			if !inside && parent.Data[i*parent.C+j] != sentinel {
				t.Fatalf("guard band overwritten at (%d,%d)", i, j)
			}
		}
	}
}

func randWeight(r *rand.Rand, d backend.DType, n, k, g int) *backend.HostWeight {
	w := &backend.HostWeight{Name: "w", DType: d, N: n, K: k, GroupSize: g}
	switch d {
	case backend.F32:
		w.F32 = make([]float32, n*k)
		for i := range w.F32 {
			w.F32[i] = float32(r.NormFloat64() * 0.1)
		}
	case backend.BF16:
		w.BF16 = make([]uint16, n*k)
		for i := range w.BF16 {
			w.BF16[i] = backend.ToBF16(float32(r.NormFloat64() * 0.1))
		}
	default:
		lim := 127
		if d == backend.I4 {
			lim = 7
		}
		vals := make([]int8, n*k)
		for i := range vals {
			vals[i] = int8(r.IntN(2*lim+2) - lim - 1)
		}
		w.Q = backend.PackQuant(d, vals, k, n)
		rows := 1
		if g > 0 {
			rows = (k + g - 1) / g
		}
		w.Scale = make([]float32, rows*n)
		for i := range w.Scale {
			w.Scale[i] = float32(r.Float64()*0.01 + 0.001)
		}
	}
	return w
}

func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i] - b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / math.Max(den, 1e-30))
}

func read(t *testing.T, b backend.Backend, x backend.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Rows()*x.Cols())
	if err := b.Read(x, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func group(t *testing.T, threads int) (*Backend, *backend.Reference) {
	t.Helper()
	g, err := NewGroup(1, Options{Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	return g[0].(*Backend), backend.NewReference(0, backend.NewComm(1))
}

// hostRef is hw's handle for the reference backend: the CPU backend's own handle may
// hold a repacked copy (panels.go) that the reference cannot read.
func hostRef(hw *backend.HostWeight) backend.Weight { return &backend.HostWeightRef{W: hw} }

func TestLinearVsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cb, ref := group(t, 3)
	for _, tc := range []struct {
		name    string
		d       backend.DType
		m, n, k int
		g       int
	}{
		{"f32", backend.F32, 5, 37, 53, 0},
		{"bf16", backend.BF16, 3, 129, 300, 0},
		{"i8-channel", backend.I8, 4, 72, 97, 0},
		{"i8-group", backend.I8, 2, 200, 130, 64},
		{"i4-channel", backend.I4, 3, 136, 45, 0},
		{"i4-group32", backend.I4, 1, 264, 100, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hw := randWeight(r, tc.d, tc.n, tc.k, tc.g)
			w, err := cb.LoadWeight(hw)
			if err != nil {
				t.Fatal(err)
			}
			x, xp := guarded(tc.m, tc.k, r, true)
			xBefore := append([]float32(nil), xp.Data...)
			y, yp := guarded(tc.m, tc.n, r, false)
			if err := cb.Linear(y, x, w); err != nil {
				t.Fatal(err)
			}
			checkGuard(t, yp, tc.m, tc.n)
			for i := range xBefore {
				if xp.Data[i] != xBefore[i] {
					t.Fatal("input modified")
				}
			}
			want, _ := backend.NewHostTensor(tc.m, tc.n)
			if err := ref.Linear(want, x, hostRef(hw)); err != nil {
				t.Fatal(err)
			}
			if e := relErr(read(t, cb, y), want.Data); e > 1e-5 {
				t.Fatalf("rel err %g", e)
			}
			// Row independence: each row alone gives bit-identical results.
			got := read(t, cb, y)
			for i := 0; i < tc.m; i++ {
				xi, _ := backend.SliceHost(x, i, 1, 0, tc.k)
				yi, _ := backend.NewHostTensor(1, tc.n)
				if err := cb.Linear(yi, xi, w); err != nil {
					t.Fatal(err)
				}
				for j := 0; j < tc.n; j++ {
					if yi.Data[j] != got[i*tc.n+j] {
						t.Fatalf("row %d col %d: alone %v, batched %v", i, j, yi.Data[j], got[i*tc.n+j])
					}
				}
			}
		})
	}
}

func TestHeadAndGroupedLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cb, ref := group(t, 2)
	for _, d := range []backend.DType{backend.F32, backend.BF16, backend.I8, backend.I4} {
		heads, n, k, m := 3, 16, 21, 4
		hw := randWeight(r, d, heads*n, k, 0)
		w, _ := cb.LoadWeight(hw)
		x, _ := guarded(m, heads*k, r, true)
		y, yp := guarded(m, heads*n, r, false)
		if err := cb.HeadLinear(y, x, w, heads); err != nil {
			t.Fatal(err)
		}
		checkGuard(t, yp, m, heads*n)
		want, _ := backend.NewHostTensor(m, heads*n)
		if err := ref.HeadLinear(want, x, hostRef(hw), heads); err != nil {
			t.Fatal(err)
		}
		if e := relErr(read(t, cb, y), want.Data); e > 1e-5 {
			t.Fatalf("%v head linear rel err %g", d, e)
		}
		ws, rws := []backend.Weight{}, []backend.Weight{}
		for i := 0; i < 3; i++ {
			hwi := randWeight(r, d, 24, 19, 0)
			wi, _ := cb.LoadWeight(hwi)
			ws, rws = append(ws, wi), append(rws, hostRef(hwi))
		}
		counts := []int{2, 0, 3}
		xg, _ := guarded(5, 19, r, true)
		yg, ygp := guarded(5, 24, r, false)
		if err := cb.GroupedLinear(yg, xg, ws, counts); err != nil {
			t.Fatal(err)
		}
		checkGuard(t, ygp, 5, 24)
		wantG, _ := backend.NewHostTensor(5, 24)
		if err := ref.GroupedLinear(wantG, xg, rws, counts); err != nil {
			t.Fatal(err)
		}
		if e := relErr(read(t, cb, yg), wantG.Data); e > 1e-5 {
			t.Fatalf("%v grouped rel err %g", d, e)
		}
	}
}

func TestMLAVsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	cb, _ := group(t, 2)
	c, qa, qp, out := checkMLA(t, cb, r, 19, 0.37, "threads 2")
	// Bad block table is an error, not a crash.
	bad := []backend.AttnSeq{{Row: 0, N: 1, Pos: 10, Blocks: []int32{1}}}
	if err := cb.MLAAttention(out, qa, qp, c, 1, 5, bad, 1); err == nil {
		t.Fatal("short block table accepted")
	}
}

func TestBadShapesAreErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	cb, _ := group(t, 1)
	w, _ := cb.LoadWeight(randWeight(r, backend.I4, 16, 8, 0))
	x, _ := cb.NewTensor(2, 9)
	y, _ := cb.NewTensor(2, 16)
	if err := cb.Linear(y, x, w); err == nil {
		t.Fatal("K mismatch accepted")
	}
	if _, err := cb.LoadWeight(&backend.HostWeight{Name: "b", DType: backend.I8, N: 4, K: 4, Q: make([]byte, 3)}); err == nil {
		t.Fatal("short weight accepted")
	}
}

func FuzzLinear(f *testing.F) {
	f.Add(uint64(1), uint8(1), uint8(3), uint8(17), uint8(20), uint8(0))
	f.Add(uint64(2), uint8(3), uint8(1), uint8(8), uint8(33), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, dt, m, n, k, g uint8) {
		d := backend.DType(dt%4 + 1)
		M, N, K := int(m%7)+1, int(n%40)+1, int(k%70)+1
		if d == backend.I4 {
			N = (N + 7) / 8 * 8
		}
		G := 0
		if d == backend.I8 || d == backend.I4 {
			G = []int{0, 32, 64}[int(g)%3]
		}
		r := rand.New(rand.NewPCG(seed, 99))
		cb, _ := group(t, 2)
		// checkLinear bounds the error by Σ|x·w|, not by the result: the corpus holds
		// a cancelling bf16 dot product whose relative error exceeded 1e-5.
		checkLinear(t, cb, randWeight(r, d, N, K, G), M, r)
	})
}
