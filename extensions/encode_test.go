package extensions

import (
	"testing"

	"github.com/dsgate/dsgate/core/sample"
	"github.com/dsgate/dsgate/extensions/sdk"
)

// TestEncodeStepMatchesSDK: what the host writes is what the Go SDK reads.
func TestEncodeStepMatchesSDK(t *testing.T) {
	tests := []struct {
		step   int
		seed   uint64
		recent []int32
		cands  []sample.Candidate
	}{
		{0, 0, nil, []sample.Candidate{{ID: 1, Logit: 2}}},
		{41, 1<<64 - 1, []int32{7, 8, 9}, cands(64, 128000)},
	}
	for _, tt := range tests {
		b := make([]byte, samplerHeaderBytes+4*len(tt.recent)+samplerCandBytes*len(tt.cands))
		encodeStep(b, tt.step, tt.seed, tt.recent, tt.cands)
		var s sdk.Step
		if err := sdk.DecodeStep(b, &s); err != nil {
			t.Fatal(err)
		}
		if s.Step != tt.step || s.Seed != tt.seed || len(s.Recent) != len(tt.recent) || len(s.Cands) != len(tt.cands) {
			t.Fatalf("decoded %+v", s)
		}
		for i, c := range tt.cands {
			if s.Cands[i].ID != c.ID || s.Cands[i].Logit != c.Logit {
				t.Fatalf("candidate %d: %+v, want %+v", i, s.Cands[i], c)
			}
		}
		for i, id := range tt.recent {
			if s.Recent[i] != id {
				t.Fatalf("recent %d: %d, want %d", i, s.Recent[i], id)
			}
		}
	}
}

// FuzzAdd: arbitrary bytes never panic the validator; they are refused or accepted cleanly.
func FuzzAdd(f *testing.F) {
	f.Add([]byte("not wasm"))
	f.Add([]byte{0, 'a', 's', 'm', 1, 0, 0, 0})
	f.Add(fixtures.wat["greedy"])
	f.Add(fixtures.wat["pathopen"])
	h := newHost(f, Options{CallTimeout: 50 * 1e6})
	n := 0
	f.Fuzz(func(t *testing.T, b []byte) {
		n++
		name := "m" + string(rune('a'+n%26)) + string(rune('a'+n/26%26))
		if _, err := h.Add(t.Context(), name, KindSampler, b); err == nil {
			_ = h.Delete(name)
		}
	})
}
