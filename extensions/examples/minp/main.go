// Command minp is an example sampler extension: min-p sampling. A candidate survives when its
// probability is at least min_p times the top candidate's; one survivor is drawn with
// temperature.
//
// sampler_args: {"min_p": 0.1, "temperature": 1.0} (optional; defaults 0.1 and 1).
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/dsgate/dsgate/extensions/sdk"
)

func init() { sdk.HandleSampler(&MinP{}) }

func main() {}

// MinP is the sampler state of one sequence.
type MinP struct {
	MinP, Temperature float64
	rng               *rand.Rand
	w                 []float64
}

// Init reads sampler_args.
func (s *MinP) Init(args []byte, seed uint64) error {
	cfg := struct {
		MinP        *float64 `json:"min_p"`
		Temperature *float64 `json:"temperature"`
	}{}
	if len(args) > 0 {
		if err := json.Unmarshal(args, &cfg); err != nil {
			return fmt.Errorf("minp: sampler_args: %w", err)
		}
	}
	s.MinP, s.Temperature = 0.1, 1
	if cfg.MinP != nil {
		s.MinP = *cfg.MinP
	}
	if cfg.Temperature != nil {
		s.Temperature = *cfg.Temperature
	}
	if s.MinP < 0 || s.MinP > 1 || s.Temperature <= 0 {
		return fmt.Errorf("minp: need 0 <= min_p <= 1 and temperature > 0, got %v and %v", s.MinP, s.Temperature)
	}
	s.rng = rand.New(rand.NewPCG(seed, 0x6d696e70))
	return nil
}

// Next draws among the candidates with p >= min_p * p_max.
func (s *MinP) Next(st *sdk.Step) (int32, bool, error) {
	c := st.Cands
	// p_i / p_max = exp(l_i - l_max) for the untempered distribution.
	top := float64(c[0].Logit)
	cut := math.Log(s.MinP)
	s.w = s.w[:0]
	sum := 0.0
	for _, x := range c {
		d := float64(x.Logit) - top
		if d < cut {
			break
		}
		w := math.Exp(d / s.Temperature)
		s.w = append(s.w, w)
		sum += w
	}
	u := s.rng.Float64() * sum
	for i, w := range s.w {
		if u < w {
			return c[i].ID, false, nil
		}
		u -= w
	}
	return c[len(s.w)-1].ID, false, nil
}
