package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/backend"
)

// The benchmarks of this file compare each kernel figure with a machine limit measured
// in the same run (a streaming read for decode, an FMA loop for prefill), because the
// machines they run on are shared and noisy. BENCHMARKS.md explains how to run them.
// DSGATE_BENCH_BIG=1 switches the decode benchmark to a 2–4 GB checkpoint;
// DSGATE_BENCH_BEFORE=1 adds the "generic" (before) kernel set to every benchmark.

// bigBench reports whether the multi-GB variants were asked for.
func bigBench() bool { return os.Getenv("DSGATE_BENCH_BIG") == "1" }

// benchISAs lists the kernel sets to benchmark: the best one, plus the "generic" set
// (the backend's first kernels: the "before" figures) with DSGATE_BENCH_BEFORE=1 —
// they are 5–30× slower, so `make bench` leaves them out.
// For int4 weights on AVX2 it adds "avx2+actq": the same kernels with
// Options.QuantizeActivations.
func benchISAs(d backend.DType) []string {
	all := isas()
	if os.Getenv("DSGATE_BENCH_BEFORE") != "1" {
		all = all[len(all)-1:]
	}
	if d == backend.I4 && detectISA() >= isaAVX2 {
		all = append(all, "avx2+actq")
	}
	return all
}

// benchGroup returns one rank for a kernel set of benchISAs.
func benchGroup(b *testing.B, set string) *Backend {
	b.Helper()
	isa, actq := strings.CutSuffix(set, "+actq")
	g, err := NewGroup(1, Options{ISA: isa, QuantizeActivations: actq})
	if err != nil {
		b.Fatal(err)
	}
	return g[0].(*Backend)
}

// bwProbe measures the machine's memory read bandwidth interleaved with the work it
// is compared with. The bandwidth a shared VM gives swings by 2× from one 10 ms read
// to the next (BENCHMARKS.md, "Measuring bw_ratio"), so a probe run before and after
// the work, or the best of a few probe passes against the best of a few kernel runs,
// compares different moments. Instead, before each piece of work the probe streams
// about as many bytes as the work reads, and bw_ratio divides the two totals: both
// sides are averaged over the same stretch of time.
type bwProbe struct {
	buf     []float32 // larger than the caches; read in slices that rotate through it
	off     int
	threads int
	isa     int
	bytes   int64
	took    time.Duration
	sink    float32
}

// probeBuffer returns 256 MiB for bwProbe: 8× the L3 of the development VM.
func probeBuffer() []float32 {
	buf := make([]float32, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	return buf
}

func newBWProbe(buf []float32, threads int) *bwProbe {
	return &bwProbe{buf: buf, threads: threads, isa: detectISA()}
}

// read streams about bytes bytes with threads goroutines (each its own part of a
// slice), continuing where the last read stopped, and adds them to the totals.
func (p *bwProbe) read(bytes int64) {
	var mu sync.Mutex
	for bytes > 0 {
		n := min(int(bytes/4), len(p.buf)-p.off)
		per := n / p.threads &^ 63
		if per == 0 {
			p.off = 0
			if n < 64*p.threads { // the rest is too small to time
				return
			}
			continue
		}
		var wg sync.WaitGroup
		start := time.Now()
		for t := 0; t < p.threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := streamRead(p.buf[p.off+t*per:p.off+(t+1)*per], p.isa)
				mu.Lock()
				p.sink += s
				mu.Unlock()
			}()
		}
		wg.Wait()
		p.took += time.Since(start)
		done := per * p.threads
		p.bytes += int64(done) * 4
		bytes -= int64(done) * 4
		if p.off += done; p.off+64*p.threads > len(p.buf) {
			p.off = 0
		}
	}
}

// rate is the bandwidth of all reads so far, bytes/s.
func (p *bwProbe) rate() float64 { return float64(p.bytes) / p.took.Seconds() }

// peakFlops returns the FMA rate (flop/s, 2 per FMA) of threads goroutines running
// independent 8-wide FMA chains, best of three passes.
func peakFlops(threads, isa int) float64 {
	const iters = 20_000_000
	var rates []float64
	for pass := 0; pass < 3; pass++ {
		var wg sync.WaitGroup
		start := time.Now()
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				peakFMA(iters, isa)
			}()
		}
		wg.Wait()
		rates = append(rates, float64(threads)*iters*96*2/time.Since(start).Seconds())
	}
	sort.Float64s(rates)
	return rates[2]
}

