package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// isas lists the kernel sets this machine can run (the generic set always).
func isas() []string {
	out := []string{"generic"}
	if detectISA() >= isaAVX2 {
		out = append(out, "avx2")
	}
	return out
}

func isaGroup(t testing.TB, isa string, threads int) *Backend {
	t.Helper()
	g, err := NewGroup(1, Options{Threads: threads, ISA: isa})
	if err != nil {
		t.Fatal(err)
	}
	return g[0].(*Backend)
}

// tolerance per weight dtype of backwardErr: float32 accumulation over K ≤ 300 terms
// (plus one scale multiply for quantized weights) vs the float64 reference.
func tolerance(d backend.DType) float64 {
	if d == backend.F32 || d == backend.BF16 {
		return 2e-6
	}
	return 4e-6
}

// backwardErr returns max |got − want| / Σ_k |x_k·W_nk| over the elements: the error
// relative to the size of the terms summed, which float32 accumulation bounds
// whatever cancellation the sum has.
func backwardErr(got, want []float32, x *backend.HostTensor, hw *backend.HostWeight) float64 {
	worst := 0.0
	for i := 0; i < x.R; i++ {
		xr := x.Row(i)
		for n := 0; n < hw.N; n++ {
			var mag float64
			for k, v := range xr {
				mag += math.Abs(float64(v) * float64(hw.At(n, k)))
			}
			d := math.Abs(float64(got[i*hw.N+n]) - float64(want[i*hw.N+n]))
			worst = math.Max(worst, d/math.Max(mag, 1e-30))
		}
	}
	return worst
}

// checkLinear runs Linear on a guarded M×K input for one weight and compares it with
// the reference; every row computed alone must be bit-identical to the batched row.
func checkLinear(t *testing.T, cb *Backend, hw *backend.HostWeight, m int, r *rand.Rand) {
	t.Helper()
	ref := backend.NewReference(0, backend.NewComm(1))
	w, err := cb.LoadWeight(hw)
	if err != nil {
		t.Fatal(err)
	}
	x, xp := guarded(m, hw.K, r, true)
	xBefore := append([]float32(nil), xp.Data...)
	y, yp := guarded(m, hw.N, r, false)
	if err := cb.Linear(y, x, w); err != nil {
		t.Fatal(err)
	}
	checkGuard(t, yp, m, hw.N)
	for i := range xBefore {
		if xp.Data[i] != xBefore[i] {
			t.Fatal("input modified")
		}
	}
	want, _ := backend.NewHostTensor(m, hw.N)
	if err := ref.Linear(want, x, hostRef(hw)); err != nil {
		t.Fatal(err)
	}
	got := read(t, cb, y)
	if e := backwardErr(got, want.Data, x, hw); e > tolerance(hw.DType) {
		t.Fatalf("error %g > %g (relative to sum |x·w|)", e, tolerance(hw.DType))
	}
	for i := 0; i < m; i++ {
		xi, _ := backend.SliceHost(x, i, 1, 0, hw.K)
		yi, yip := guarded(1, hw.N, r, false)
		if err := cb.Linear(yi, xi, w); err != nil {
			t.Fatal(err)
		}
		checkGuard(t, yip, 1, hw.N)
		for j, v := range yi.Row(0) {
			if v != got[i*hw.N+j] {
				t.Fatalf("row %d col %d: alone %v, in a batch of %d %v", i, j, v, m, got[i*hw.N+j])
			}
		}
	}
}

