package tokenizer

import (
	"syscall"
	"testing"
	"time"
)

// cpuSeconds is the process's user+system CPU time: on a shared machine it measures the work
// done, where wall time also counts waiting for a core.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkEncode encodes the whole golden corpus (>1 MB of varied text) once per iteration on
// one goroutine; MB/s is the number to compare with testdata/bench_hf.py (HF tokenizers, one thread).
func BenchmarkEncode(b *testing.B) {
	tk := loadReal(b)
	benchEncode(b, tk)
}

// BenchmarkEncodeNoCache is BenchmarkEncode with the word cache off: the raw pre-tokenizer + BPE speed.
func BenchmarkEncodeNoCache(b *testing.B) {
	tk := *loadReal(b) // a copy that shares the read-only tables
	tk.noCache = true
	benchEncode(b, &tk)
}

func benchEncode(b *testing.B, tk *Tokenizer) {
	samples := loadCorpus(b)
	total, tokens := 0, 0
	for _, s := range samples {
		total += len(s.Text)
		tokens += len(s.IDs)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuSeconds()
	for b.Loop() {
		for _, s := range samples {
			tk.Encode(s.Text, false)
		}
	}
	sec, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	b.ReportMetric(float64(tokens)*float64(b.N)/sec, "tok/s")
	if cpu > 0 {
		b.ReportMetric(float64(total)*float64(b.N)/cpu/1e6, "MB/cpu-s")
	}
}

// BenchmarkDecodeStream pushes the corpus ids through a StreamDecoder.
func BenchmarkDecodeStream(b *testing.B) {
	tk := loadReal(b)
	samples := loadCorpus(b)[:2000]
	total, tokens := 0, 0
	for _, s := range samples {
		total += len(s.Text)
		tokens += len(s.IDs)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		for _, s := range samples {
			d := tk.NewStreamDecoder(false)
			for _, id := range s.IDs {
				d.Push(id)
			}
			d.Flush()
		}
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/time.Since(start).Seconds(), "tok/s")
}