// fillWeight makes a random weight of logical shape n × k in dtype d (quantized:
// group size g, scales ≈ 1/(qmax·√k) so that outputs stay O(1)).
func fillWeight(r *rand.Rand, name string, d backend.DType, n, k, g int) *backend.HostWeight {
	w := &backend.HostWeight{Name: name, DType: d, N: n, K: k, GroupSize: g}
	fill := func(b []byte) {
		for i := 0; i+8 <= len(b); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	}
	switch d {
	case backend.F32:
		w.F32 = make([]float32, n*k)
		for i := range w.F32 {
			w.F32[i] = float32(r.NormFloat64()) / float32(math.Sqrt(float64(k)))
		}
	case backend.BF16:
		w.BF16 = make([]uint16, n*k)
		for i := range w.BF16 {
			w.BF16[i] = backend.ToBF16(float32(r.NormFloat64()) / float32(math.Sqrt(float64(k))))
		}
	default:
		qmax := 127.0
		w.Q = make([]byte, n*k)
		if d == backend.I4 {
			qmax = 7
			w.Q = w.Q[:n*k/2]
		}
		fill(w.Q)
		rows := 1
		if g > 0 {
			rows = (k + g - 1) / g
		}
		w.Scale = make([]float32, rows*n)
		for i := range w.Scale {
			w.Scale[i] = float32((0.5 + r.Float64()) / qmax / math.Sqrt(float64(k)))
		}
	}
	return w
}

func weightBytes(w *backend.HostWeight) int64 {
	return int64(len(w.F32))*4 + int64(len(w.BF16))*2 + int64(len(w.Q)) + int64(len(w.Scale))*4
}

// v3Shape is a DeepSeek-V3-shaped model: the real per-layer dimensions (dim 7168,
// q_lora 1536, 128 heads of 128+64, kv_lora 512, expert inter 2048, top-8, one shared
// expert) with fewer routed experts and layers so that it fits this machine.
type v3Shape struct {
	dim, qLora, heads, nope, rope, vDim, kvLora, inter, experts, topK, layers, ctx int
}

func benchShape(d backend.DType) v3Shape {
	s := v3Shape{dim: 7168, qLora: 1536, heads: 128, nope: 128, rope: 64, vDim: 128, kvLora: 512, inter: 2048,
		experts: 16, topK: 8, layers: 1, ctx: 256}
	if bigBench() {
		s.layers = 5 // int4: ≈2.6 GB
		if d == backend.I8 {
			s.layers = 3 // int8: ≈2.9 GB
		}
	}
	return s
}

type benchLayer struct {
	attnNorm, qNorm, kvNorm, ffnNorm    backend.Weight
	wqA, wqB, wkvA, wUKt, wUV, wo, gate backend.Weight
	w13, w2                             []backend.Weight
	sw13, sw2                           backend.Weight
	bytes                               map[backend.Weight]int64
}

type benchModel struct {
	s      v3Shape
	layers []*benchLayer
	total  int64
	rope   backend.RopeTable
	cache  backend.Cache
}

