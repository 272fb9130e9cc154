package model

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
)

// tinyCheckpoint returns a random config_tiny checkpoint, written once per machine into
// the temp dir (about 145 MB; reused by later benchmark runs).
func tinyCheckpoint(b *testing.B) (string, configs.Model) {
	b.Helper()
	cfg, err := configs.Embedded("config_tiny.json")
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(os.TempDir(), "dsgate-bench-config-tiny-seed1")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		if err := WriteRandomCheckpoint(dir, cfg, 1); err != nil {
			b.Fatal(err)
		}
	}
	return dir, cfg
}

// weightBytesPerToken is the weight bytes one decode token reads on every rank together:
// every weight once, except routed experts, of which n_activated/n_routed are read.
func weightBytesPerToken(m *Model) float64 {
	size := func(w backend.Weight) float64 {
		if w == nil {
			return 0
		}
		s, ok := w.(backend.Sized)
		if !ok {
			return 0
		}
		return float64(s.Bytes())
	}
	var total float64
	frac := float64(m.cfg.NActivatedExperts) / float64(m.cfg.NRoutedExperts)
	for _, rk := range m.ranks {
		total += size(rk.norm) + size(rk.head) + float64(m.cfg.Dim*2)/float64(len(m.ranks)) // one embedding row
		for _, bl := range rk.layers {
			a := bl.attn
			for _, w := range []backend.Weight{bl.attnNorm, bl.ffnNorm, a.wqA, a.qNorm, a.wqB, a.wkvA, a.kvNrm, a.wUKt, a.wUV, a.wkvB, a.wo, bl.gate, bl.bias} {
				total += size(w)
			}
			for _, x := range []*mlp{bl.dense, bl.shared} {
				if x != nil {
					total += size(x.w13) + size(x.w2)
				}
			}
			for _, e := range bl.experts {
				total += frac * (size(e.w13) + size(e.w2))
			}
		}
	}
	return total
}

// BenchmarkDecodeTiny: one decode step of config_tiny at batch 1 (bf16 weights, world
// size 1, a 64-token context); reports tokens/s and GB/s of weight bytes read.
func BenchmarkDecodeTiny(b *testing.B) {
	dir, cfg := tinyCheckpoint(b)
	m, err := Load(context.Background(), dir, cfg, Options{NumBlocks: 8, BlockSize: 16})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	blocks := []int32{0, 1, 2, 3, 4, 5, 6, 7}
	prompt := make([]int32, 64)
	for i := range prompt {
		prompt[i] = int32(1000 + 37*i)
	}
	if _, err := m.Forward(ctx, []Seq{{Tokens: prompt, Blocks: blocks}}); err != nil {
		b.Fatal(err)
	}
	bytes := weightBytesPerToken(m)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		// Decode position 64 again and again: same cost every step.
		if _, err := m.Forward(ctx, []Seq{{Tokens: []int32{42}, Pos: 64, Blocks: blocks}}); err != nil {
			b.Fatal(err)
		}
	}
	sec := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/sec, "tok/s")
	b.ReportMetric(bytes*float64(b.N)/sec/1e9, "GB/s")
	b.ReportMetric(bytes/1e6, "MB/token")
	b.ReportMetric(readBandwidth(int(bytes)), "read-GB/s")
}

// readBandwidth measures a plain multi-goroutine sequential read of n bytes (best of 3),
// the ceiling to compare the decode GB/s with (PERF-NOTES.md: measure both in one run).
func readBandwidth(n int) float64 {
	buf := make([]float32, n/4)
	for i := range buf {
		buf[i] = float32(i & 7)
	}
	threads := runtime.GOMAXPROCS(0)
	best := 0.0
	var sink atomic.Uint64
	for rep := 0; rep < 3; rep++ {
		start := time.Now()
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(part []float32) {
				defer wg.Done()
				var a0, a1, a2, a3 float32
				for i := 0; i+4 <= len(part); i += 4 {
					a0 += part[i]
					a1 += part[i+1]
					a2 += part[i+2]
					a3 += part[i+3]
				}
				sink.Add(uint64(a0 + a1 + a2 + a3))
			}(buf[t*len(buf)/threads : (t+1)*len(buf)/threads])
		}
		wg.Wait()
		best = max(best, float64(n)/time.Since(start).Seconds()/1e9)
	}
	return best
}
