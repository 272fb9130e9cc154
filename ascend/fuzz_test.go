//go:build cgo

package ascend

import (
	"math/rand/v2"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// FuzzLinear draws a weight type, shape, group size and input, and checks the emulated
// Linear (WQBMM / Matmul with casts) against the reference in both precisions.
func FuzzLinear(f *testing.F) {
	f.Add(uint64(1), uint8(0), uint8(3), uint8(5), uint8(40))
	f.Add(uint64(2), uint8(1), uint8(1), uint8(2), uint8(70))
	f.Add(uint64(3), uint8(2), uint8(2), uint8(4), uint8(129))
	f.Add(uint64(4), uint8(3), uint8(7), uint8(1), uint8(33))
	groups := newGroupT(f, 1, "bf16")
	groupsF := newGroupT(f, 1, "f32")
	ref := backend.NewReference(0, backend.NewComm(1))
	f.Fuzz(func(t *testing.T, seed uint64, kind, m8, n8, k8 uint8) {
		r := rand.New(rand.NewPCG(seed, 99))
		dts := []backend.DType{backend.F32, backend.BF16, backend.I8, backend.I4}
		d := dts[int(kind)%4]
		m, n, k := 1+int(m8)%6, 8*(1+int(n8)%6), 1+int(k8)
		g := 0
		if d == backend.I4 && k > 32 && r.IntN(2) == 0 {
			g = 32 * (1 + r.IntN(k/32))
		}
		hw := randWeight(r, d, n, k, g)
		xv := randF32(r, m*k)
		rw, _ := ref.LoadWeight(hw)
		rx, _ := ref.NewTensor(m, k)
		_ = ref.Write(rx, xv)
		ro, _ := ref.NewTensor(m, n)
		if err := ref.Linear(ro, rx, rw); err != nil {
			t.Fatal(err)
		}
		want := ro.(*backend.HostTensor).Data
		for _, c := range []struct {
			b   backend.Backend
			tol float64
		}{{groups[0], 2.5e-2}, {groupsF[0], 1e-5}} {
			w, err := c.b.LoadWeight(hw)
			if err != nil {
				t.Fatal(err)
			}
			o := tensor(t, c.b, m, n, nil)
			if err := c.b.Linear(o, tensor(t, c.b, m, k, xv), w); err != nil {
				t.Fatal(err)
			}
			if e := relErr(read(t, c.b, o), want); e > c.tol {
				t.Fatalf("%v %dx%dx%d g%d: rel err %.3g > %.3g", d, m, n, k, g, e, c.tol)
			}
		}
	})
}

// FuzzMoEGate checks aclnnMoeGatingTopK against the reference routing for random
// expert counts, groups and top-k.
func FuzzMoEGate(f *testing.F) {
	f.Add(uint64(1), uint8(32), uint8(4), uint8(2), uint8(4))
	f.Add(uint64(2), uint8(16), uint8(1), uint8(1), uint8(3))
	f.Add(uint64(3), uint8(64), uint8(8), uint8(4), uint8(8))
	b := newGroupT(f, 1, "bf16")[0]
	ref := backend.NewReference(0, backend.NewComm(1))
	f.Fuzz(func(t *testing.T, seed uint64, e8, g8, tg8, k8 uint8) {
		r := rand.New(rand.NewPCG(seed, 5))
		groups := 1 << (int(g8) % 4)
		e := groups * (1 + int(e8)%16)
		topG := 1 + int(tg8)%groups
		k := 1 + int(k8)%(topG*(e/groups))
		p := backend.GateParams{TopK: k, Groups: groups, TopGroups: topG, Score: backend.Sigmoid, GroupScore: backend.GroupTop2Sum, Normalize: true, RouteScale: 2.5}
		lv := rnd(r, 3*e, 2)
		bias := backend.Vector("bias", rnd(r, e, 0.1))
		run := func(be backend.Backend) ([]int32, []float32) {
			bw, err := be.LoadWeight(bias)
			if err != nil {
				t.Fatal(err)
			}
			l := tensor(t, be, 3, e, lv)
			idx, w, err := be.MoEGate(l, bw, p)
			if err != nil {
				t.Fatal(err)
			}
			return idx, w
		}
		gi, gw := run(b)
		ri, rw := run(ref)
		for i := range ri {
			if gi[i] != ri[i] {
				t.Fatalf("E=%d groups=%d top=%d k=%d: ids %v, want %v", e, groups, topG, k, gi, ri)
			}
		}
		if e := relErr(gw, rw); e > 1e-5 {
			t.Fatalf("weights rel err %.3g", e)
		}
	})
}