// TestFastLinear: every kernel set against the reference on odd sizes, row counts on
// both sides of the decode/GEMM switch, per-channel and per-group scales (with a
// partial last group), column tails and k tails.
func TestFastLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	cases := []struct {
		d    backend.DType
		n, k int
		g    int
	}{
		{backend.F32, 37, 53, 0},
		{backend.F32, 130, 7, 0},
		{backend.BF16, 129, 300, 0},
		{backend.BF16, 5, 17, 0},
		{backend.I8, 72, 97, 0},
		{backend.I8, 200, 130, 64},
		{backend.I8, 1, 33, 32},
		{backend.I8, 577, 70, 0},
		{backend.I4, 136, 45, 0},
		{backend.I4, 264, 100, 32},
		{backend.I4, 8, 129, 128},
		{backend.I4, 1096, 75, 64},
		{backend.I8, 70, 1100, 0},   // k split in two ranges (kParts)
		{backend.I4, 72, 1030, 128}, // k split with a partial last group
		{backend.I4, 16, 1153, 0},
	}
	for _, isa := range isas() {
		for _, th := range []int{1, 3} {
			cb := isaGroup(t, isa, th)
			for _, tc := range cases {
				for _, m := range []int{1, 3, decodeRows, decodeRows + 1, 13} {
					t.Run(fmt.Sprintf("%s-t%d-%v-n%d-k%d-g%d-m%d", isa, th, tc.d, tc.n, tc.k, tc.g, m), func(t *testing.T) {
						checkLinear(t, cb, randWeight(r, tc.d, tc.n, tc.k, tc.g), m, r)
					})
				}
			}
		}
	}
}

// TestFastHeadLinearHeads: a quantized HeadLinear whose heads are whole 64-column
// blocks runs as one streaming pass per thread over all its heads' columns
// (fastHeadKernel). Every element must equal, bit for bit, the kernel run one head at
// a time (its x slice, its columns), for decode and GEMM row counts, int8 and int4,
// per-channel and grouped, with the guard bands intact; and stay within the reference
// tolerance (looser with int8 activations: they round x). With QuantizeActivations the
// int4 heads run on the int8-activation kernel when K is whole activation blocks.
func TestFastHeadLinearHeads(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("the streaming HeadLinear path is part of the avx2 kernels")
	}
	r := rand.New(rand.NewPCG(41, 42))
	ref := backend.NewReference(0, backend.NewComm(1))
	for _, set := range []struct {
		th   int
		actq bool
	}{{1, false}, {3, false}, {1, true}, {3, true}} {
		g, err := NewGroup(1, Options{Threads: set.th, ISA: "avx2", QuantizeActivations: set.actq})
		if err != nil {
			t.Fatal(err)
		}
		cb, th, tol := g[0].(*Backend), set.th, 1e-5
		if set.actq {
			tol = 2e-2
		}
		for _, tc := range []struct {
			d              backend.DType
			heads, n, k, g int
		}{{backend.I8, 5, 128, 96, 0}, {backend.I4, 3, 64, 160, 32}, {backend.I4, 4, 128, 72, 0}, {backend.I8, 2, 192, 40, 32},
			{backend.I4, 3, 128, 128, 0}, {backend.I4, 2, 64, 192, 64}} {
			hw := randWeight(r, tc.d, tc.heads*tc.n, tc.k, tc.g)
			w, _ := cb.LoadWeight(hw)
			for _, m := range []int{1, 2, 3, decodeRows, decodeRows + 1, 13} {
				x, _ := guarded(m, tc.heads*tc.k, r, true)
				y, yp := guarded(m, tc.heads*tc.n, r, false)
				if err := cb.HeadLinear(y, x, w, tc.heads); err != nil {
					t.Fatal(err)
				}
				checkGuard(t, yp, m, tc.heads*tc.n)
				for h := 0; h < tc.heads; h++ {
					one, _ := backend.NewHostTensor(m, tc.n)
					qKernel(one, x, w.(*qweight), 0, tc.k, h*tc.n, (h+1)*tc.n, h*tc.k, set.actq)
					for i := 0; i < m; i++ {
						for j := 0; j < tc.n; j++ {
							if got, want := y.Row(i)[h*tc.n+j], one.Row(i)[j]; got != want {
								t.Fatalf("t%d actq %v %v heads %d n%d k%d g%d m%d: head %d row %d col %d: %v, one head at a time %v",
									th, set.actq, tc.d, tc.heads, tc.n, tc.k, tc.g, m, h, i, j, got, want)
							}
						}
					}
				}
				want, _ := backend.NewHostTensor(m, tc.heads*tc.n)
				if err := ref.HeadLinear(want, x, hostRef(hw), tc.heads); err != nil {
					t.Fatal(err)
				}
				if e := relErr(read(t, cb, y), want.Data); e > tol {
					t.Fatalf("actq %v %v m%d: head linear rel err %g", set.actq, tc.d, m, e)
				}
			}
		}
	}
}

