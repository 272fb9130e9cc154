package sample

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randLogits(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 3)
	}
	return l
}

// refDist is the textbook definition: softmax(l/T) over all tokens, full sort,
// keep top-k, then the smallest prefix with mass >= top_p, then drop p < min_p * p_max.
func refDist(p Params, logits []float32) map[int32]float64 {
	ids := make([]int32, len(logits))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortFunc(ids, func(a, b int32) int { return cmpCand(logits, a, b) })
	probs := make([]float64, len(ids))
	var sum float64
	for i, id := range ids {
		probs[i] = math.Exp(float64(logits[id]) / float64(p.Temperature))
		sum += probs[i]
	}
	if p.TopK > 0 && p.TopK < len(ids) {
		ids, probs = ids[:p.TopK], probs[:p.TopK]
		sum = 0
		for _, x := range probs {
			sum += x
		}
	}
	if p.TopP > 0 && p.TopP < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i]
			if cum >= float64(p.TopP)*sum {
				ids, probs = ids[:i+1], probs[:i+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		for len(ids) > 1 && probs[len(ids)-1] < float64(p.MinP)*probs[0] {
			ids, probs = ids[:len(ids)-1], probs[:len(ids)-1]
		}
	}
	out := map[int32]float64{}
	var tot float64
	for _, x := range probs {
		tot += x
	}
	for i, id := range ids {
		out[id] = probs[i] / tot
	}
	return out
}

func TestDistMatchesReference(t *testing.T) {
	cases := []struct {
		name string
		p    Params
	}{
		{"temperature", Params{Temperature: 1}},
		{"hot", Params{Temperature: 2.5}},
		{"topk-minp", Params{Temperature: 1, TopK: 50, MinP: 0.2}},
		{"topk-topp", Params{Temperature: 1, TopK: 50, TopP: 0.5}},
		{"topk", Params{Temperature: 1, TopK: 7}},
		{"topp", Params{Temperature: 0.7, TopP: 0.9}},
		{"topp-tight", Params{Temperature: 1, TopP: 0.1}},
		{"minp", Params{Temperature: 1, MinP: 0.05}},
		{"all", Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.02}},
		{"topp+minp", Params{Temperature: 1.3, TopP: 0.8, MinP: 0.1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(0); seed < 20; seed++ {
				logits := randLogits(seed, 500)
				want := refDist(tc.p, logits)
				s := NewSampler(tc.p, 1, nil)
				ids, w := s.dist(logits)
				var tot float64
				for _, x := range w {
					tot += x
				}
				if len(ids) != len(want) {
					t.Fatalf("seed %d: %d candidates, want %d", seed, len(ids), len(want))
				}
				for i, id := range ids {
					if math.Abs(w[i]/tot-want[id]) > 1e-9 {
						t.Fatalf("seed %d: p(%d) = %v, want %v", seed, id, w[i]/tot, want[id])
					}
				}
			}
		})
	}
}

func TestSampleFrequencies(t *testing.T) {
	logits := []float32{2, 1, 0.5, 0, -1, -3}
	p := Params{Temperature: 1}
	want := refDist(p, logits)
	s := NewSampler(p, 42, nil)
	const n = 100000
	counts := map[int32]int{}
	for range n {
		counts[s.choose(slices.Clone(logits))]++
	}
	for id, pr := range want {
		got := float64(counts[id]) / n
		if sd := math.Sqrt(pr * (1 - pr) / n); math.Abs(got-pr) > 5*sd+1e-4 {
			t.Errorf("token %d: frequency %.4f, want %.4f", id, got, pr)
		}
	}
}

func TestGreedyAndDegenerateSettings(t *testing.T) {
	logits := []float32{0.5, 3, 3, -1, 2.9}
	cases := []struct {
		name string
		p    Params
	}{
		{"greedy", Params{}},
		{"topk1", Params{Temperature: 1, TopK: 1}},
		{"topp-min", Params{Temperature: 1, TopP: 1e-6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSampler(tc.p, 7, nil)
			for range 50 {
				// ties resolve to the lowest id (spec §6.3)
				if got := s.choose(slices.Clone(logits)); got != 1 {
					t.Fatalf("got %d, want 1", got)
				}
			}
		})
	}
	s := NewSampler(Params{Temperature: 1, MinP: 1}, 7, nil)
	for range 50 {
		if got := s.choose([]float32{0.5, 3, 2.99, -1}); got != 1 {
			t.Fatalf("min_p 1: got %d, want 1", got)
		}
	}
	if got := Argmax([]float32{float32(math.NaN()), 1, 2, 2}); got != 2 {
		t.Fatalf("Argmax with NaN = %d, want 2", got)
	}
}

func TestSeedReproducible(t *testing.T) {
	p := Params{Temperature: 1, TopP: 0.95}
	run := func(seed uint64) []int32 {
		s := NewSampler(p, seed, nil)
		var out []int32
		for i := range 64 {
			out = append(out, s.Sample(randLogits(uint64(i), 300)))
		}
		return out
	}
	a, b, c := run(5), run(5), run(6)
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different tokens")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave the same 64 tokens")
	}
}

