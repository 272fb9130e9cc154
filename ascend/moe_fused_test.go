//go:build cgo

package ascend

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// TestFusedMoEMatchesReference checks the device-side MoE path (MoeInitRoutingV3 →
// GroupedMatmulV4 → SwiGlu → GroupedMatmulV4 → MoeTokenUnpermute) against the
// reference composition of GatherRows, GroupedLinear, SwiGLU and MoECombine.
func TestFusedMoEMatchesReference(t *testing.T) {
	const d, inter, nExp, first, count, m, topK = 64, 32, 8, 2, 4, 5, 3
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	ref := backend.NewReference(0, backend.NewComm(1))
	for _, tc := range []struct {
		d     backend.DType
		group int
	}{{backend.I4, 0}, {backend.I4, 32}, {backend.I8, 0}, {backend.BF16, 0}} {
		t.Run(fmt.Sprintf("%v-g%d", tc.d, tc.group), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(tc.group)))
			mk := func(n, k int) *backend.HostWeight {
				if tc.d == backend.BF16 {
					return randWeight(r, backend.BF16, n, k, 0)
				}
				g := tc.group
				if g >= k {
					g = 0
				}
				hw, _ := quantWeight(r, tc.d, n, k, g)
				return hw
			}
			var w1, w3, w2 []*backend.HostWeight
			for range count {
				w1, w3, w2 = append(w1, mk(inter, d)), append(w3, mk(inter, d)), append(w2, mk(d, inter))
			}
			ex, err := b.LoadExperts(first, w1, w3, w2)
			if err != nil {
				t.Fatal(err)
			}
			xv := randF32(r, m*d)
			idx := make([]int32, m*topK)
			wts := make([]float32, m*topK)
			for i := 0; i < m; i++ {
				perm := r.Perm(nExp)
				for q := 0; q < topK; q++ {
					idx[i*topK+q] = int32(perm[q])
					wts[i*topK+q] = float32(r.Float64())
				}
			}
			out := tensor(t, b, m, d, nil)
			if err := b.FusedMoE(out, tensor(t, b, m, d, xv), idx, wts, topK, nExp, ex); err != nil {
				t.Fatal(err)
			}
			got := read(t, b, out)

			// Reference: rows sorted by local expert, then the three reference ops.
			var rows, tok []int32
			var rw []float32
			counts := make([]int, count)
			for e := first; e < first+count; e++ {
				for j, id := range idx {
					if int(id) == e {
						rows, tok, rw = append(rows, int32(j/topK)), append(tok, int32(j/topK)), append(rw, wts[j])
						counts[e-first]++
					}
				}
			}
			rx, _ := ref.NewTensor(m, d)
			_ = ref.Write(rx, xv)
			xs, _ := ref.NewTensor(len(rows), d)
			if err := ref.GatherRows(xs, rx, rows); err != nil {
				t.Fatal(err)
			}
			var gus, downs []backend.Weight
			for i := range w1 {
				gu, _ := backend.ConcatRows("gu", w1[i], w3[i])
				a, _ := ref.LoadWeight(gu)
				c, _ := ref.LoadWeight(w2[i])
				gus, downs = append(gus, a), append(downs, c)
			}
			h, _ := ref.NewTensor(len(rows), 2*inter)
			a, _ := ref.NewTensor(len(rows), inter)
			y, _ := ref.NewTensor(len(rows), d)
			o, _ := ref.NewTensor(m, d)
			for _, err := range []error{ref.GroupedLinear(h, xs, gus, counts), ref.SwiGLU(a, h), ref.GroupedLinear(y, a, downs, counts), ref.MoECombine(o, y, tok, rw)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			want := o.(*backend.HostTensor).Data
			if e := relErr(got, want); e > 3e-2 {
				t.Fatalf("fused MoE rel err %.3g", e)
			} else {
				t.Logf("rel err %.3g", e)
			}
			// The index-order flag matters: the gather-form row index scrambles the combine.
			b.gatherRowIdx = true
			defer func() { b.gatherRowIdx = false }()
			if err := b.FusedMoE(out, tensor(t, b, m, d, xv), idx, wts, topK, nExp, ex); err != nil {
				t.Fatal(err)
			}
			if e := relErr(read(t, b, out), want); e < 0.3 {
				t.Fatalf("gather-form row index gave rel err %.3g; the emulator must honour rowIdxType", e)
			}
		})
	}
}