// TestFastHeadGrouped: HeadLinear and GroupedLinear on the fast kernels.
func TestFastHeadGrouped(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	ref := backend.NewReference(0, backend.NewComm(1))
	for _, isa := range isas() {
		cb := isaGroup(t, isa, 2)
		for _, d := range []backend.DType{backend.F32, backend.BF16, backend.I8, backend.I4} {
			heads, n, k, m := 3, 72, 37, 7
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
				t.Fatalf("%s %v head linear rel err %g", isa, d, e)
			}
			// K = 1100: two k ranges per expert (kParts), whose pieces share one pool.
			for _, kg := range []int{45, 1100} {
				var ws, rws []backend.Weight
				for i := 0; i < 4; i++ {
					hwi := randWeight(r, d, 80, kg, 32*(i%2))
					wi, _ := cb.LoadWeight(hwi)
					ws, rws = append(ws, wi), append(rws, hostRef(hwi))
				}
				counts := []int{1, 0, 6, 2}
				xg, _ := guarded(9, kg, r, true)
				yg, ygp := guarded(9, 80, r, false)
				if err := cb.GroupedLinear(yg, xg, ws, counts); err != nil {
					t.Fatal(err)
				}
				checkGuard(t, ygp, 9, 80)
				wantG, _ := backend.NewHostTensor(9, 80)
				if err := ref.GroupedLinear(wantG, xg, rws, counts); err != nil {
					t.Fatal(err)
				}
				if e := relErr(read(t, cb, yg), wantG.Data); e > 1e-5 {
					t.Fatalf("%s %v K=%d grouped rel err %g", isa, d, kg, e)
				}
				// Each expert's rows are bit for bit its own Linear.
				row := 0
				for g, c := range counts {
					if c == 0 {
						continue
					}
					xs, _ := backend.SliceHost(xg, row, c, 0, kg)
					ys, _ := backend.NewHostTensor(c, 80)
					if err := cb.Linear(ys, xs, ws[g]); err != nil {
						t.Fatal(err)
					}
					for i := 0; i < c; i++ {
						for j, v := range ys.Row(i) {
							if got := yg.Row(row + i)[j]; got != v {
								t.Fatalf("%s %v K=%d expert %d row %d col %d: grouped %g, alone %g", isa, d, kg, g, i, j, got, v)
							}
						}
					}
					row += c
				}
			}
		}
	}
}

// TestThreadsAgree: the fast kernels give the same bits for any thread count.
func TestThreadsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, d := range []backend.DType{backend.I8, backend.I4, backend.BF16} {
		hw := randWeight(r, d, 136, 1111, 0)
		x, _ := guarded(6, 1111, r, true)
		var first []float32
		for _, th := range []int{1, 2, 3} {
			cb := isaGroup(t, "", th)
			w, _ := cb.LoadWeight(hw)
			for _, m := range []int{1, 6} {
				xs, _ := backend.SliceHost(x, 0, m, 0, 1111)
				y, _ := backend.NewHostTensor(m, 136)
				if err := cb.Linear(y, xs, w); err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = append([]float32(nil), y.Data...)
				}
				for j := range y.Data[:136] {
					if y.Data[j] != first[j] {
						t.Fatalf("%v threads %d rows %d col %d: %v, want %v", d, th, m, j, y.Data[j], first[j])
					}
				}
			}
		}
	}
}

// TestFastMLA: absorbed attention on every kernel set and thread count against the
// reference, with latent widths that exercise the 32-column blocks and their tails,
// guard bands, and each sequence alone equal to the batch.
func TestFastMLA(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, isa := range isas() {
		for _, th := range []int{1, 3} {
			for _, lc := range []int{19, 64, 75} {
				checkMLA(t, isaGroup(t, isa, th), r, lc, 0.2, fmt.Sprintf("%s threads %d lc %d", isa, th, lc))
			}
		}
	}
}

