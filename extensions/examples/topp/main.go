// Command topp is an example sampler extension: nucleus (top-p) sampling with temperature.
//
// sampler_args: {"top_p": 0.9, "temperature": 0.7, "stop_ids": [1]} (all optional; defaults
// top_p 1, temperature 1, no stop ids). Temperature 0 is greedy. Draws come from a PCG generator
// seeded with the request seed, so a request is reproducible.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/dsgate/dsgate/extensions/sdk"
)

func init() { sdk.HandleSampler(&TopP{}) }

func main() {}

// TopP is the sampler state of one sequence.
type TopP struct {
	P, Temperature float64
	StopIDs        []int32
	rng            *rand.Rand
	probs          []float64
}

// Init reads sampler_args.
func (s *TopP) Init(args []byte, seed uint64) error {
	cfg := struct {
		TopP        *float64 `json:"top_p"`
		Temperature *float64 `json:"temperature"`
		StopIDs     []int32  `json:"stop_ids"`
	}{}
	if len(args) > 0 {
		if err := json.Unmarshal(args, &cfg); err != nil {
			return fmt.Errorf("topp: sampler_args: %w", err)
		}
	}
	s.P, s.Temperature, s.StopIDs = 1, 1, cfg.StopIDs
	if cfg.TopP != nil {
		s.P = *cfg.TopP
	}
	if cfg.Temperature != nil {
		s.Temperature = *cfg.Temperature
	}
	if s.P <= 0 || s.P > 1 || s.Temperature < 0 {
		return fmt.Errorf("topp: need 0 < top_p <= 1 and temperature >= 0, got %v and %v", s.P, s.Temperature)
	}
	s.rng = rand.New(rand.NewPCG(seed, 0x746f7070))
	return nil
}

// Next keeps the smallest prefix of candidates whose probability reaches P and draws from it.
func (s *TopP) Next(st *sdk.Step) (int32, bool, error) {
	id := s.choose(st.Cands)
	return id, slices.Contains(s.StopIDs, id), nil
}

func (s *TopP) choose(c []sdk.Candidate) int32 {
	if s.Temperature == 0 || len(c) == 1 {
		return c[0].ID
	}
	s.probs = softmax(s.probs[:0], c, s.Temperature)
	keep, cum := 0, 0.0
	for keep < len(s.probs) {
		cum += s.probs[keep]
		keep++
		if cum >= s.P {
			break
		}
	}
	u := s.rng.Float64() * cum
	for i := range keep {
		if u < s.probs[i] {
			return c[i].ID
		}
		u -= s.probs[i]
	}
	return c[keep-1].ID
}

// softmax appends the tempered probabilities of c (sorted by descending logit) to dst.
func softmax(dst []float64, c []sdk.Candidate, temp float64) []float64 {
	top, sum := float64(c[0].Logit), 0.0
	for _, x := range c {
		p := math.Exp((float64(x.Logit) - top) / temp)
		dst = append(dst, p)
		sum += p
	}
	for i := range dst {
		dst[i] /= sum
	}
	return dst
}
