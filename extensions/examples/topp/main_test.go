package main

import (
	"testing"

	"github.com/dsgate/dsgate/extensions/sdk"
)

func BenchmarkNext(b *testing.B) {
	s := &TopP{}
	if err := s.Init([]byte(`{"top_p":0.9,"temperature":0.8}`), 1); err != nil {
		b.Fatal(err)
	}
	st := &sdk.Step{}
	for i := range 64 {
		st.Cands = append(st.Cands, sdk.Candidate{ID: int32(i), Logit: 10 - float32(i)*0.25})
	}
	for b.Loop() {
		if _, _, err := s.Next(st); err != nil {
			b.Fatal(err)
		}
	}
}

func TestInitRejects(t *testing.T) {
	for _, args := range []string{`{"top_p":0}`, `{"top_p":1.5}`, `{"temperature":-1}`, `not json`} {
		if err := (&TopP{}).Init([]byte(args), 1); err == nil {
			t.Errorf("Init(%s): no error", args)
		}
	}
}

func TestNucleus(t *testing.T) {
	s := &TopP{}
	if err := s.Init([]byte(`{"top_p":0.25}`), 7); err != nil {
		t.Fatal(err)
	}
	st := &sdk.Step{}
	for i := range 64 {
		st.Cands = append(st.Cands, sdk.Candidate{ID: int32(i), Logit: 1})
	}
	seen := map[int32]bool{}
	for range 500 {
		id, stop, err := s.Next(st)
		if err != nil || stop || id >= 16 {
			t.Fatalf("id %d stop %v err %v: outside the 16-candidate nucleus", id, stop, err)
		}
		seen[id] = true
	}
	if len(seen) != 16 {
		t.Errorf("drew %d distinct ids of 16", len(seen))
	}
}
