// Package engine is dsgate's scheduler: it turns a model's batched forward pass into a
// service that many requests share, with continuous batching, chunked prefill, a paged
// KV cache with prefix reuse (core/kvcache), built-in and external sampling
// (core/sample), stop conditions, streaming events and cancellation.
//
// # Scheduling
//
// One goroutine owns the scheduler state; Submit, Stats and Close talk to it through a
// mutex-protected waiting queue and a wake-up channel. Each step it:
//
//  1. ends the requests whose context is done (finish "cancelled"), freeing their
//     slot and blocks (a forward pass whose every sequence is cancelled is abandoned
//     through its context, so even a long prefill does not delay this);
//  2. admits waiting requests in arrival order (FCFS; a request that does not fit
//     blocks the ones behind it, so none starves) while fewer than MaxBatchSize run
//     and the KV pool has blocks for the whole prompt beyond its cached prefix, plus
//     one block of headroom per running sequence;
//  3. gives every decoding sequence one token, then fills the rest of TokenBudget
//     with prefill chunks of the sequences still prefilling, oldest first (chunked
//     prefill: a long prompt takes several steps and never stalls the decoders);
//  4. runs one Model.Forward over the batch, samples, checks stop conditions and
//     sends each request its delta.
//
// # KV memory exhaustion
//
// Prompts get all their blocks at admission; only decoding grows a sequence. When a
// decoding sequence needs a block and none is free or evictable, the newest running
// sequence is preempted: its blocks are released (its full blocks stay in the prefix
// cache, so the recompute is often cheap), and it goes back to the front of the
// waiting queue with its generated tokens appended to its prompt, to be recomputed
// when memory frees up. Its sampler state is kept, so preemption does not change its
// output. The oldest sequence is never preempted by a newer one, so the batch always
// makes progress; a single sequence can use the whole pool, and Submit refuses
// prompts longer than the pool or MaxSeqLen.
//
// # Determinism
//
// Each request has its own sampler and random generator (seeded from
// Request.Sampling.Seed, or from the engine's generator when unset), and Model.Forward
// is row-independent, so a request's tokens do not depend on what else shares a step.
// Where a prompt is split into chunks differs (token budget, prefix-cache hits,
// recompute after preemption), a real backend's logits may differ in the last bits
// (core/model bounds it at 1e-6 relative), which can only flip an exact near-tie.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/dsgate/dsgate/core/kvcache"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/sample"
)

// Seq is one sequence's work in a forward step (core/model's Seq).
type Seq = model.Seq

// Model is what the engine needs from the model (core/model's *Model satisfies it).
// Forward is only ever called from the scheduler goroutine.
type Model interface {
	// Forward runs one step for a batch and returns float32 logits per Seq (VocabSize
	// of them, for the last token). A sequence's logits must not depend on the other
	// sequences of the batch.
	Forward(ctx context.Context, seqs []Seq) ([][]float32, error)
	// BlockSize is the KV block size in tokens.
	BlockSize() int
	// NumBlocks is the number of KV blocks.
	NumBlocks() int
	// VocabSize is the length of a logits row.
	VocabSize() int
	// MaxSeqLen is the longest sequence (prompt + completion) the model supports.
	MaxSeqLen() int
}

// TextStream is an incremental detokenizer for one sequence (core/tokenizer's
// *StreamDecoder satisfies it).
type TextStream interface {
	// Push adds one token and returns the text it completes (never half a UTF-8 char).
	Push(id int32) string
	// Flush returns the remaining text at the end of the sequence.
	Flush() string
}

// Options configure an Engine. Zero fields take the defaults given.
type Options struct {
	// MaxBatchSize is the most sequences in one step (default 8).
	MaxBatchSize int
	// MaxQueue is the most requests waiting for a slot; Submit returns ErrOverloaded
	// beyond it (default 256).
	MaxQueue int
	// TokenBudget is the most tokens (decode + prefill chunks) in one step
	// (default 512; raised to MaxBatchSize if smaller).
	TokenBudget int
	// EOS are stop token ids honoured for every request.
	EOS []int32
	// NewTextStream makes the detokenizer of one sequence. Without it events carry no
	// Text and stop strings are refused.
	NewTextStream func() TextStream
	// Logger receives scheduler logs (default slog.Default()).
	Logger *slog.Logger
}

