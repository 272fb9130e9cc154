package sample

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// DefaultPolicyTopN is the number of candidates handed to a Policy when the request
// does not say.
const DefaultPolicyTopN = 64

// MaxTopLogprobs bounds Params-independent top_logprobs requests (OpenAI allows 20).
const MaxTopLogprobs = 20

// recentWindow bounds the history handed to a Policy as "recent".
const recentWindow = 64

// Params are the built-in sampling settings of one request. The zero value is greedy
// decoding without penalties.
type Params struct {
	// Temperature divides the logits before the softmax; 0 selects greedy decoding
	// (argmax, lowest id on ties, spec §6.3).
	Temperature float32
	// TopP keeps the smallest set of most likely tokens whose probability mass
	// reaches TopP (nucleus sampling); 0 or 1 disables it.
	TopP float32
	// TopK keeps the K most likely tokens; 0 disables it.
	TopK int
	// MinP drops tokens whose probability is below MinP times the most likely
	// token's probability; 0 disables it.
	MinP float32
	// RepetitionPenalty (CTRL / Hugging Face convention) divides positive and
	// multiplies negative logits of every token seen in the prompt or the output;
	// 0 or 1 disables it.
	RepetitionPenalty float32
	// PresencePenalty (OpenAI convention) is subtracted once from the logit of every
	// token that already occurs in the output.
	PresencePenalty float32
	// FrequencyPenalty (OpenAI convention) is subtracted from a token's logit once per
	// occurrence in the output.
	FrequencyPenalty float32
	// Seed, when set, seeds the request's own random generator, so that the same seed
	// gives the same tokens whatever else shares the batch.
	Seed *uint64
}

// ErrInvalidParams reports sampling parameters out of range.
var ErrInvalidParams = errors.New("invalid sampling parameters")