func buildBenchModel(tb testing.TB, b *Backend, s v3Shape, d backend.DType) *benchModel {
	r := rand.New(rand.NewPCG(5, 6))
	m := &benchModel{s: s}
	g := 0
	if d == backend.I4 {
		g = 128
	}
	load := func(l *benchLayer, hw *backend.HostWeight) backend.Weight {
		w, err := b.LoadWeight(hw)
		if err != nil {
			tb.Fatal(err)
		}
		l.bytes[w] = weightBytes(hw)
		m.total += weightBytes(hw)
		return w
	}
	ones := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	H := s.heads
	for i := 0; i < s.layers; i++ {
		l := &benchLayer{bytes: map[backend.Weight]int64{}}
		l.attnNorm = load(l, backend.Vector("attn_norm", ones(s.dim)))
		l.ffnNorm = load(l, backend.Vector("ffn_norm", ones(s.dim)))
		l.qNorm = load(l, backend.Vector("q_norm", ones(s.qLora)))
		l.kvNorm = load(l, backend.Vector("kv_norm", ones(s.kvLora)))
		l.wqA = load(l, fillWeight(r, "wq_a", d, s.qLora, s.dim, g))
		l.wqB = load(l, fillWeight(r, "wq_b", d, H*(s.nope+s.rope), s.qLora, g))
		l.wkvA = load(l, fillWeight(r, "wkv_a", d, s.kvLora+s.rope, s.dim, g))
		l.wUKt = load(l, fillWeight(r, "w_uk_t", backend.F32, H*s.kvLora, s.nope, 0))
		l.wUV = load(l, fillWeight(r, "w_uv", d, H*s.vDim, s.kvLora, g))
		l.wo = load(l, fillWeight(r, "wo", d, s.dim, H*s.vDim, g))
		l.gate = load(l, fillWeight(r, "gate", backend.BF16, s.experts, s.dim, 0))
		for e := 0; e < s.experts; e++ {
			l.w13 = append(l.w13, load(l, fillWeight(r, "w13", d, 2*s.inter, s.dim, g)))
			l.w2 = append(l.w2, load(l, fillWeight(r, "w2", d, s.dim, s.inter, g)))
		}
		l.sw13 = load(l, fillWeight(r, "shared_w13", d, 2*s.inter, s.dim, g))
		l.sw2 = load(l, fillWeight(r, "shared_w2", d, s.dim, s.inter, g))
		m.layers = append(m.layers, l)
	}
	freqs := make([]float32, s.rope/2)
	for i := range freqs {
		freqs[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(s.rope)))
	}
	var err error
	if m.rope, err = b.NewRopeTable(freqs, s.ctx+1); err != nil {
		tb.Fatal(err)
	}
	blocks := (s.ctx + 16) / 16 * 8
	if m.cache, err = b.NewCache(s.layers, blocks, 16, s.kvLora+s.rope); err != nil {
		tb.Fatal(err)
	}
	hc := m.cache.(*backend.HostCache)
	for i := range hc.Data {
		hc.Data[i] = float32(r.NormFloat64())
	}
	return m
}

// opTimes accumulates time per op class of a decode step.
type opTimes map[string]time.Duration

var opClasses = []string{"attn_proj", "absorb", "mla", "router+gate", "experts", "shared", "other"}

