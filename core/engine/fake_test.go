package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/sample"
)

// fakeModel is a deterministic stand-in for core/model. Its "KV cache" stores, for
// every position, a hash of the whole token history up to that position, written and
// read through the block tables like the real latent cache. The logits of a position
// are a function of that hash, so a wrong block table, a shared block that gets
// overwritten, a batching mix-up or a wrong position all change the output.
type fakeModel struct {
	bs, nb, vocab, maxLen int
	kv                    []uint64
	written               []bool
	table                 []float32 // when set, logits are a rotation of it (cheap, for large vocabularies)
	work                  int       // extra hashing per token, to give prefill a cost

	inForward atomic.Int32
	calls     atomic.Int64
	// gate, when set, is received from before each Forward (tests hold the model).
	gate chan struct{}
	// fail, when set, may return an error or panic for a batch.
	fail func(seqs []Seq) error
}

func newFake(vocab, bs, nb, maxLen int) *fakeModel {
	return &fakeModel{bs: bs, nb: nb, vocab: vocab, maxLen: maxLen, kv: make([]uint64, bs*nb), written: make([]bool, bs*nb)}
}

func (f *fakeModel) BlockSize() int { return f.bs }
func (f *fakeModel) NumBlocks() int { return f.nb }
func (f *fakeModel) VocabSize() int { return f.vocab }
func (f *fakeModel) MaxSeqLen() int { return f.maxLen }

func mix(a, b uint64) uint64 {
	x := a ^ (b + 0x9e3779b97f4a7c15 + (a << 6) + (a >> 2))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

const rootHash = 0x5eed

// fakeLogits are the logits after a history whose hash is h.
func (f *fakeModel) logits(h uint64) []float32 {
	out := make([]float32, f.vocab)
	if f.table != nil {
		r := int(h % uint64(f.vocab))
		copy(out, f.table[r:])
		copy(out[f.vocab-r:], f.table[:r])
		return out
	}
	for j := range out {
		out[j] = float32(mix(h, uint64(j))>>40) / float32(1<<21) // [0, 8)
	}
	return out
}

func (f *fakeModel) Forward(ctx context.Context, seqs []Seq) ([][]float32, error) {
	if f.inForward.Add(1) != 1 {
		panic("concurrent Forward calls")
	}
	defer f.inForward.Add(-1)
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail != nil {
		if err := f.fail(seqs); err != nil {
			return nil, err
		}
	}
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		if len(s.Tokens) == 0 || s.Pos < 0 || s.Pos+len(s.Tokens) > f.maxLen {
			return nil, fmt.Errorf("fake: bad seq pos %d len %d", s.Pos, len(s.Tokens))
		}
		if need := (s.Pos + len(s.Tokens) + f.bs - 1) / f.bs; need > len(s.Blocks) {
			return nil, fmt.Errorf("fake: %d blocks do not cover %d positions", len(s.Blocks), s.Pos+len(s.Tokens))
		}
		var h uint64
		for j, tok := range s.Tokens {
			p := s.Pos + j
			prev := uint64(rootHash)
			if p > 0 {
				sl := f.slot(s.Blocks, p-1)
				if !f.written[sl] {
					return nil, fmt.Errorf("fake: position %d read before it was written", p-1)
				}
				prev = f.kv[sl]
			}
			h = mix(prev, uint64(tok))
			for range f.work {
				h = mix(h, 1)
			}
			sl := f.slot(s.Blocks, p)
			f.kv[sl], f.written[sl] = h, true
		}
		out[i] = f.logits(h)
	}
	return out, nil
}

func (f *fakeModel) slot(blocks []int32, p int) int {
	return int(blocks[p/f.bs])*f.bs + p%f.bs
}

// refGenerate runs the fake's math without any engine: the expected tokens of a
// request (greedy, or with a seeded built-in sampler).
func refGenerate(f *fakeModel, prompt []int32, maxTokens int, p sample.Params, seed uint64, stop func(int32) bool) []int32 {
	h := uint64(rootHash)
	w := f.work
	for _, t := range prompt {
		h = mix(h, uint64(t))
		for range w {
			h = mix(h, 1)
		}
	}
	s := sample.NewSampler(p, seed, prompt)
	var out []int32
	for len(out) < maxTokens && len(prompt)+len(out) < f.maxLen {
		id := s.Sample(f.logits(h))
		out = append(out, id)
		if stop(id) {
			break
		}
		h = mix(h, uint64(id))
		for range w {
			h = mix(h, 1)
		}
	}
	return out
}

// letterStream is a fake detokenizer: token id i is the letter 'a'+i%26.
type letterStream struct{}

func (letterStream) Push(id int32) string { return string(rune('a' + id%26)) }
func (letterStream) Flush() string        { return "" }

func letters(ids []int32) string {
	b := make([]byte, len(ids))
	for i, id := range ids {
		b[i] = byte('a' + id%26)
	}
	return string(b)
}

type result struct {
	text     string
	tokens   []int32
	logprobs []sample.TokenLogprob
	finish   string
	usage    Usage
	err      error
	events   int
}

func collect(ch <-chan Event) result {
	var r result
	for ev := range ch {
		r.events++
		r.text += ev.Text
		r.tokens = append(r.tokens, ev.Tokens...)
		r.logprobs = append(r.logprobs, ev.Logprobs...)
		if ev.Finish != "" {
			r.finish, r.usage, r.err = ev.Finish, ev.Usage, ev.Err
		}
	}
	return r
}

func newEngine(t testing.TB, m Model, opt Options) *Engine {
	t.Helper()
	if opt.EOS == nil {
		opt.EOS = []int32{0}
	}
	if opt.NewTextStream == nil {
		opt.NewTextStream = func() TextStream { return letterStream{} }
	}
	e, err := New(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func run(t testing.TB, e *Engine, req Request) result {
	t.Helper()
	ch, err := e.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return collect(ch)
}

func randPrompt(r *rand.Rand, n, vocab int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(1 + r.IntN(vocab-1)) // never EOS (0)
	}
	return p
}

func isEOS(id int32) bool { return id == 0 }

// waitIdle waits until the engine has nothing queued or running.
func waitIdle(t testing.TB, e *Engine) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.Stats()
		if st.QueueLen == 0 && st.Running == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine not idle: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

var errInjected = errors.New("injected failure")

// runAll submits reqs together and collects their results in order.
func runAll(t testing.TB, e *Engine, reqs []Request) []result {
	t.Helper()
	chans := make([]<-chan Event, len(reqs))
	for i, r := range reqs {
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	out := make([]result, len(reqs))
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Go(func() { out[i] = collect(ch) })
	}
	wg.Wait()
	return out
}

var _ = slices.Equal[[]int32]