func TestPenalties(t *testing.T) {
	cases := []struct {
		name   string
		p      Params
		prompt []int32
		output []int32
		want   []float32
	}{
		{"none", Params{}, []int32{0, 1}, []int32{2}, []float32{2, -2, 1, 0.5}},
		{"repetition", Params{RepetitionPenalty: 2}, []int32{0, 1}, []int32{2}, []float32{1, -4, 0.5, 0.5}},
		{"presence", Params{PresencePenalty: 0.5}, []int32{0}, []int32{2, 2, 3}, []float32{2, -2, 0.5, 0}},
		{"frequency", Params{FrequencyPenalty: 0.25}, []int32{0}, []int32{2, 2, 3}, []float32{2, -2, 0.5, 0.25}},
		{"both", Params{PresencePenalty: 1, FrequencyPenalty: 1}, nil, []int32{1, 1}, []float32{2, -5, 1, 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSampler(tc.p, 0, tc.prompt)
			for _, id := range tc.output {
				s.Accept(id)
			}
			l := []float32{2, -2, 1, 0.5}
			s.Penalize(l)
			if !slices.Equal(l, tc.want) {
				t.Fatalf("got %v, want %v", l, tc.want)
			}
		})
	}
}

func TestTopNAndLogprobs(t *testing.T) {
	logits := randLogits(3, 1000)
	logits[10], logits[11] = 50, 50
	top := TopN(logits, 5)
	ids := make([]int32, len(logits))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortFunc(ids, func(a, b int32) int { return cmpCand(logits, a, b) })
	for i, c := range top {
		if c.ID != ids[i] || c.Logit != logits[ids[i]] {
			t.Fatalf("TopN[%d] = %+v, want id %d", i, c, ids[i])
		}
	}
	if top[0].ID != 10 || top[1].ID != 11 {
		t.Fatalf("ties not by ascending id: %+v", top[:2])
	}
	lp := Logprobs([]float32{0, 0, float32(math.Log(2))}, 2, 2)
	if math.Abs(float64(lp.Logprob)-math.Log(0.5)) > 1e-6 || len(lp.Top) != 2 || lp.Top[0].ID != 2 || lp.Top[1].ID != 0 {
		t.Fatalf("Logprobs = %+v", lp)
	}
	if math.Abs(float64(lp.Top[1].Logprob)-math.Log(0.25)) > 1e-6 {
		t.Fatalf("top logprob %v, want log(0.25)", lp.Top[1].Logprob)
	}
}

type fixedPolicy struct {
	id    int32
	stop  bool
	err   error
	cands []Candidate
	step  int
}

func (f *fixedPolicy) Next(_ context.Context, step int, _ []int32, cands []Candidate) (int32, bool, error) {
	f.cands, f.step = slices.Clone(cands), step
	return f.id, f.stop, f.err
}
func (f *fixedPolicy) Close() error { return nil }

func TestSampleWithPolicy(t *testing.T) {
	logits := randLogits(9, 200)
	cases := []struct {
		name    string
		pol     *fixedPolicy
		wantErr bool
		stop    bool
	}{
		{"ok", &fixedPolicy{id: TopN(logits, 3)[2].ID}, false, false},
		{"stop", &fixedPolicy{stop: true}, false, true},
		{"not-a-candidate", &fixedPolicy{id: -1}, true, false},
		{"error", &fixedPolicy{err: errors.New("trap")}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSampler(Params{}, 0, nil)
			id, stop, err := s.SampleWith(context.Background(), tc.pol, 0, slices.Clone(logits))
			if (err != nil) != tc.wantErr || stop != tc.stop {
				t.Fatalf("id %d stop %v err %v", id, stop, err)
			}
			if len(tc.pol.cands) != DefaultPolicyTopN {
				t.Fatalf("policy saw %d candidates", len(tc.pol.cands))
			}
			if !tc.wantErr && !tc.stop && (id != tc.pol.id || s.Generated() != 1) {
				t.Fatalf("id %d generated %d", id, s.Generated())
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := []Params{{Temperature: -1}, {TopP: 1.5}, {TopK: -1}, {MinP: 2}, {PresencePenalty: 3}, {FrequencyPenalty: -3}, {RepetitionPenalty: -1}, {Temperature: float32(math.NaN())}}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("%+v: err %v", p, err)
		}
	}
	if err := (Params{Temperature: 0.7, TopP: 0.9, TopK: 50, MinP: 0.1, RepetitionPenalty: 1.1}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSample(b *testing.B) {
	logits := randLogits(1, 129280)
	for _, tc := range []struct {
		name string
		p    Params
	}{{"greedy", Params{}}, {"topp", Params{Temperature: 0.7, TopP: 0.9}}, {"topk", Params{Temperature: 1, TopK: 50}}} {
		b.Run(tc.name, func(b *testing.B) {
			s := NewSampler(tc.p, 1, nil)
			buf := make([]float32, len(logits))
			for b.Loop() {
				copy(buf, logits)
				s.Sample(buf)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
