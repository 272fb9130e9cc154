package backend

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

func randF32(r *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64())
	}
	return out
}

// randQuant returns a random quantized weight of dtype d and its dequantized F32 twin.
func randQuant(r *rand.Rand, d DType, n, k, g int) (*HostWeight, *HostWeight) {
	q, vals := RandomQuant(r, d, n, k, g)
	sc := q.Scale
	f := &HostWeight{Name: "f", DType: F32, N: n, K: k, F32: make([]float32, n*k)}
	for nn := 0; nn < n; nn++ {
		for kk := 0; kk < k; kk++ {
			s := sc[nn]
			if g > 0 {
				s = sc[(kk/g)*n+nn]
			}
			f.F32[nn*k+kk] = float32(vals[kk*n+nn]) * s
		}
	}
	return q, f
}

func TestQuantLayoutAndLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := NewReference(0, NewComm(1))
	for _, tc := range []struct {
		name string
		d    DType
		n, k int
		g    int
	}{
		{"i8-channel", I8, 24, 37, 0},
		{"i8-group", I8, 16, 70, 32},
		{"i4-channel", I4, 40, 33, 0},
		{"i4-group", I4, 16, 129, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, f := randQuant(r, tc.d, tc.n, tc.k, tc.g)
			if err := q.Validate(); err != nil {
				t.Fatal(err)
			}
			dq := q.Dequantize()
			for i := range dq {
				if dq[i] != f.F32[i] {
					t.Fatalf("dequantize[%d] = %v, want %v", i, dq[i], f.F32[i])
				}
			}
			x := &HostTensor{Data: randF32(r, 3*tc.k), R: 3, C: tc.k, Stride: tc.k}
			yq, _ := NewHostTensor(3, tc.n)
			yf, _ := NewHostTensor(3, tc.n)
			wq, _ := b.LoadWeight(q)
			wf, _ := b.LoadWeight(f)
			if err := b.Linear(yq, x, wq); err != nil {
				t.Fatal(err)
			}
			if err := b.Linear(yf, x, wf); err != nil {
				t.Fatal(err)
			}
			for i := range yq.Data {
				if yq.Data[i] != yf.Data[i] {
					t.Fatalf("linear[%d] %v != %v", i, yq.Data[i], yf.Data[i])
				}
			}
			// Row selection and concatenation keep values exactly.
			rows := []int{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}
			sel, err := q.SelectRows("sel", rows)
			if err != nil {
				t.Fatal(err)
			}
			cat, err := ConcatRows("cat", sel, q)
			if err != nil {
				t.Fatal(err)
			}
			for j, rr := range append(rows, seq(tc.n)...) {
				for kk := 0; kk < tc.k; kk++ {
					if cat.At(j, kk) != q.At(rr, kk) {
						t.Fatalf("concat/select (%d,%d) mismatch", j, kk)
					}
				}
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestInt4Nibbles(t *testing.T) {
	// Element 8i+j of a row is bits 4j of word i (low nibble first), two's complement.
	vals := []int8{-8, -1, 0, 1, 7, 3, -3, 2}
	b := PackQuant(I4, vals, 1, 8)
	if got, want := uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24, uint32(0x2D3710F8); got != want {
		t.Fatalf("packed word %#x, want %#x", got, want)
	}
	w := &HostWeight{DType: I4, N: 8, K: 1, Q: b, Scale: []float32{1, 1, 1, 1, 1, 1, 1, 1}}
	for n, v := range vals {
		if w.At(n, 0) != float32(v) {
			t.Fatalf("At(%d) = %v, want %d", n, w.At(n, 0), v)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	for _, w := range []*HostWeight{
		{Name: "a", DType: F32, N: 2, K: 2, F32: make([]float32, 3)},
		{Name: "b", DType: I4, N: 4, K: 2, Q: make([]byte, 4), Scale: make([]float32, 4)},
		{Name: "c", DType: I8, N: 2, K: 2, Q: make([]byte, 4), Scale: make([]float32, 3)},
		{Name: "d", DType: I8, N: 2, K: 4, Q: make([]byte, 8), Scale: make([]float32, 2), GroupSize: 2},
		{Name: "e", DType: 9, N: 1, K: 1},
	} {
		if err := w.Validate(); err == nil {
			t.Errorf("%s: no error", w.Name)
		}
	}
}

func TestRopeInterleaved(t *testing.T) {
	freqs := []float32{1, 0.1, 0.01}
	b := NewReference(0, NewComm(1))
	rt, err := b.NewRopeTable(freqs, 8)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	x := &HostTensor{Data: randF32(r, 2*12), R: 2, C: 12, Stride: 12}
	orig := append([]float32(nil), x.Data...)
	pos := []int32{5, 7}
	if err := b.Rope(x, 2, pos, rt); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		for h := 0; h < 2; h++ {
			for j := 0; j < 3; j++ {
				o := i*12 + h*6 + 2*j
				z := complex(float64(orig[o]), float64(orig[o+1])) * complex(math.Cos(float64(pos[i])*float64(freqs[j])), math.Sin(float64(pos[i])*float64(freqs[j])))
				if math.Abs(real(z)-float64(x.Data[o])) > 1e-5 || math.Abs(imag(z)-float64(x.Data[o+1])) > 1e-5 {
					t.Fatalf("row %d head %d pair %d: got (%v,%v) want %v", i, h, j, x.Data[o], x.Data[o+1], z)
				}
			}
		}
	}
}

func TestGateRow(t *testing.T) {
	// 8 experts in 4 groups of 2, keep 2 groups, top-2; sigmoid with bias for selection.
	inv := func(p float64) float32 { return float32(math.Log(p / (1 - p))) }
	logits := []float32{inv(0.9), inv(0.1), inv(0.5), inv(0.5), inv(0.2), inv(0.2), inv(0.8), inv(0.3)}
	bias := Vector("bias", []float32{0, 0, 0, 0, 0.5, 0.5, 0, 0})
	p := GateParams{TopK: 2, Groups: 4, TopGroups: 2, Score: Sigmoid, GroupScore: GroupTop2Sum, Normalize: true, RouteScale: 2}
	idx := make([]int32, 2)
	w := make([]float32, 2)
	GateRow(logits, bias, p, NewGateScratch(8), idx, w)
	// group scores (biased): g0 1.0, g1 1.0, g2 1.4, g3 1.1 -> keep g2, g3;
	// biased scores: e4 0.7, e5 0.7, e6 0.8, e7 0.3 -> top-2 = e6, e4 (tie e4/e5 -> lower id).
	if idx[0] != 6 || idx[1] != 4 {
		t.Fatalf("idx = %v, want [6 4]", idx)
	}
	// Weights use the unbiased scores 0.8, 0.2, renormalised, ×2.
	if math.Abs(float64(w[0])-1.6) > 1e-5 || math.Abs(float64(w[1])-0.4) > 1e-5 {
		t.Fatalf("w = %v, want [1.6 0.4]", w)
	}
	// Softmax, group max, no renormalisation.
	p = GateParams{TopK: 2, Groups: 1, TopGroups: 1, Score: Softmax, RouteScale: 1}
	GateRow([]float32{0, float32(math.Log(3)), 0, 0}, nil, p, NewGateScratch(4), idx, w)
	if idx[0] != 1 || idx[1] != 0 || math.Abs(float64(w[0])-0.5) > 1e-6 || math.Abs(float64(w[1])-1.0/6) > 1e-6 {
		t.Fatalf("softmax: idx %v w %v", idx, w)
	}
}

func TestTopNRow(t *testing.T) {
	nan := float32(math.NaN())
	idx, val := TopNRow([]float32{1, 3, nan, 3, 2, -1}, 3)
	if idx[0] != 1 || idx[1] != 3 || idx[2] != 4 || val[2] != 2 {
		t.Fatalf("idx %v val %v", idx, val)
	}
}

func TestCommCollectives(t *testing.T) {
	for _, world := range []int{1, 2, 4, 8} {
		bs, err := NewReferenceGroup(world)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, world)
		res := make([][]float32, world)
		gat := make([][]float32, world)
		for r := 0; r < world; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				b := bs[r]
				x, _ := b.NewTensor(3, 5)
				v := make([]float32, 15)
				for i := range v {
					v[i] = float32(r*100 + i)
				}
				_ = b.Write(x, v)
				view, _ := b.Slice(x, 0, 3, 1, 3)
				if errs[r] = b.AllReduce(view); errs[r] != nil {
					return
				}
				res[r] = make([]float32, 15)
				_ = b.Read(x, res[r])
				part, _ := b.NewTensor(2, 2)
				_ = b.Write(part, []float32{float32(r), float32(r), float32(-r), float32(-r)})
				out, _ := b.NewTensor(2, 2*world)
				if errs[r] = b.AllGather(out, part); errs[r] != nil {
					return
				}
				gat[r] = make([]float32, 4*world)
				_ = b.Read(out, gat[r])
			}(r)
		}
		wg.Wait()
		for r := 0; r < world; r++ {
			if errs[r] != nil {
				t.Fatal(errs[r])
			}
			for i := 0; i < 15; i++ {
				want := float32(r*100 + i)
				if c := i % 5; c >= 1 && c <= 3 {
					want = 0
					for rr := 0; rr < world; rr++ {
						want += float32(rr*100 + i)
					}
				}
				if res[r][i] != want {
					t.Fatalf("world %d rank %d: all-reduce[%d] = %v, want %v", world, r, i, res[r][i], want)
				}
			}
			for i := 0; i < 2; i++ {
				for rr := 0; rr < world; rr++ {
					want := float32(rr)
					if i == 1 {
						want = -want
					}
					if got := gat[r][i*2*world+2*rr+1]; got != want {
						t.Fatalf("world %d: all-gather row %d rank %d = %v, want %v", world, i, rr, got, want)
					}
				}
			}
		}
	}
}

func TestCommAbort(t *testing.T) {
	c := NewComm(2)
	done := make(chan error)
	go func() { done <- c.AllReduce(0, make([]float32, 4)) }()
	c.Abort(errors.New("rank 1 failed"))
	if err := <-done; !errors.Is(err, ErrAborted) {
		t.Fatalf("err = %v, want ErrAborted", err)
	}
	c.Reset()
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			if err := c.AllReduce(r, []float32{1}); err != nil {
				t.Error(err)
			}
		}(r)
	}
	wg.Wait()
}

