package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeSSE streams n content chunks and a usage chunk, OpenAI style.
func fakeSSE(n int, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req["stream"] != true {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < n; i++ {
			time.Sleep(delay)
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t%d\"}}]}\n\n", i)
			w.(http.Flusher).Flush()
		}
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n", n)
	})
}

func TestBenchReportsSaneFigures(t *testing.T) {
	srv := httptest.NewServer(fakeSSE(5, 2*time.Millisecond))
	defer srv.Close()
	for _, rate := range []float64{0, 200} {
		cfg := benchConfig{url: srv.URL, apiKey: "k", requests: 12, concurrency: 3, rate: rate, promptTokens: 8, maxTokens: 5, duration: time.Minute, seed: 1}
		rep := benchRun(context.Background(), cfg, srv.Client())
		if rep.Failed != 0 {
			t.Fatalf("rate %v: %d failed: %s", rate, rep.Failed, rep.FirstError)
		}
		if rep.OutputTokens != 60 {
			t.Errorf("rate %v: output tokens %d, want 60", rate, rep.OutputTokens)
		}
		if rep.TTFTms["p50"] < 1 || rep.TPOTms["p50"] < 1 || rep.E2Ems["p99"] < rep.TTFTms["p50"] {
			t.Errorf("rate %v: implausible latencies %+v", rate, rep)
		}
		if rep.RequestsPerSec <= 0 || rep.OutputTokPerSec <= 0 {
			t.Errorf("rate %v: zero throughput %+v", rate, rep)
		}
	}
}

func TestBenchCountsErrors(t *testing.T) {
	srv := httptest.NewServer(fakeSSE(1, 0))
	defer srv.Close()
	rep := benchRun(context.Background(), benchConfig{url: srv.URL, apiKey: "wrong", requests: 3, concurrency: 2, promptTokens: 4, maxTokens: 1, duration: time.Minute}, srv.Client())
	if rep.Failed != 3 || !strings.Contains(rep.FirstError, "401") {
		t.Fatalf("want 3 failures with HTTP 401, got %+v", rep)
	}
}

func TestBenchCommandJSON(t *testing.T) {
	srv := httptest.NewServer(fakeSSE(3, 0))
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--url", srv.URL, "--api-key", "k", "--requests", "4", "--concurrency", "2", "--json"}, &cmdEnv{stdout: &out, stderr: &errb, environ: map[string]string{}})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad JSON %q: %v", out.String(), err)
	}
	if rep.Requests != 4 || rep.OutputTokens != 12 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBenchTarget(t *testing.T) {
	for _, tc := range []struct {
		url    string
		remote bool
		ok     bool
	}{
		{"http://127.0.0.1:8080", false, true},
		{"http://localhost:1", false, true},
		{"http://[::1]:8080", false, true},
		{"http://10.0.0.1:8080", false, false},
		{"http://example.com", false, false},
		{"http://example.com", true, true},
		{"ftp://127.0.0.1", false, false},
		{"not a url", false, false},
	} {
		if err := checkBenchTarget(tc.url, tc.remote); (err == nil) != tc.ok {
			t.Errorf("checkBenchTarget(%q, %v) = %v", tc.url, tc.remote, err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i)
	}
	p := percentiles(xs)
	if p["p50"] != 50 || p["p90"] != 90 || p["p99"] != 99 || p["mean"] != 50.5 {
		t.Fatalf("percentiles %v", p)
	}
}