// step runs one decode step of batch sequences (one token each at position s.ctx)
// through every layer with the ops and order of core/model's forward pass (absorb
// mode), and returns the weight bytes it read.
func (m *benchModel) step(tb testing.TB, b *Backend, batch int, ot opTimes) int64 {
	s := m.s
	H, lc, r := s.heads, s.kvLora, s.rope
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	T := func(rows, cols int) backend.Tensor {
		t, err := b.NewTensor(rows, cols)
		must(err)
		return t
	}
	view := func(t backend.Tensor, c0, n int) backend.Tensor {
		v, err := b.Slice(t, 0, t.Rows(), c0, n)
		must(err)
		return v
	}
	timed := func(class string, f func() error) {
		start := time.Now()
		must(f())
		ot[class] += time.Since(start)
	}
	pos := make([]int32, batch)
	slots := make([]int32, batch)
	seqs := make([]backend.AttnSeq, batch)
	perSeq := (s.ctx + 16) / 16
	for i := range seqs {
		bl := make([]int32, perSeq)
		for j := range bl {
			bl[j] = int32(i*perSeq + j)
		}
		pos[i] = int32(s.ctx)
		slots[i] = int32(backend.Slot(bl, 16, s.ctx))
		seqs[i] = backend.AttnSeq{Row: i, N: 1, Pos: s.ctx, Blocks: bl}
	}
	x := T(batch, s.dim)
	xr := make([]float32, batch*s.dim)
	rr := rand.New(rand.NewPCG(uint64(batch), 1))
	for i := range xr {
		xr[i] = float32(rr.NormFloat64())
	}
	must(b.Write(x, xr))
	var bytes int64
	gp := backend.GateParams{TopK: s.topK, Groups: 1, TopGroups: 1, Score: backend.Sigmoid, Normalize: true, RouteScale: 1}
	for li, l := range m.layers {
		lin := func(class string, out, in backend.Tensor, w backend.Weight) {
			timed(class, func() error { return b.Linear(out, in, w) })
			bytes += l.bytes[w]
		}
		h := T(batch, s.dim)
		timed("other", func() error { return b.RMSNorm(h, x, l.attnNorm, 1e-6) })
		qa, q := T(batch, s.qLora), T(batch, H*(s.nope+r))
		lin("attn_proj", qa, h, l.wqA)
		timed("other", func() error { return b.RMSNorm(qa, qa, l.qNorm, 1e-6) })
		lin("attn_proj", q, qa, l.wqB)
		qNope, qPe := view(q, 0, H*s.nope), view(q, H*s.nope, H*r)
		timed("other", func() error { return b.Rope(qPe, H, pos, m.rope) })
		kv := T(batch, lc+r)
		lin("attn_proj", kv, h, l.wkvA)
		timed("other", func() error {
			if err := b.RMSNorm(view(kv, 0, lc), view(kv, 0, lc), l.kvNorm, 1e-6); err != nil {
				return err
			}
			if err := b.Rope(view(kv, lc, r), 1, pos, m.rope); err != nil {
				return err
			}
			return b.CacheWrite(m.cache, li, kv, slots)
		})
		qAbs, oLat, o := T(batch, H*lc), T(batch, H*lc), T(batch, H*s.vDim)
		timed("absorb", func() error { return b.HeadLinear(qAbs, qNope, l.wUKt, H) })
		timed("mla", func() error { return b.MLAAttention(oLat, qAbs, qPe, m.cache, li, H, seqs, 0.1) })
		timed("absorb", func() error { return b.HeadLinear(o, oLat, l.wUV, H) })
		bytes += l.bytes[l.wUKt] + l.bytes[l.wUV]
		ao := T(batch, s.dim)
		lin("attn_proj", ao, o, l.wo)
		timed("other", func() error {
			if err := b.Add(x, x, ao); err != nil {
				return err
			}
			return b.RMSNorm(h, x, l.ffnNorm, 1e-6)
		})
		logits := T(batch, s.experts)
		lin("router+gate", logits, h, l.gate)
		var idx []int32
		var wts []float32
		timed("router+gate", func() error {
			var err error
			idx, wts, err = b.MoEGate(logits, nil, gp)
			return err
		})
		type pair struct {
			e, tok int32
			w      float32
		}
		var pairs []pair
		for t := 0; t < batch; t++ {
			for j := 0; j < s.topK; j++ {
				pairs = append(pairs, pair{idx[t*s.topK+j], int32(t), wts[t*s.topK+j]})
			}
		}
		sort.Slice(pairs, func(i, j int) bool {
			if pairs[i].e != pairs[j].e {
				return pairs[i].e < pairs[j].e
			}
			return pairs[i].tok < pairs[j].tok
		})
		R := len(pairs)
		rows, ws, counts := make([]int32, R), make([]float32, R), make([]int, s.experts)
		for i, p := range pairs {
			rows[i], ws[i] = p.tok, p.w
			counts[p.e]++
		}
		for e, c := range counts {
			if c > 0 {
				bytes += l.bytes[l.w13[e]] + l.bytes[l.w2[e]]
			}
		}
		xs, g, a, ye, y := T(R, s.dim), T(R, 2*s.inter), T(R, s.inter), T(R, s.dim), T(batch, s.dim)
		timed("other", func() error { return b.GatherRows(xs, h, rows) })
		timed("experts", func() error { return b.GroupedLinear(g, xs, l.w13, counts) })
		timed("other", func() error { return b.SwiGLU(a, g) })
		timed("experts", func() error { return b.GroupedLinear(ye, a, l.w2, counts) })
		timed("other", func() error { return b.MoECombine(y, ye, rows, ws) })
		sg, sa, sy := T(batch, 2*s.inter), T(batch, s.inter), T(batch, s.dim)
		lin("shared", sg, h, l.sw13)
		timed("other", func() error { return b.SwiGLU(sa, sg) })
		lin("shared", sy, sa, l.sw2)
		timed("other", func() error {
			if err := b.Add(y, y, sy); err != nil {
				return err
			}
			return b.Add(x, x, y)
		})
	}
	return bytes
}