// randomCache returns a cache of nb blocks of bs rows of width floats (one layer),
// filled with normal values, and its block ids in a random order (a sequence's
// scattered blocks).
func randomCache(tb testing.TB, cb *Backend, r *rand.Rand, nb, bs, width int) (backend.Cache, []int32) {
	tb.Helper()
	c, err := cb.NewCache(1, nb, bs, width)
	if err != nil {
		tb.Fatal(err)
	}
	hc := c.(*backend.HostCache)
	for i := range hc.Data {
		hc.Data[i] = float32(r.NormFloat64())
	}
	blocks := make([]int32, nb)
	for i, p := range r.Perm(nb) {
		blocks[i] = int32(p)
	}
	return c, blocks
}

// TestFastMLALong runs the AVX2 MLA kernel over contexts of several blocks of cached
// rows (MLA_TB = 64) and more heads than one chunk (DSG_MLA_HEADS = 32), on scattered
// cache blocks: the reference within 1e-5, and the same bits for 1 and 3 threads
// (which cut the heads differently) and for a sequence's last row alone.
func TestFastMLALong(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("no AVX2+FMA on this CPU")
	}
	ref := backend.NewReference(0, backend.NewComm(1))
	const heads, lc, rr, bs, nblocks = 37, 48, 8, 16, 24
	var outs [][]float32
	for _, th := range []int{1, 3} {
		cb := isaGroup(t, "avx2", th)
		c, blocks := randomCache(t, cb, rand.New(rand.NewPCG(55, 56)), nblocks, bs, lc+rr)
		seqs := []backend.AttnSeq{{Row: 0, N: 3, Pos: 250, Blocks: blocks[:17]}, {Row: 3, N: 1, Pos: 97, Blocks: blocks[17:]}}
		rq := rand.New(rand.NewPCG(57, 58))
		qa, _ := guarded(4, heads*lc, rq, true)
		qp, _ := guarded(4, heads*rr, rq, true)
		out, op := guarded(4, heads*lc, rq, false)
		if err := cb.MLAAttention(out, qa, qp, c, 0, heads, seqs, 0.15); err != nil {
			t.Fatal(err)
		}
		checkGuard(t, op, 4, heads*lc)
		want, _ := backend.NewHostTensor(4, heads*lc)
		if err := ref.MLAAttention(want, qa, qp, c, 0, heads, seqs, 0.15); err != nil {
			t.Fatal(err)
		}
		got := read(t, cb, out)
		if e := relErr(got, want.Data); e > 1e-5 {
			t.Fatalf("threads %d: rel err %g", th, e)
		}
		last, _ := backend.NewHostTensor(4, heads*lc)
		alone := []backend.AttnSeq{{Row: 2, N: 1, Pos: 252, Blocks: blocks[:17]}}
		if err := cb.MLAAttention(last, qa, qp, c, 0, heads, alone, 0.15); err != nil {
			t.Fatal(err)
		}
		for j, v := range last.Row(2) {
			if v != got[2*heads*lc+j] {
				t.Fatalf("threads %d: last row alone differs at %d", th, j)
			}
		}
		outs = append(outs, got)
	}
	for j := range outs[0] {
		if outs[0][j] != outs[1][j] {
			t.Fatalf("1 and 3 threads differ at %d", j)
		}
	}
}

// mlaSeqs are three sequences over a 16-block cache of block size 4: a prefill from
// position 0, one decode row at position 13 over a scattered block table, and two
// rows at position 5.
var mlaSeqs = []backend.AttnSeq{
	{Row: 0, N: 3, Pos: 0, Blocks: []int32{3}},
	{Row: 3, N: 1, Pos: 13, Blocks: []int32{7, 1, 0, 12}},
	{Row: 4, N: 2, Pos: 5, Blocks: []int32{9, 15}},
}

