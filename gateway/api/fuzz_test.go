package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequestBodies sends arbitrary bodies to every JSON route: the answer is never a
// 500 and always well-formed (an OpenAI error object, or a success body).
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"stop":["x"],"max_tokens":1}`,
		`{"prompt":[1,2,3],"max_tokens":2,"logprobs":2}`,
		`{"prompt":"abc","max_tokens":1,"stream":true}`,
		`{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`,
		`{"system":"s","metadata":{"a":"b"}}`,
		`{"title":"t","metadata":{"k":null}}`,
		`[`, `null`, `{"n":2}`, `{"max_tokens":-1}`,
	} {
		f.Add(s)
	}
	h := newHarnessTB(f)
	id := "none"
	f.Fuzz(func(t *testing.T, body string) {
		for _, route := range []struct{ method, path string }{
			{"POST", "/v1/chat/completions"}, {"POST", "/v1/completions"}, {"POST", "/chat"},
			{"POST", "/v1/sessions"}, {"PATCH", "/v1/sessions/" + id},
		} {
			req := httptest.NewRequest(route.method, route.path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+keyA)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.srv.Handler().ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s %q: %d %s", route.method, route.path, body, rec.Code, rec.Body)
			}
			if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				var m map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
					t.Fatalf("%s %q: body is not JSON: %s", route.path, body, rec.Body)
				}
				if rec.Code >= 400 {
					if e, ok := m["error"].(map[string]any); !ok || e["code"] == "" {
						t.Fatalf("%s %q: no error object: %s", route.path, body, rec.Body)
					}
				}
			} else if rec.Code != http.StatusOK {
				t.Fatalf("%s %q: %d with Content-Type %q", route.path, body, rec.Code, rec.Header().Get("Content-Type"))
			}
		}
	})
}