// BenchmarkDecode runs decode steps of a DeepSeek-V3-shaped model (int4 per-group-128
// and int8 per-channel weights; DSGATE_BENCH_BIG=1 for 2–4 GB) at batch 1 and batch 8
// with the "generic" kernels (the backend's first version: "before") and the best
// ones ("after"). Reported per sub-benchmark, all measured in the same run:
// weight_GB/s (bytes of weights read per second of the batch-1 step), mem_GB/s (a
// streaming read over a buffer larger than the caches), bw_ratio = weight_GB/s ÷
// mem_GB/s, tok/s at batch 1 and 8 and their ratio b8/b1 (with b8/b1_bw_ceiling, the
// ratio at equal weight GB/s: batch 8 reads more experts), and ms/step of each op class
// at batch 1.
func BenchmarkDecode(b *testing.B) {
	for _, d := range []backend.DType{backend.I4, backend.I8} {
		b.Run(d.String(), func(b *testing.B) {
			s := benchShape(d)
			loader := isaGroup(b, "", 0)
			m := buildBenchModel(b, loader, s, d)
			buf := probeBuffer()
			b.Logf("%v: %d layers, %d routed experts, %.2f GB of weights", d, s.layers, s.experts, float64(m.total)/1e9)
			for _, isa := range benchISAs(d) {
				b.Run(isa, func(b *testing.B) {
					cb := benchGroup(b, isa)
					probe := newBWProbe(buf, cb.threads)
					bytes1 := m.step(b, cb, 1, opTimes{}) // warm-up
					// Means over b.N iterations, each a probe read of the batch-1
					// step's bytes, a batch-1 step and a batch-8 step (bwProbe).
					var t1, t8 time.Duration
					var bytes8 int64
					ot, ot8 := opTimes{}, opTimes{}
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						probe.read(bytes1)
						start := time.Now()
						bytes1 = m.step(b, cb, 1, ot)
						t1 += time.Since(start)
						start = time.Now()
						bytes8 = m.step(b, cb, 8, ot8)
						t8 += time.Since(start)
					}
					b.StopTimer()
					n := float64(b.N)
					wbw, bw := n*float64(bytes1)/t1.Seconds(), probe.rate()
					b.ReportMetric(wbw/1e9, "weight_GB/s")
					b.ReportMetric(bw/1e9, "mem_GB/s")
					b.ReportMetric(wbw/bw, "bw_ratio")
					tok1, tok8 := n/t1.Seconds(), 8*n/t8.Seconds()
					b.ReportMetric(tok1, "tok/s_b1")
					b.ReportMetric(tok8, "tok/s_b8")
					b.ReportMetric(tok8/tok1, "b8/b1")
					// The b8/b1 a memory-bound batch-8 step would reach at the batch-1
					// step's weight GB/s: batch 8 reads more experts than batch 1.
					b.ReportMetric(8*float64(bytes1)/float64(bytes8), "b8/b1_bw_ceiling")
					var line, line8 string
					for _, c := range opClasses {
						ms := ot[c].Seconds() * 1e3 / n
						b.ReportMetric(ms, c+"_ms")
						line += fmt.Sprintf(" %s=%.1fms", c, ms)
						line8 += fmt.Sprintf(" %s=%.1fms", c, ot8[c].Seconds()*1e3/n)
					}
					b.Logf("%s %v batch-1 step %.1f ms:%s", isa, d, t1.Seconds()*1e3/n, line)
					b.Logf("%s %v batch-8 step %.1f ms:%s", isa, d, t8.Seconds()*1e3/n, line8)
				})
			}
		})
	}
}

// BenchmarkPrefillMatmul runs Linear on 512 rows (a prefill chunk) against a
// DeepSeek-V3 shared-expert w1|w3 shape (4096 × 7168) and reports GFLOP/s, the peak FMA
// rate of the same threads measured in the same run, and their ratio.
func BenchmarkPrefillMatmul(b *testing.B) {
	const M, N, K = 512, 4096, 7168
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		d backend.DType
		g int
	}{{backend.I4, 128}, {backend.I8, 0}, {backend.BF16, 0}} {
		hw := fillWeight(r, "w13", tc.d, N, K, tc.g)
		for _, isa := range benchISAs(tc.d) {
			b.Run(fmt.Sprintf("%v/%s", tc.d, isa), func(b *testing.B) {
				cb := benchGroup(b, isa)
				w, err := cb.LoadWeight(hw)
				if err != nil {
					b.Fatal(err)
				}
				x, _ := backend.NewHostTensor(M, K)
				for i := range x.Data {
					x.Data[i] = float32(r.NormFloat64())
				}
				y, _ := backend.NewHostTensor(M, N)
				peak := peakFlops(cb.threads, detectISA())
				b.ResetTimer()
				el := time.Duration(math.MaxInt64)
				for i := 0; i < b.N; i++ {
					start := time.Now()
					if err := cb.Linear(y, x, w); err != nil {
						b.Fatal(err)
					}
					el = min(el, time.Since(start))
				}
				b.StopTimer()
				peak = max(peak, peakFlops(cb.threads, detectISA()))
				fl := 2 * float64(M) * N * K / el.Seconds()
				b.ReportMetric(fl/1e9, "GFLOP/s")
				b.ReportMetric(peak/1e9, "peak_GFLOP/s")
				b.ReportMetric(fl/peak, "peak_ratio")
			})
		}
	}
}

