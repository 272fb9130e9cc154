package extensions

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// reportLatency reports the p50 and p99 of the per-call latencies in µs.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "µs-p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "µs-p99")
}

// BenchmarkSamplerStep is the per-token overhead of a WASM sampler at N = 64 candidates and 64
// recent ids: encoding the step, the guest call under its own deadline, and the checks. Goal:
// ≤ 10 µs p50. greedy-wat measures the host's overhead alone (the guest does one load);
// minimal-go adds the Go SDK's entry and decoding (a greedy Go sampler); topp-go adds a real
// policy (64 exps in Go-compiled WebAssembly).
func BenchmarkSamplerStep(b *testing.B) {
	h := newHost(b, Options{})
	mustAdd(b, h, "greedy-wat", KindSampler, fixtures.wat["greedy"])
	mustAdd(b, h, "topp-go", KindSampler, fixtures.examples["topp"])
	mustAdd(b, h, "minimal-go", KindSampler, fixtures.examples["bannedwords"]) // nothing banned: greedy
	c := cands(64, 1000)
	recent := make([]int32, 64)
	for _, name := range []string{"greedy-wat", "minimal-go", "topp-go"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			p, err := h.NewSampler(ctx, name, json.RawMessage(`{"top_p":0.9,"temperature":0.8}`), 1)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, _, err := p.Next(ctx, i, recent, c); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

// BenchmarkTemplateRender is one RenderTemplate of a 4-message chat with the DeepSeek-V3
// example (Go guest): taking a fresh instance, the JSON round trip and the render. "pooled"
// waits for the pool to refill between calls (the usual case at moderate load); "sustained"
// calls back to back, so most calls instantiate synchronously.
func BenchmarkTemplateRender(b *testing.B) {
	h := newHost(b, Options{PoolSize: 2})
	mustAdd(b, h, "dsv3", KindTemplate, fixtures.examples["dsv3template"])
	m, _ := h.lookup("dsv3", KindTemplate)
	in := TemplateInput{BOSToken: "<｜begin▁of▁sentence｜>", EOSToken: "<｜end▁of▁sentence｜>", AddGenerationPrompt: true,
		Messages: []Message{{Role: "system", Content: "You are a helpful assistant."}, {Role: "user", Content: "What is MLA?"},
			{Role: "assistant", Content: "Multi-head latent attention compresses the KV cache."}, {Role: "user", Content: "How much smaller is it?"}}}
	for _, mode := range []string{"pooled", "sustained"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				if mode == "pooled" {
					b.StopTimer()
					for len(m.ready) < cap(m.ready) {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
				t0 := time.Now()
				if _, err := h.RenderTemplate(ctx, "dsv3", in); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkUpload is upload-to-ready (Add: validate, compile, start a trial instance) of the
// top-p example (a ~3 MB Go guest), with an empty compilation cache and with a warm one.
func BenchmarkUpload(b *testing.B) {
	bin := fixtures.examples["topp"]
	warmDir := b.TempDir()
	for _, mode := range []string{"cold-cache", "warm-cache"} {
		b.Run(mode, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cache := warmDir
				if mode == "cold-cache" {
					cache = b.TempDir()
				}
				h, err := Open(context.Background(), Options{Dir: b.TempDir(), CacheDir: cache})
				if err != nil {
					b.Fatal(err)
				}
				if mode == "warm-cache" && i == 0 { // fill the cache once, untimed
					if _, err := h.Add(context.Background(), "warmup", KindSampler, bin); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				t0 := time.Now()
				if _, err := h.Add(context.Background(), "topp", KindSampler, bin); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				b.StopTimer()
				_ = h.Close(context.Background())
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/upload")
		})
	}
}