// Request is one generation request.
type Request struct {
	// Prompt is the tokenized prompt (at least one token).
	Prompt []int32
	// Tenant salts the prefix-cache keys; requests of different tenants never share
	// cached blocks. The gateway derives it from the API key, never from the body.
	Tenant string
	// MaxTokens caps the completion length; 0 means up to the maximum sequence length.
	MaxTokens int
	// Sampling are the built-in sampler settings.
	Sampling sample.Params
	// StopIDs end the sequence (in addition to Options.EOS); the id is reported in
	// Tokens but its text is not emitted.
	StopIDs []int32
	// StopStrings end the sequence when the text contains one; no part of it is
	// emitted, even when it spans several tokens.
	StopStrings []string
	// Logprobs asks for the log-probability of each sampled token, TopLogprobs
	// (0..20) for that many alternatives too.
	Logprobs    bool
	TopLogprobs int
	// Policy, when set, chooses each token from the PolicyTopN (default 64) best
	// candidates instead of the built-in sampler. The engine calls it from its
	// scheduler goroutine (or a sampling worker; never concurrently) and closes it
	// when the request ends; after a Submit error the caller closes it.
	Policy     sample.Policy
	PolicyTopN int
}

// Finish reasons carried by Event.Finish.
const (
	FinishStop      = "stop"
	FinishLength    = "length"
	FinishCancelled = "cancelled"
	FinishError     = "error"
)

// Usage counts a request's tokens.
type Usage struct {
	// PromptTokens is len(Request.Prompt).
	PromptTokens int
	// CachedPromptTokens is how many prompt tokens came from the prefix cache.
	CachedPromptTokens int
	// CompletionTokens counts the sampled tokens, a final stop id included.
	CompletionTokens int
}

// Event is one delta of a request's output.
type Event struct {
	// Text is the new text. It never contains the text of a stop id or any part of
	// a stop string.
	Text string
	// Tokens are the ids sampled since the last event, including a final stop id and
	// the tokens that completed a stop string.
	Tokens []int32
	// Logprobs has one entry per element of Tokens when Request.Logprobs is set.
	Logprobs []sample.TokenLogprob
	// Finish is "" while the request runs, then FinishStop, FinishLength,
	// FinishCancelled or FinishError.
	Finish string
	// Usage is set on the final event.
	Usage Usage
	// Err explains FinishError.
	Err error
}

// Stats are the engine's counters and gauges for the metrics endpoint.
type Stats struct {
	QueueLen        int   // requests waiting for a slot (preempted ones included)
	Running         int   // sequences holding a slot
	KVBlocksTotal   int   // blocks in the pool
	KVBlocksUsed    int   // blocks referenced by running sequences
	KVBlocksCached  int   // unreferenced blocks kept for prefix reuse (reclaimable)
	KVBlocksFree    int   // blocks not referenced by any sequence (cached ones included)
	Requests        int64 // requests accepted by Submit
	PromptTokens    int64 // prompt tokens of admitted requests
	PrefixHitTokens int64 // prompt tokens served from the prefix cache
	PrefillTokens   int64 // tokens run through the model as prefill (recomputes included)
	GeneratedTokens int64 // tokens sampled
	Preemptions     int64 // sequences preempted for KV memory
	Finished        map[string]int64
	Steps           int64   // forward steps
	StepSeconds     float64 // total time spent in steps
	LastStepSeconds float64 // duration of the last step
	TokensPerSecond float64 // generated tokens per second of step time, smoothed over recent steps
}

// eventBuffer is the capacity of each request's event channel. When the consumer lags,
// further deltas are merged into one event instead of queueing (see deliver).
const eventBuffer = 4

// Engine schedules requests over one model. Its methods are safe for concurrent use.
type Engine struct {
	m       Model
	opt     Options
	log     *slog.Logger
	pool    *kvcache.Pool
	vocab   int
	maxLen  int
	eos     map[int32]bool
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
	closeMu sync.Mutex // serialises Close

	// mu guards waiting, closed and nextID.
	mu      sync.Mutex
	waiting []*seq
	closed  bool
	nextID  uint64

	// statsMu guards stats.
	statsMu sync.Mutex
	stats   Stats

	// owned by the scheduler goroutine
	running []*seq
	rng     *rand.Rand
}

// New starts an engine over m.
func New(m Model, opt Options) (*Engine, error) {
	if m == nil {
		return nil, fmt.Errorf("engine: nil model")
	}
	if opt.MaxBatchSize <= 0 {
		opt.MaxBatchSize = 8
	}
	if opt.MaxQueue <= 0 {
		opt.MaxQueue = 256
	}
	if opt.TokenBudget <= 0 {
		opt.TokenBudget = 512
	}
	opt.TokenBudget = max(opt.TokenBudget, opt.MaxBatchSize)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	pool, err := kvcache.New(m.NumBlocks(), m.BlockSize())
	if err != nil {
		return nil, fmt.Errorf("engine: KV pool of the model: %w", err)
	}
	if m.VocabSize() <= 0 || m.MaxSeqLen() <= 1 {
		return nil, fmt.Errorf("engine: model reports vocab %d, max_seq_len %d", m.VocabSize(), m.MaxSeqLen())
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		m:      m,
		opt:    opt,
		log:    opt.Logger,
		pool:   pool,
		vocab:  m.VocabSize(),
		maxLen: min(m.MaxSeqLen(), m.NumBlocks()*m.BlockSize()),
		eos:    map[int32]bool{},
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		rng:    rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), rand.Uint64())),
	}
	for _, id := range opt.EOS {
		e.eos[id] = true
	}
	e.stats.KVBlocksTotal = pool.NumBlocks()
	e.stats.KVBlocksFree = pool.NumBlocks()
	e.stats.Finished = map[string]int64{}
	go e.loop()
	return e, nil
}