// checkMLA runs MLAAttention with cb on mlaSeqs (5 heads, latent width lc, rope 6,
// layer 1 of a random 2-layer cache) and checks the guard bands, the reference within
// 1e-5, and the second sequence alone equal to the batch, bit for bit. It returns the
// cache and inputs for further checks.
func checkMLA(t *testing.T, cb *Backend, r *rand.Rand, lc int, scale float32, name string) (c backend.Cache, qa, qp, out *backend.HostTensor) {
	t.Helper()
	ref := backend.NewReference(0, backend.NewComm(1))
	const heads, rr, bs = 5, 6, 4
	c, _ = cb.NewCache(2, 16, bs, lc+rr)
	hc := c.(*backend.HostCache)
	for i := range hc.Data {
		hc.Data[i] = float32(r.NormFloat64())
	}
	M := 6
	qa, _ = guarded(M, heads*lc, r, true)
	qp, _ = guarded(M, heads*rr, r, true)
	out, op := guarded(M, heads*lc, r, false)
	if err := cb.MLAAttention(out, qa, qp, c, 1, heads, mlaSeqs, scale); err != nil {
		t.Fatal(err)
	}
	checkGuard(t, op, M, heads*lc)
	want, _ := backend.NewHostTensor(M, heads*lc)
	if err := ref.MLAAttention(want, qa, qp, c, 1, heads, mlaSeqs, scale); err != nil {
		t.Fatal(err)
	}
	got := read(t, cb, out)
	if e := relErr(got, want.Data); e > 1e-5 {
		t.Fatalf("%s: rel err %g", name, e)
	}
	one, _ := backend.NewHostTensor(M, heads*lc)
	if err := cb.MLAAttention(one, qa, qp, c, 1, heads, mlaSeqs[1:2], scale); err != nil {
		t.Fatal(err)
	}
	for j, v := range one.Row(3) {
		if v != got[3*heads*lc+j] {
			t.Fatalf("%s: sequence alone differs at %d", name, j)
		}
	}
	return c, qa, qp, out
}

func TestParseISA(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"", true}, {"generic", true}, {"avx2", detectISA() >= isaAVX2}, {"sse", false}} {
		_, err := parseISA(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseISA(%q): err %v", tc.in, err)
		}
	}
}

// FuzzFastLinear draws a dtype, shape, group size, row count and seed and compares the
// best kernel set with the reference (and batched rows with rows alone).
func FuzzFastLinear(f *testing.F) {
	f.Add(uint64(1), uint8(2), uint8(1), uint16(70), uint16(33), uint8(0))
	f.Add(uint64(2), uint8(3), uint8(9), uint16(130), uint16(200), uint8(1))
	f.Add(uint64(3), uint8(1), uint8(6), uint16(17), uint16(64), uint8(2))
	f.Fuzz(func(t *testing.T, seed uint64, dt, m uint8, n, k uint16, g uint8) {
		d := backend.DType(dt%4 + 1)
		M, N, K := int(m%14)+1, int(n%300)+1, int(k%300)+1
		if d == backend.I4 {
			N = (N + 7) / 8 * 8
		}
		G := 0
		if d == backend.I8 || d == backend.I4 {
			G = []int{0, 32, 64, 128}[int(g)%4]
		}
		r := rand.New(rand.NewPCG(seed, 77))
		checkLinear(t, isaGroup(t, "", 2), randWeight(r, d, N, K, G), M, r)
	})
}

// FuzzFastMLA draws head count, latent and rope widths, block size and a sequence's
// position and compares the best kernel set with the reference.
func FuzzFastMLA(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint8(70), uint8(6), uint8(4), uint8(9), uint8(2))
	f.Add(uint64(2), uint8(1), uint8(32), uint8(2), uint8(1), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, h, lc, rr, bs, pos, n uint8) {
		H, LC, R, BS := int(h%6)+1, int(lc%100)+1, 2*(int(rr%4)+1), int(bs%8)+1
		N, P := int(n%3)+1, int(pos%40)
		r := rand.New(rand.NewPCG(seed, 5))
		cb := isaGroup(t, "", 2)
		ref := backend.NewReference(0, backend.NewComm(1))
		c, blocks := randomCache(t, cb, r, (P+N+BS-1)/BS+1, BS, LC+R)
		seqs := []backend.AttnSeq{{Row: 0, N: N, Pos: P, Blocks: blocks}}
		qa, _ := guarded(N, H*LC, r, true)
		qp, _ := guarded(N, H*R, r, true)
		out, op := guarded(N, H*LC, r, false)
		if err := cb.MLAAttention(out, qa, qp, c, 0, H, seqs, 0.3); err != nil {
			t.Fatal(err)
		}
		checkGuard(t, op, N, H*LC)
		want, _ := backend.NewHostTensor(N, H*LC)
		if err := ref.MLAAttention(want, qa, qp, c, 0, H, seqs, 0.3); err != nil {
			t.Fatal(err)
		}
		// Outputs are convex combinations of O(1) cache values: an absolute bound (a
		// relative one breaks down on single near-zero outputs).
		for i, v := range read(t, cb, out) {
			if d := math.Abs(float64(v - want.Data[i])); d > 2e-5 {
				t.Fatalf("output %d: %v, want %v", i, v, want.Data[i])
			}
		}
	})
}

