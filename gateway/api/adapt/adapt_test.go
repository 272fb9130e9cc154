package adapt_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/gateway/api/adapt"
	"github.com/dsgate/dsgate/sessions"
)

// testCkpt is core/model's small HF-format checkpoint (vocab 512, context 128).
const testCkpt = "../../../core/model/testdata/v3"

// realStack serves the API over the real engine, model and tokenizer.
func realStack(t *testing.T) (*httptest.Server, *engine.Engine) {
	t.Helper()
	cfg, err := configs.FromCheckpoint(testCkpt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(context.Background(), testCkpt, cfg, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	tk, err := tokenizer.Load(tokenizer.DefaultDir(map[string]string{"DSGATE_CACHE": os.Getenv("DSGATE_CACHE"), "HOME": os.Getenv("HOME")}))
	if err != nil {
		t.Fatalf("the DeepSeek-V3 tokenizer is required (scripts/fetch-tokenizer.sh): %v", err)
	}
	eng, err := engine.New(m, engine.Options{MaxBatchSize: 4, EOS: []int32{tk.EOS()},
		NewTextStream: func() engine.TextStream { return tk.NewStreamDecoder(true) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	srv, err := api.New(api.Config{Engine: adapt.Engine(eng), Tokenizer: adapt.Tokenizer(tk),
		Sessions: adapt.Sessions(sessions.NewMemory(sessions.Options{})), MaxSeqLen: eng.MaxSeqLen()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, eng
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func TestRealEngine(t *testing.T) {
	ts, eng := realStack(t)
	req := `{"prompt":[3,14,15,92,65],"max_tokens":12,"temperature":0.9,"seed":42,"logprobs":2}`
	code, body := post(t, ts.URL+"/v1/completions", req)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var cp struct {
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
			Logprobs     struct {
				Tokens      []string             `json:"tokens"`
				TopLogprobs []map[string]float64 `json:"top_logprobs"`
			} `json:"logprobs"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(body, &cp); err != nil {
		t.Fatal(err)
	}
	c := cp.Choices[0]
	if cp.Usage.PromptTokens != 5 || cp.Usage.CompletionTokens == 0 || len(c.Logprobs.Tokens) != cp.Usage.CompletionTokens || len(c.Logprobs.TopLogprobs[0]) == 0 {
		t.Fatalf("completion: %s", body)
	}
	// same seed, streamed: the same text
	code, sbody := post(t, ts.URL+"/v1/completions", strings.Replace(req, `"logprobs":2`, `"stream":true`, 1))
	if code != 200 {
		t.Fatalf("%d %s", code, sbody)
	}
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(sbody))
	for sc.Scan() {
		line := strings.TrimPrefix(sc.Text(), "data: ")
		if line == "" || line == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct{ Text string } `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Text)
		}
	}
	if text.String() != c.Text {
		t.Fatalf("streamed %q, non-streamed %q", text.String(), c.Text)
	}
	// engine errors map to stable codes
	long := strings.Repeat("7,", eng.MaxSeqLen()) + "7"
	for _, tc := range []struct {
		body, code string
		status     int
	}{
		{`{"prompt":[` + long + `]}`, api.CodeContextLengthExceeded, 400},
		{`{"prompt":[600,601],"max_tokens":2}`, api.CodeInvalidRequest, 400}, // outside the 512-token vocabulary
		{`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`, api.CodeInvalidRequest, 400},
	} {
		path := "/v1/completions"
		if strings.Contains(tc.body, "messages") {
			path = "/v1/chat/completions"
		}
		code, b := post(t, ts.URL+path, tc.body)
		if code != tc.status || !strings.Contains(string(b), `"code":"`+tc.code+`"`) {
			t.Fatalf("%s: %d %s", tc.body[:min(40, len(tc.body))], code, b)
		}
	}
	res, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(m), "dsgate_engine_steps_total") || strings.Contains(string(m), "dsgate_engine_generated_tokens_total 0\n") {
		t.Fatalf("engine metrics: %s", m)
	}
}
