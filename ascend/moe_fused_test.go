//go:build cgo

package ascend

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// TestFusedMoEMatchesReference checks the device-side MoE path (MoeInitRoutingV3 →
// GroupedMatmulV4 → SwiGlu → GroupedMatmulV4 → MoeTokenUnpermute in bf16 precision;
// per-expert Matmul in place of GroupedMatmulV4 in f32 precision) against the reference
// composition of GatherRows, GroupedLinear, SwiGLU and MoECombine.
func TestFusedMoEMatchesReference(t *testing.T) {
	const d, inter, nExp, first, count, m, topK = 64, 32, 8, 2, 4, 5, 3
	bs := map[string]*Backend{"bf16": rankOf(t, newGroupT(t, 1, "bf16")[0]), "f32": rankOf(t, newGroupT(t, 1, "f32")[0])}
	ref := backend.NewReference(0, backend.NewComm(1))
	for _, tc := range []struct {
		precision string
		d         backend.DType
		group     int
		tol       float64
	}{
		{"bf16", backend.I4, 0, 3e-2}, {"bf16", backend.I4, 32, 3e-2}, {"bf16", backend.I8, 0, 3e-2}, {"bf16", backend.BF16, 0, 3e-2},
		{"f32", backend.I4, 32, 1e-5}, {"f32", backend.I8, 0, 1e-5}, {"f32", backend.F32, 0, 1e-5},
	} {
		b := bs[tc.precision]
		t.Run(fmt.Sprintf("%s-%v-g%d", tc.precision, tc.d, tc.group), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(tc.group)))
			mk := func(n, k int) *backend.HostWeight {
				if tc.d != backend.I8 && tc.d != backend.I4 {
					return randWeight(r, tc.d, n, k, 0)
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
			w13 := make([]*backend.HostWeight, count)
			for i := range w13 {
				w13[i], _ = backend.ConcatRows("w13", w1[i], w3[i])
			}
			ex, err := b.LoadExperts(first, w13, w2)
			if err != nil || ex == nil {
				t.Fatalf("LoadExperts: %v, %v", ex, err)
			}
			calls := b.RoutedMoECalls()
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
			if err := b.RoutedMoE(out, tensor(t, b, m, d, xv), idx, wts, topK, nExp, ex); err != nil {
				t.Fatal(err)
			}
			got := read(t, b, out)
			if n := b.RoutedMoECalls() - calls; n != 1 {
				t.Fatalf("RoutedMoECalls counted %d calls, want 1", n)
			}

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
			if e := relErr(got, want); e > tc.tol {
				t.Fatalf("fused MoE rel err %.3g", e)
			} else {
				t.Logf("rel err %.3g", e)
			}
			// The index-order flag matters: the gather-form row index scrambles the combine.
			b.gatherRowIdx = true
			defer func() { b.gatherRowIdx = false }()
			if err := b.RoutedMoE(out, tensor(t, b, m, d, xv), idx, wts, topK, nExp, ex); err != nil {
				t.Fatal(err)
			}
			if e := relErr(read(t, b, out), want); e < 0.3 {
				t.Fatalf("gather-form row index gave rel err %.3g; the emulator must honour rowIdxType", e)
			}
		})
	}
}

// TestLoadExpertsDeclinesAndRejects: LoadExperts returns (nil, nil) — the model's cue to
// keep the per-expert path — for HostMoE and for weights GroupedMatmulV4 does not take,
// and errors for inconsistent experts; RoutedMoE rejects bad ids and foreign experts.
func TestLoadExpertsDeclinesAndRejects(t *testing.T) {
	const d, inter = 64, 32
	r := rand.New(rand.NewPCG(21, 22))
	mk := func(dt backend.DType, g int) ([]*backend.HostWeight, []*backend.HostWeight) {
		w13, _ := quantWeight(r, dt, 2*inter, d, g)
		w2, _ := quantWeight(r, dt, d, inter, g)
		return []*backend.HostWeight{w13}, []*backend.HostWeight{w2}
	}
	host, err := NewGroup(1, Options{CANNHome: emuHome, HostMoE: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host[0].Close() })
	bf, f32 := rankOf(t, newGroupT(t, 1, "bf16")[0]), rankOf(t, newGroupT(t, 1, "f32")[0])
	i8g13, i8g2 := mk(backend.I8, 32)
	i4w13, i4w2 := mk(backend.I4, 0)
	for _, tc := range []struct {
		name     string
		b        *Backend
		w13, w2  []*backend.HostWeight
		stacked  bool
		errorMsg string
	}{
		{"HostMoE", rankOf(t, host[0]), i4w13, i4w2, false, ""},
		{"bf16 int8 per-group", bf, i8g13, i8g2, false, ""},
		{"f32 int8 per-group", f32, i8g13, i8g2, true, ""},
		{"bf16 int4", bf, i4w13, i4w2, true, ""},
		{"w13 and w2 swapped", bf, i4w2, i4w13, false, "w1‖w3 is"},
		{"count mismatch", bf, append(i4w13, i4w13...), i4w2, false, "2 w13 and 1 w2"},
		{"mixed dtypes", bf, append(i4w13, i8g13[0]), append(i4w2, i4w2...), false, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex, err := tc.b.LoadExperts(0, tc.w13, tc.w2)
			if tc.errorMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errorMsg) {
					t.Fatalf("got %v, %v; want an error containing %q", ex, err, tc.errorMsg)
				}
				return
			}
			if err != nil || (ex != nil) != tc.stacked {
				t.Fatalf("got %v, %v; want stacked=%v and no error", ex, err, tc.stacked)
			}
		})
	}
	ex, err := bf.LoadExperts(1, i4w13, i4w2)
	if err != nil || ex == nil {
		t.Fatal(ex, err)
	}
	x, out := tensor(t, bf, 2, d, randF32(r, 2*d)), tensor(t, bf, 2, d, nil)
	if err := bf.RoutedMoE(out, x, []int32{0, 4}, []float32{1, 1}, 1, 4, ex); err == nil || !strings.Contains(err.Error(), "outside [0,4)") {
		t.Errorf("expert id 4 of 4: got %v", err)
	}
	fx, fo := tensor(t, f32, 2, d, nil), tensor(t, f32, 2, d, nil)
	if err := f32.RoutedMoE(fo, fx, []int32{0, 1}, []float32{1, 1}, 1, 4, ex); err == nil || !strings.Contains(err.Error(), "not loaded by this rank") {
		t.Errorf("experts of another rank: got %v", err)
	}
	if err := bf.RoutedMoE(out, x, []int32{1, 2}, []float32{1, 1}, 1, 4, ex); err != nil {
		t.Errorf("valid call: %v", err)
	}
}