// TestFastSwiGLU checks the vector SwiGLU against the reference's (float64 math.Exp
// per element) on views of odd widths, with gates from tiny to beyond the clamp of
// its e^x: within 4 ulp of the reference, or, for gates below -87 (where the kernel
// clamps), within |g·u|·e^-87.
// A gate of -Inf is left out: silu(-Inf) is 0 as a limit, the reference gives NaN
// (-Inf/Inf) and the clamped kernel -Inf; neither can come out of a finite model.
func TestFastSwiGLU(t *testing.T) {
	if detectISA() < isaAVX2 {
		t.Skip("no AVX2+FMA on this CPU: the generic set runs the reference SwiGLU")
	}
	r := rand.New(rand.NewPCG(21, 22))
	cb, ref := isaGroup(t, "avx2", 1), backend.NewReference(0, backend.NewComm(1))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 87, -87, 88.5, -88.5, 95, -95, 200, -200,
		float32(math.Inf(1)), float32(math.NaN()), math.MaxFloat32, -math.MaxFloat32}
	for _, tc := range []struct{ rows, m int }{{1, 1}, {3, 7}, {2, 8}, {5, 9}, {4, 2051}} {
		for _, sigma := range []float64{0.01, 3, 40} {
			x, _ := guarded(tc.rows, 2*tc.m, r, true)
			for i := 0; i < tc.rows; i++ {
				row := x.Row(i)
				for j := range row {
					row[j] *= float32(sigma)
				}
				if j := r.IntN(tc.m); sigma == 40 {
					row[j] = special[r.IntN(len(special))]
				}
			}
			got, parent := guarded(tc.rows, tc.m, r, false)
			want, _ := backend.NewHostTensor(tc.rows, tc.m)
			if err := cb.SwiGLU(got, x); err != nil {
				t.Fatal(err)
			}
			if err := ref.SwiGLU(want, x); err != nil {
				t.Fatal(err)
			}
			checkGuard(t, parent, tc.rows, tc.m)
			for i := 0; i < tc.rows; i++ {
				for j, w := range want.Row(i) {
					g, u, v := x.Row(i)[j], x.Row(i)[tc.m+j], got.Row(i)[j]
					ulp := float64(math.Nextafter32(float32(math.Abs(float64(w))), math.MaxFloat32)) - math.Abs(float64(w))
					if math.IsNaN(float64(w)) != math.IsNaN(float64(v)) || math.Abs(float64(v-w)) > max(4*ulp, math.Abs(float64(g)*float64(u))*1.7e-38) {
						t.Fatalf("%d×%d σ=%g: silu(%g)·%g = %g, reference %g", tc.rows, tc.m, sigma, g, u, v, w)
					}
				}
			}
		}
	}
	x, _ := cb.NewTensor(2, 5)
	y, _ := cb.NewTensor(2, 2)
	if err := cb.SwiGLU(y, x); err == nil {
		t.Fatal("odd width accepted")
	}
}

// TestStreamRead checks the bandwidth probe's sum (small integers: exact in float32)
// for lengths with and without a tail past the four streams.
func TestStreamRead(t *testing.T) {
	for _, n := range []int{0, 64, 256, 64 * 37, 64 * 1024} {
		p := make([]float32, n+8)
		off := 0
		for uintptr(unsafe.Pointer(&p[off]))%32 != 0 {
			off++
		}
		p = p[off : off+n]
		want := float32(0)
		for i := range p {
			p[i] = float32(i % 7)
			want += p[i]
		}
		for _, isa := range []int{isaGeneric, detectISA()} {
			if got := streamRead(p, isa); got != want {
				t.Fatalf("n=%d isa=%d: sum %g, want %g", n, isa, got, want)
			}
		}
	}
}
