// Command bannedwords is an example sampler extension: greedy decoding that never completes a
// banned word. A word is a sequence of token ids (tokenize it with the model's tokenizer); a
// candidate is skipped when the recent ids followed by it end with a banned sequence.
//
// sampler_args: {"banned": [[id, id, ...], ...], "stop_ids": [1]}. When every candidate is
// banned the sequence stops.
package main

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/dsgate/dsgate/extensions/sdk"
)

func init() { sdk.HandleSampler(&Banned{}) }

func main() {}

// Banned is the sampler state of one sequence: the banned sequences of this request.
type Banned struct {
	Seqs    [][]int32
	StopIDs []int32
}

// Init reads sampler_args.
func (s *Banned) Init(args []byte, _ uint64) error {
	cfg := struct {
		Banned  [][]int32 `json:"banned"`
		StopIDs []int32   `json:"stop_ids"`
	}{}
	if len(args) > 0 {
		if err := json.Unmarshal(args, &cfg); err != nil {
			return fmt.Errorf("bannedwords: sampler_args: %w", err)
		}
	}
	for _, q := range cfg.Banned {
		if len(q) == 0 {
			return fmt.Errorf("bannedwords: an empty banned sequence")
		}
	}
	s.Seqs, s.StopIDs = cfg.Banned, cfg.StopIDs
	return nil
}

// Next returns the best candidate that completes no banned sequence.
func (s *Banned) Next(st *sdk.Step) (int32, bool, error) {
	for _, c := range st.Cands {
		if !s.completes(st.Recent, c.ID) {
			return c.ID, slices.Contains(s.StopIDs, c.ID), nil
		}
	}
	return 0, true, nil
}

// completes reports whether recent + [id] ends with a banned sequence.
func (s *Banned) completes(recent []int32, id int32) bool {
	for _, q := range s.Seqs {
		last := len(q) - 1
		if q[last] != id || last > len(recent) {
			continue
		}
		if slices.Equal(q[:last], recent[len(recent)-last:]) {
			return true
		}
	}
	return false
}
