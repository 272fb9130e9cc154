package sdk

import (
	"reflect"
	"testing"
)

func TestStepRoundTrip(t *testing.T) {
	tests := []Step{
		{Step: 0, Seed: 0, Recent: nil, Cands: []Candidate{{ID: 5, Logit: 1.5}}},
		{Step: 7, Seed: 1<<63 + 3, Recent: []int32{1, 2, 3}, Cands: []Candidate{{9, 3}, {2, -1e30}, {129279, 0}}},
	}
	for _, want := range tests {
		var got Step
		if err := DecodeStep(EncodeStep(&want), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
}

func TestDecodeStepRejects(t *testing.T) {
	good := EncodeStep(&Step{Recent: []int32{1}, Cands: []Candidate{{1, 1}}})
	tests := map[string][]byte{
		"short":           good[:10],
		"truncated":       good[:len(good)-1],
		"trailing":        append(append([]byte{}, good...), 0),
		"huge count":      append([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}, good[8:]...),
		"negative counts": append([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, good[8:]...),
	}
	for name, b := range tests {
		var s Step
		if err := DecodeStep(b, &s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzDecodeStep(f *testing.F) {
	f.Add(EncodeStep(&Step{Step: 3, Seed: 9, Recent: []int32{4}, Cands: []Candidate{{1, 2}, {3, 4}}}))
	f.Add([]byte{})
	f.Add(make([]byte, StepHeaderBytes))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Step
		if err := DecodeStep(b, &s); err != nil {
			return
		}
		if again := EncodeStep(&s); string(again[:12]) != string(b[:12]) || string(again[16:]) != string(b[16:]) {
			t.Fatalf("re-encoding differs")
		}
	})
}