func TestMLAEqualsPlainAttention(t *testing.T) {
	// Absorbed attention over a paged cache equals plain attention whose per-head keys
	// and values are the latent broadcast to every head.
	r := rand.New(rand.NewPCG(5, 6))
	b := NewReference(0, NewComm(1))
	const heads, lc, rr, bs = 3, 6, 4, 4
	c, _ := NewHostCache(2, 8, bs, lc+rr)
	blocks := []int32{5, 2, 7}
	T := 10
	kv := &HostTensor{Data: randF32(r, T*(lc+rr)), R: T, C: lc + rr, Stride: lc + rr}
	slots := make([]int32, T)
	for t := range slots {
		slots[t] = int32(Slot(blocks, bs, t))
	}
	if err := b.CacheWrite(c, 1, kv, slots); err != nil {
		t.Fatal(err)
	}
	M := 3 // the last 3 positions as queries
	qa := &HostTensor{Data: randF32(r, M*heads*lc), R: M, C: heads * lc, Stride: heads * lc}
	qp := &HostTensor{Data: randF32(r, M*heads*rr), R: M, C: heads * rr, Stride: heads * rr}
	out1, _ := NewHostTensor(M, heads*lc)
	seqs := []AttnSeq{{Row: 0, N: M, Pos: T - M, Blocks: blocks}}
	if err := b.MLAAttention(out1, qa, qp, c, 1, heads, seqs, 0.3); err != nil {
		t.Fatal(err)
	}
	kn, _ := NewHostTensor(T, heads*lc)
	for i := 0; i < T; i++ {
		for h := 0; h < heads; h++ {
			copy(kn.Row(i)[h*lc:], kv.Row(i)[:lc])
		}
	}
	kp, _ := SliceHost(kv, 0, T, lc, rr)
	got, _ := NewHostTensor(T, lc+rr)
	if err := b.CacheRead(got, c, 1, blocks); err != nil {
		t.Fatal(err)
	}
	for i := range got.Data {
		if got.Data[i] != kv.Data[i] {
			t.Fatalf("cache read [%d] %v != %v", i, got.Data[i], kv.Data[i])
		}
	}
	out2, _ := NewHostTensor(M, heads*lc)
	if err := b.Attention(out2, qa, qp, kn, kp, kn, heads, seqs, 0.3); err != nil {
		t.Fatal(err)
	}
	for i := range out1.Data {
		if math.Abs(float64(out1.Data[i]-out2.Data[i])) > 1e-6 {
			t.Fatalf("[%d] mla %v attention %v", i, out1.Data[i], out2.Data[i])
		}
	}
}
