package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/gateway/api/adapt"
)

// instantEngine is a zero-cost engine: every request's tokens are ready at once, so a
// request's latency is exactly what the gateway adds (HTTP, JSON, template, tokenization,
// SSE framing, session bookkeeping).
type instantEngine struct{ tok api.Tokenizer }

func (e instantEngine) Stats() api.EngineStats { return api.EngineStats{} }

func (e instantEngine) Submit(ctx context.Context, req api.GenRequest) (<-chan api.GenEvent, error) {
	ch := make(chan api.GenEvent, req.MaxTokens)
	for i := 0; i < req.MaxTokens; i++ {
		id := int32(1000 + i)
		ev := api.GenEvent{Text: e.tok.Decode([]int32{id}, true), Tokens: []int32{id}}
		if i == req.MaxTokens-1 {
			ev.Finish = api.FinishLength
			ev.Usage = api.Usage{PromptTokens: len(req.Prompt), CompletionTokens: req.MaxTokens}
		}
		ch <- ev
	}
	close(ch)
	return ch, nil
}

func realTokenizer(tb testing.TB) api.Tokenizer {
	tb.Helper()
	env := map[string]string{"DSGATE_CACHE": os.Getenv("DSGATE_CACHE"), "HOME": os.Getenv("HOME")}
	tk, err := tokenizer.Load(tokenizer.DefaultDir(env))
	if err != nil {
		tb.Fatalf("the DeepSeek-V3 tokenizer is required (scripts/fetch-tokenizer.sh): %v", err)
	}
	return adapt.Tokenizer(tk)
}

func benchServer(b *testing.B) *httptest.Server {
	tok := realTokenizer(b)
	srv, err := api.New(api.Config{Engine: instantEngine{tok}, Tokenizer: tok, MaxSeqLen: 16384, APIKeys: []string{"k"}})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(ts.Close)
	return ts
}

var benchPrompt = []map[string]string{
	{"role": "system", "content": "You are a helpful assistant."},
	{"role": "user", "content": "Explain in two sentences why the sky is blue, and give one example of Rayleigh scattering in everyday life."},
}

// BenchmarkGatewayOverhead reports p50/p99 of the time the gateway adds on top of a
// zero-cost engine, per request, over loopback HTTP with keep-alive.
func BenchmarkGatewayOverhead(b *testing.B) {
	for _, c := range []struct {
		name      string
		stream    bool
		maxTokens int
	}{{"json_1tok", false, 1}, {"json_32tok", false, 32}, {"sse_32tok", true, 32}} {
		b.Run(c.name, func(b *testing.B) {
			ts := benchServer(b)
			body, _ := json.Marshal(map[string]any{"messages": benchPrompt, "max_tokens": c.maxTokens, "stream": c.stream})
			client := ts.Client()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				doReq(b, client, ts.URL, body)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkRequestsPerSecond is throughput at max_tokens 1 with 32 concurrent clients.
func BenchmarkRequestsPerSecond(b *testing.B) {
	ts := benchServer(b)
	body, _ := json.Marshal(map[string]any{"messages": benchPrompt, "max_tokens": 1})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	b.Cleanup(tr.CloseIdleConnections)
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(16) // 16 × GOMAXPROCS goroutines
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			doReq(b, client, ts.URL, body)
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	reportPercentiles(b, lat)
}

func doReq(b *testing.B, client *http.Client, url string, body []byte) {
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || (!strings.Contains(string(data), "[DONE]") && !strings.Contains(string(data), `"finish_reason":"length"`)) {
		b.Fatalf("%d %s", res.StatusCode, data)
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