// MaxSeqLen returns the longest sequence (prompt + completion) a request may reach:
// the model's max_seq_len, or the KV pool's capacity if smaller.
func (e *Engine) MaxSeqLen() int { return e.maxLen }

// Close stops the scheduler. Requests still in flight end with FinishError and
// ErrClosed; their channels are closed. Close waits for the scheduler goroutine.
func (e *Engine) Close() error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	e.cancel()
	<-e.done
	return nil
}

// Submit validates req and queues it. The returned channel gets one or more events,
// the last with Finish != "", and is then closed. Cancelling ctx ends the request
// within one step (FinishCancelled). Errors: ErrOverloaded, ErrInvalidRequest,
// *PromptTooLongError, ErrClosed.
func (e *Engine) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	if err := e.validate(&req); err != nil {
		return nil, err
	}
	prompt := req.Prompt
	// The engine keeps its own copies: the caller may reuse its slices after Submit.
	req.Prompt, req.StopIDs, req.StopStrings = nil, slices.Clone(req.StopIDs), slices.Clone(req.StopStrings)
	if req.Sampling.Seed != nil {
		seed := *req.Sampling.Seed
		req.Sampling.Seed = &seed
	}
	s := &seq{
		req:       req,
		ctx:       ctx,
		box:       newOutbox(),
		tokens:    append(make([]int32, 0, len(prompt)+16), prompt...),
		promptLen: len(prompt),
		limit:     e.maxLen,
	}
	if req.MaxTokens > 0 {
		s.limit = min(s.limit, len(prompt)+req.MaxTokens)
	}
	for _, id := range req.StopIDs {
		if s.stopIDs == nil {
			s.stopIDs = map[int32]bool{}
		}
		s.stopIDs[id] = true
	}
	if e.opt.NewTextStream != nil {
		s.text = e.opt.NewTextStream()
	}
	s.stopWake = context.AfterFunc(ctx, e.signal)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		s.stopWake()
		return nil, ErrClosed
	}
	if len(e.waiting) >= e.opt.MaxQueue {
		e.mu.Unlock()
		s.stopWake()
		return nil, ErrOverloaded
	}
	e.nextID++
	s.id = e.nextID
	e.waiting = append(e.waiting, s)
	e.mu.Unlock()
	e.statsMu.Lock()
	e.stats.Requests++
	e.statsMu.Unlock()
	e.signal()
	out := make(chan Event, eventBuffer)
	go e.deliver(ctx, s.box, out)
	return out, nil
}

func (e *Engine) validate(req *Request) error {
	switch {
	case len(req.Prompt) == 0:
		return invalid("empty prompt")
	case len(req.Prompt) >= e.maxLen:
		return &PromptTooLongError{PromptTokens: len(req.Prompt), MaxSeqLen: e.maxLen}
	case req.MaxTokens < 0:
		return invalid("max_tokens %d is negative", req.MaxTokens)
	case req.TopLogprobs < 0 || req.TopLogprobs > sample.MaxTopLogprobs:
		return invalid("top_logprobs %d not in [0, %d]", req.TopLogprobs, sample.MaxTopLogprobs)
	case req.PolicyTopN < 0:
		return invalid("policy top-N %d is negative", req.PolicyTopN)
	case len(req.StopStrings) > 0 && e.opt.NewTextStream == nil:
		return invalid("stop strings need a detokenizer")
	}
	for i, id := range req.Prompt {
		if id < 0 || int(id) >= e.vocab {
			return invalid("prompt token %d at index %d is outside the vocabulary [0, %d)", id, i, e.vocab)
		}
	}
	for _, s := range req.StopStrings {
		if s == "" {
			return invalid("empty stop string")
		}
	}
	if err := req.Sampling.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return nil
}

// signal wakes the scheduler without blocking.
func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	// Lock order: mu, then statsMu (admit moves a request between the two under both).
	e.mu.Lock()
	defer e.mu.Unlock()
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	st := e.stats
	st.QueueLen = len(e.waiting)
	st.Finished = make(map[string]int64, len(e.stats.Finished))
	for k, v := range e.stats.Finished {
		st.Finished[k] = v
	}
	return st
}

// *model.Model is the engine's production model.
var _ Model = (*model.Model)(nil)
