package tokenizer

import (
	"strings"
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

// BenchmarkEncode encodes the golden corpus once per iteration on one goroutine: "all" is every
// sample (2.6 MB, much of it unusual Unicode), "prose-code" only the samples cut from real files
// (Go/Python/JS source, docs, JSON). Compare MB/s and MB/cpu-s with testdata/bench_hf.py, which
// measures HF tokenizers on one thread over the same two sets.
func BenchmarkEncode(b *testing.B) {
	tk := loadReal(b)
	all := loadCorpus(b)
	b.Run("all", func(b *testing.B) { benchEncode(b, tk, all) })
	b.Run("prose-code", func(b *testing.B) { benchEncode(b, tk, proseCode(all)) })
}

// proseCode selects the corpus samples taken from real source files and documentation.
func proseCode(all []corpusSample) []corpusSample {
	var out []corpusSample
	for _, s := range all {
		switch kind, _, _ := strings.Cut(s.Name, ":"); kind {
		case "go", "py", "js", "doc", "json":
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkEncodeNoCache is BenchmarkEncode with the word cache off: the raw pre-tokenizer + BPE speed.
func BenchmarkEncodeNoCache(b *testing.B) {
	tk := *loadReal(b) // a copy that shares the read-only tables
	tk.noCache = true
	benchEncode(b, &tk, loadCorpus(b))
}

func benchEncode(b *testing.B, tk *Tokenizer, samples []corpusSample) {
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

// BenchmarkEncodePrompt encodes one chat-sized prompt (about 1.5 KB of English and code) per
// iteration: the per-request cost in the gateway, allocations included.
func BenchmarkEncodePrompt(b *testing.B) {
	tk := loadReal(b)
	prompt := strings.Repeat("Write a Go function that parses RFC 3339 timestamps, handles time zones, "+
		"and returns an error for malformed input.\n\n```go\nfunc Parse(s string) (time.Time, error) {\n\treturn time.Parse(time.RFC3339, s)\n}\n```\n", 6)
	b.SetBytes(int64(len(prompt)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = len(tk.Encode(prompt, false))
	}
	b.ReportMetric(float64(n), "tokens")
}