// BenchmarkGEMV runs one-row Linear (decode) on a 4096 × 7168 weight per dtype and
// reports the weight bytes read per second against a streaming read in the same run.
func BenchmarkGEMV(b *testing.B) {
	const N, K = 4096, 7168
	r := rand.New(rand.NewPCG(8, 9))
	buf := probeBuffer()
	for _, tc := range []struct {
		d backend.DType
		g int
	}{{backend.I4, 128}, {backend.I4, 0}, {backend.I8, 0}, {backend.BF16, 0}} {
		// Enough distinct weights to exceed the caches.
		var hws []*backend.HostWeight
		var bytes int64
		for bytes < 256<<20 {
			hw := fillWeight(r, "w", tc.d, N, K, tc.g)
			hws = append(hws, hw)
			bytes += weightBytes(hw)
		}
		for _, isa := range benchISAs(tc.d) {
			b.Run(fmt.Sprintf("%v-g%d/%s", tc.d, tc.g, isa), func(b *testing.B) {
				cb := benchGroup(b, isa)
				var ws []backend.Weight
				for _, hw := range hws {
					w, _ := cb.LoadWeight(hw)
					ws = append(ws, w)
				}
				x, _ := backend.NewHostTensor(1, K)
				for i := range x.Data {
					x.Data[i] = float32(r.NormFloat64())
				}
				y, _ := backend.NewHostTensor(1, N)
				probe := newBWProbe(buf, cb.threads)
				b.ResetTimer()
				var el time.Duration
				for i := 0; i < b.N; i++ {
					for j, w := range ws {
						probe.read(weightBytes(hws[j]))
						start := time.Now()
						if err := cb.Linear(y, x, w); err != nil {
							b.Fatal(err)
						}
						el += time.Since(start)
					}
				}
				b.StopTimer()
				rate, bw := float64(b.N)*float64(bytes)/el.Seconds(), probe.rate()
				b.ReportMetric(rate/1e9, "weight_GB/s")
				b.ReportMetric(bw/1e9, "mem_GB/s")
				b.ReportMetric(rate/bw, "bw_ratio")
			})
		}
	}
}

// BenchmarkSwiGLU runs SwiGLU on the expert rows of a batch-8 decode step (8 tokens ×
// top-8 experts, inter 2048) with the reference (generic) and AVX2 kernels.
func BenchmarkSwiGLU(b *testing.B) {
	const rows, inter = 64, 2048
	r := rand.New(rand.NewPCG(5, 6))
	x, _ := backend.NewHostTensor(rows, 2*inter)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	out, _ := backend.NewHostTensor(rows, inter)
	for _, isa := range isas() {
		b.Run(isa, func(b *testing.B) {
			cb := benchGroup(b, isa)
			for i := 0; i < b.N; i++ {
				if err := cb.SwiGLU(out, x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows*inter), "ns/element")
		})
	}
}

// BenchmarkMLA runs MLAAttention for one decode row of one sequence with DeepSeek-V3's
// shapes (128 heads, latent 512, rope 64) at contexts of 256 and 4096 positions:
// ms/call and cache_GB/s, the cached rows' bytes (each read once at least) per second.
func BenchmarkMLA(b *testing.B) {
	const heads, lc, r, bs = 128, 512, 64, 16
	for _, ctx := range []int{256, 4096} {
		for _, isa := range isas() {
			b.Run(fmt.Sprintf("ctx%d/%s", ctx, isa), func(b *testing.B) {
				cb := benchGroup(b, isa)
				rr := rand.New(rand.NewPCG(7, 8))
				c, blocks := randomCache(b, cb, rr, ctx/bs+1, bs, lc+r)
				qa, _ := backend.NewHostTensor(1, heads*lc)
				qp, _ := backend.NewHostTensor(1, heads*r)
				for i := range qa.Data {
					qa.Data[i] = float32(rr.NormFloat64())
				}
				for i := range qp.Data {
					qp.Data[i] = float32(rr.NormFloat64())
				}
				out, _ := backend.NewHostTensor(1, heads*lc)
				seqs := []backend.AttnSeq{{Row: 0, N: 1, Pos: ctx, Blocks: blocks}}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := cb.MLAAttention(out, qa, qp, c, 0, heads, seqs, 0.1); err != nil {
						b.Fatal(err)
					}
				}
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(sec*1e3, "ms/call")
				b.ReportMetric(float64(ctx+1)*(lc+r)*4/sec/1e9, "cache_GB/s")
			})
		}
	}
}