// Validate checks the ranges of p (the OpenAI ranges where OpenAI defines one).
func (p Params) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidParams}, args...)...)
	}
	switch {
	case !finite(p.Temperature) || p.Temperature < 0 || p.Temperature > 100:
		return bad("temperature %v not in [0, 100]", p.Temperature)
	case !finite(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return bad("top_p %v not in [0, 1]", p.TopP)
	case p.TopK < 0:
		return bad("top_k %d is negative", p.TopK)
	case !finite(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return bad("min_p %v not in [0, 1]", p.MinP)
	case !finite(p.RepetitionPenalty) || p.RepetitionPenalty < 0 || p.RepetitionPenalty > 10:
		return bad("repetition_penalty %v not in [0, 10]", p.RepetitionPenalty)
	case !finite(p.PresencePenalty) || p.PresencePenalty < -2 || p.PresencePenalty > 2:
		return bad("presence_penalty %v not in [-2, 2]", p.PresencePenalty)
	case !finite(p.FrequencyPenalty) || p.FrequencyPenalty < -2 || p.FrequencyPenalty > 2:
		return bad("frequency_penalty %v not in [-2, 2]", p.FrequencyPenalty)
	}
	return nil
}

func finite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

// TokenLogprob is the log-probability of one sampled token and, when asked for, of the
// most likely alternatives at that position.
type TokenLogprob struct {
	// ID is the token id.
	ID int32
	// Logprob is the natural log of the token's probability under the model's raw
	// distribution (log-softmax of the logits before penalties and temperature, as
	// OpenAI and vLLM report it).
	Logprob float32
	// Top holds the TopLogprobs most likely tokens at this position, most likely
	// first (their own Top is nil); nil when none were requested.
	Top []TokenLogprob
}

// Sampler picks the next token of one sequence. It keeps that sequence's random
// generator and token counts, so it must not be shared between sequences; it is not
// safe for concurrent use.
type Sampler struct {
	p   Params
	rng *rand.Rand
	// seen marks every token of the prompt and the output (repetition penalty).
	seen map[int32]struct{}
	// counts counts every token of the output (presence / frequency penalties).
	counts map[int32]int
	// output holds the generated ids (recent history for a Policy).
	output []int32
	// scratch buffers reused across calls.
	idx   []int32
	probs []float64
	w     []float64
}

// NewSampler returns a sampler for one sequence with prompt ids prompt. seed seeds the
// sequence's random generator; callers pass *p.Seed when it is set and a fresh
// random value otherwise.
func NewSampler(p Params, seed uint64, prompt []int32) *Sampler {
	s := &Sampler{
		p:      p,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		counts: map[int32]int{},
	}
	if p.RepetitionPenalty > 0 && p.RepetitionPenalty != 1 {
		s.seen = make(map[int32]struct{}, len(prompt))
		for _, id := range prompt {
			s.seen[id] = struct{}{}
		}
	}
	return s
}

// Accept records id as generated (penalties and Policy history). Sample calls it for
// the token it returns; callers only call it for tokens chosen elsewhere.
func (s *Sampler) Accept(id int32) {
	s.counts[id]++
	if s.seen != nil {
		s.seen[id] = struct{}{}
	}
	s.output = append(s.output, id)
}

// Generated returns the number of tokens accepted so far.
func (s *Sampler) Generated() int { return len(s.output) }

// Recent returns the last generated ids, oldest first (at most 64). The slice aliases
// the sampler's history and is valid until the next Accept.
func (s *Sampler) Recent() []int32 {
	if len(s.output) > recentWindow {
		return s.output[len(s.output)-recentWindow:]
	}
	return s.output
}

// Logprobs returns the log-probability of id under the raw logits and, if top > 0,
// the top most likely alternatives. Call it before Penalize, which changes logits.
func Logprobs(logits []float32, id int32, top int) TokenLogprob {
	lse := logSumExp(logits)
	out := TokenLogprob{ID: id, Logprob: float32(float64(logits[id]) - lse)}
	if top > 0 {
		for _, c := range TopN(logits, top) {
			out.Top = append(out.Top, TokenLogprob{ID: c.ID, Logprob: float32(float64(c.Logit) - lse)})
		}
	}
	return out
}

// Penalize applies the repetition, presence and frequency penalties to logits in place.
func (s *Sampler) Penalize(logits []float32) {
	if s.seen != nil {
		rp := s.p.RepetitionPenalty
		for id := range s.seen {
			if int(id) < 0 || int(id) >= len(logits) {
				continue
			}
			if logits[id] > 0 {
				logits[id] /= rp
			} else {
				logits[id] *= rp
			}
		}
	}
	if s.p.PresencePenalty != 0 || s.p.FrequencyPenalty != 0 {
		for id, n := range s.counts {
			if int(id) < 0 || int(id) >= len(logits) {
				continue
			}
			logits[id] -= s.p.PresencePenalty + s.p.FrequencyPenalty*float32(n)
		}
	}
}

// Sample applies the penalties to logits (in place), chooses the next token with the
// built-in samplers and records it with Accept.
func (s *Sampler) Sample(logits []float32) int32 {
	s.Penalize(logits)
	id := s.choose(logits)
	s.Accept(id)
	return id
}

// SampleWith lets policy choose the next token from the topN (default 64) candidates
// of the penalised logits (modified in place). It records the token with Accept unless
// the policy stops the sequence. The chosen id must be one of the candidates.
func (s *Sampler) SampleWith(ctx context.Context, policy Policy, topN int, logits []float32) (id int32, stop bool, err error) {
	if topN <= 0 {
		topN = DefaultPolicyTopN
	}
	s.Penalize(logits)
	cands := TopN(logits, topN)
	id, stop, err = policy.Next(ctx, len(s.output), s.Recent(), cands)
	if err != nil {
		return 0, false, fmt.Errorf("sampler policy at step %d: %w", len(s.output), err)
	}
	if stop {
		return 0, true, nil
	}
	if !slices.ContainsFunc(cands, func(c Candidate) bool { return c.ID == id }) {
		return 0, false, fmt.Errorf("sampler policy at step %d: chose id %d, not one of the %d candidates", len(s.output), id, len(cands))
	}
	s.Accept(id)
	return id, false, nil
}

// choose picks a token from penalised logits.
func (s *Sampler) choose(logits []float32) int32 {
	if s.p.Temperature == 0 {
		return Argmax(logits)
	}
	ids, w := s.dist(logits)
	var total float64
	for _, x := range w {
		total += x
	}
	r := s.rng.Float64() * total
	for i, x := range w {
		r -= x
		if r < 0 {
			return ids[i]
		}
	}
	return ids[len(ids)-1]
}

// dist returns the candidates that survive top-k, top-p and min-p (in that order)
// with their unnormalised probabilities (the best token's = 1). With top-k or top-p
// they are sorted by descending logit, otherwise they are in id order (no sort is
// needed to draw from them). The slices alias the sampler's scratch buffers.
func (s *Sampler) dist(logits []float32) ([]int32, []float64) {
	p := s.p
	maxL := float64(logits[Argmax(logits)])
	invT := 1 / float64(p.Temperature)
	weight := func(l float32) float64 { return math.Exp((float64(l) - maxL) * invT) }
	topP := p.TopP > 0 && p.TopP < 1
	s.idx, s.probs = s.idx[:0], s.probs[:0]
	mass := 0.0 // the whole distribution's weight, against which top-p is measured
	if p.TopK > 0 && p.TopK < len(logits) {
		for _, c := range TopN(logits, p.TopK) {
			w := weight(c.Logit)
			s.idx, s.probs = append(s.idx, c.ID), append(s.probs, w)
			mass += w
		}
	} else {
		// One exp per token. A token below the floor can never be chosen: min-p drops
		// it, or, for top-p, every token with weight below (1-top_p)/V of the total
		// together holds less than 1-top_p, so the nucleus ends before reaching them.
		if cap(s.w) < len(logits) {
			s.w = make([]float64, len(logits))
		}
		w := s.w[:len(logits)]
		for i, l := range logits {
			w[i] = weight(l)
			mass += w[i]
		}
		floor := float64(p.MinP)
		if topP {
			floor = math.Max(floor, (1-float64(p.TopP))/float64(len(logits))*mass)
		}
		for i, x := range w {
			if x >= floor && x == x {
				s.idx = append(s.idx, int32(i))
			}
		}
		if topP {
			slices.SortFunc(s.idx, func(a, b int32) int { return cmpCand(logits, a, b) })
		}
		for _, id := range s.idx {
			s.probs = append(s.probs, w[id])
		}
	}
	n := len(s.idx)
	if topP {
		var cum float64
		for i := 0; i < n; i++ {
			cum += s.probs[i]
			if cum >= float64(p.TopP)*mass {
				n = i + 1
				break
			}
		}
	}
	if p.MinP > 0 && (p.TopK > 0 || topP) {
		// sorted: drop the tail below min_p (the best token's weight is 1).
		for n > 1 && s.probs[n-1] < float64(p.MinP) {
			n--
		}
	}
	return s.idx[:n], s.probs[:n]
}

// cmpCand orders ids by descending logit, then ascending id.
func cmpCand(logits []float32, a, b int32) int {
	switch {
	case logits[a] > logits[b]:
		return -1
	case logits[a] < logits[b]:
		return 1
	}
	return int(a - b)
}

// Argmax returns the index of the largest logit, the lowest index on ties (spec §6.3).
// NaN logits are never chosen unless every logit is NaN.
func Argmax(logits []float32) int32 {
	best, bv := -1, float32(math.Inf(-1))
	for i, l := range logits {
		if l > bv { // false for NaN; strict, so the lowest index wins ties
			best, bv = i, l
		}
	}
	if best < 0 { // every logit is -Inf or NaN
		for i, l := range logits {
			if l == l {
				return int32(i)
			}
		}
		return 0
	}
	return int32(best)
}

// TopN returns the n candidates with the largest logits, sorted by descending logit
// (ascending id on ties). NaN logits are skipped.
func TopN(logits []float32, n int) []Candidate {
	if n > len(logits) {
		n = len(logits)
	}
	if n <= 0 {
		return nil
	}
	// A min-heap of the best n seen so far, ordered worst first.
	h := make([]int32, 0, n)
	worse := func(a, b int32) bool { return cmpCand(logits, a, b) > 0 }
	down := func(i int) {
		for {
			l, m := 2*i+1, i
			if l < len(h) && worse(h[l], h[m]) {
				m = l
			}
			if r := l + 1; r < len(h) && worse(h[r], h[m]) {
				m = r
			}
			if m == i {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i, l := range logits {
		if l != l {
			continue
		}
		id := int32(i)
		if len(h) < n {
			h = append(h, id)
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if !worse(h[j], h[p]) {
					break
				}
				h[j], h[p] = h[p], h[j]
				j = p
			}
			continue
		}
		if worse(h[0], id) {
			h[0] = id
			down(0)
		}
	}
	slices.SortFunc(h, func(a, b int32) int { return cmpCand(logits, a, b) })
	out := make([]Candidate, len(h))
	for i, id := range h {
		out[i] = Candidate{ID: id, Logit: logits[id]}
	}
	return out
}

func logSumExp(logits []float32) float64 {
	maxL := math.Inf(-1)
	for _, l := range logits {
		if float64(l) > maxL {
			maxL = float64(l)
		}
	}
	if math.IsInf(maxL, -1) {
		return maxL
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l) - maxL)
	}
	return maxL + math.Log(sum)
}
