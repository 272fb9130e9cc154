// Package sample holds dsgate's built-in token samplers (greedy, temperature, top-k,
// top-p, min-p, penalties, seeded per request) and the Policy hook through which an
// external sampler (a WASM extension) can choose each next token instead.
package sample

import "context"

// Candidate is one possible next token: its id and its (penalised, untempered) logit.
type Candidate struct {
	ID    int32
	Logit float32
}

// Policy chooses the next token from the top-N candidates in place of the built-in
// sampler. One Policy instance serves one sequence; it is never called concurrently.
type Policy interface {
	// Next is called once per generated token. step counts generated tokens from 0;
	// recent holds the last generated ids (oldest first, bounded); cands are sorted by
	// descending logit. It returns the chosen id (which must be one of cands), or
	// stop = true to end the sequence.
	Next(ctx context.Context, step int, recent []int32, cands []Candidate) (id int32, stop bool, err error)
	// Close releases the policy's resources (e.g. returns a WASM instance to its pool).
	Close() error
}
