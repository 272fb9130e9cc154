package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dsgate/dsgate/core/sample"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func u64(v uint64) *uint64 { return &v }

// Greedy output of 16 different prompts run together equals each run alone, and both
// equal the reference computed without the engine.
func TestBatchInvarianceGreedy(t *testing.T) {
	f := newFake(64, 8, 256, 512)
	r := rand.New(rand.NewPCG(1, 1))
	var reqs []Request
	for range 16 {
		reqs = append(reqs, Request{Prompt: randPrompt(r, 3+r.IntN(60), 64), MaxTokens: 10 + r.IntN(30), Tenant: "t"})
	}
	alone := newEngine(t, f, Options{MaxBatchSize: 1})
	var solo []result
	for _, q := range reqs {
		solo = append(solo, run(t, alone, q))
	}
	_ = alone.Close()
	together := newEngine(t, f, Options{MaxBatchSize: 16, TokenBudget: 40}) // chunked prefill
	mixed := runAll(t, together, reqs)
	for i, q := range reqs {
		want := refGenerate(f, q.Prompt, q.MaxTokens, sample.Params{}, 0, isEOS)
		if !slices.Equal(solo[i].tokens, want) || !slices.Equal(mixed[i].tokens, want) {
			t.Fatalf("request %d:\n alone %v\n mixed %v\n want  %v", i, solo[i].tokens, mixed[i].tokens, want)
		}
		wantFinish, wantText := FinishLength, letters(want)
		if isEOS(want[len(want)-1]) {
			wantFinish, wantText = FinishStop, letters(want[:len(want)-1])
		}
		if mixed[i].text != wantText || solo[i].text != wantText {
			t.Fatalf("request %d text %q, want %q", i, mixed[i].text, wantText)
		}
		if mixed[i].finish != wantFinish || mixed[i].usage.CompletionTokens != len(want) || mixed[i].usage.PromptTokens != len(q.Prompt) {
			t.Fatalf("request %d: finish %q usage %+v", i, mixed[i].finish, mixed[i].usage)
		}
	}
	if st := together.Stats(); st.Steps == 0 || st.GeneratedTokens == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Seeded sampling gives the same tokens alone and in a mixed batch (with greedy and
// unseeded neighbours), and the same as the sampler run without the engine.
func TestSeededSamplingBatchInvariance(t *testing.T) {
	f := newFake(64, 8, 256, 512)
	r := rand.New(rand.NewPCG(2, 2))
	params := []sample.Params{
		{Temperature: 0.9, TopP: 0.95, Seed: u64(11)},
		{Temperature: 1.2, TopK: 20, Seed: u64(12)},
		{Temperature: 0.7, MinP: 0.1, RepetitionPenalty: 1.2, Seed: u64(13)},
		{Temperature: 1, PresencePenalty: 0.5, FrequencyPenalty: 0.5, Seed: u64(14)},
	}
	var reqs []Request
	for i := range 12 {
		q := Request{Prompt: randPrompt(r, 5+r.IntN(40), 64), MaxTokens: 30}
		switch {
		case i < len(params):
			q.Sampling = params[i]
		case i%2 == 0:
			q.Sampling = sample.Params{Temperature: 1} // unseeded neighbour
		}
		reqs = append(reqs, q)
	}
	alone := newEngine(t, f, Options{MaxBatchSize: 1})
	together := newEngine(t, f, Options{MaxBatchSize: 12, TokenBudget: 24})
	mixed := runAll(t, together, reqs)
	for i := range params {
		solo := run(t, alone, reqs[i])
		want := refGenerate(f, reqs[i].Prompt, 30, reqs[i].Sampling, *reqs[i].Sampling.Seed, isEOS)
		if !slices.Equal(solo.tokens, want) || !slices.Equal(mixed[i].tokens, want) {
			t.Fatalf("request %d:\n alone %v\n mixed %v\n want  %v", i, solo.tokens, mixed[i].tokens, want)
		}
	}
}

// A second request repeating a first request's prompt and answer plus a new turn
// prefills only the new tokens (up to block granularity), as the counters show, and
// gives the same tokens as without the cache. Another tenant gets no hit.
func TestPrefixReuseAndTenantSalt(t *testing.T) {
	const bs = 16
	f := newFake(64, bs, 128, 1024)
	e := newEngine(t, f, Options{MaxBatchSize: 4})
	r := rand.New(rand.NewPCG(3, 3))
	p1 := randPrompt(r, 70, 64)
	first := run(t, e, Request{Prompt: p1, MaxTokens: 25, Tenant: "alice"})
	st1 := waitIdle(t, e)
	if first.usage.CachedPromptTokens != 0 || st1.PrefillTokens != int64(len(p1)) {
		t.Fatalf("first turn: usage %+v prefill %d", first.usage, st1.PrefillTokens)
	}
	// Turn 2 = turn 1's prompt + its sampled ids + new tokens.
	p2 := append(append(slices.Clone(p1), first.tokens...), randPrompt(r, 9, 64)...)
	second := run(t, e, Request{Prompt: p2, MaxTokens: 20, Tenant: "alice"})
	st2 := waitIdle(t, e)
	// Every full block of turn 1 whose KV was computed is reused: turn 1 computed the
	// KV of all its tokens but the last sampled one.
	written := len(p1) + len(first.tokens) - 1
	wantCached := written / bs * bs
	if second.usage.CachedPromptTokens != wantCached {
		t.Fatalf("cached %d prompt tokens, want %d", second.usage.CachedPromptTokens, wantCached)
	}
	if got := st2.PrefillTokens - st1.PrefillTokens; got != int64(len(p2)-wantCached) {
		t.Fatalf("turn 2 prefilled %d tokens, want %d (new turn %d tokens)", got, len(p2)-wantCached, len(p2)-len(p1)-len(first.tokens))
	}
	if st2.PrefixHitTokens != int64(wantCached) {
		t.Fatalf("PrefixHitTokens %d, want %d", st2.PrefixHitTokens, wantCached)
	}
	want := refGenerate(f, p2, 20, sample.Params{}, 0, isEOS)
	if !slices.Equal(second.tokens, want) {
		t.Fatalf("with cache %v, want %v", second.tokens, want)
	}
	// The same prompt from another tenant gets no hit (and the same tokens).
	other := run(t, e, Request{Prompt: p2, MaxTokens: 20, Tenant: "mallory"})
	if other.usage.CachedPromptTokens != 0 || !slices.Equal(other.tokens, want) {
		t.Fatalf("other tenant: usage %+v tokens %v", other.usage, other.tokens)
	}
	// The same tenant again: everything but the last prompt token is cached.
	again := run(t, e, Request{Prompt: p2, MaxTokens: 20, Tenant: "alice"})
	if again.usage.CachedPromptTokens != (len(p2)-1)/bs*bs || !slices.Equal(again.tokens, want) {
		t.Fatalf("repeat: usage %+v tokens %v", again.usage, again.tokens)
	}
	if st := waitIdle(t, e); st.KVBlocksUsed != 0 || st.KVBlocksCached == 0 {
		t.Fatalf("stats after: %+v", st)
	}
}

func TestStopConditions(t *testing.T) {
	f := newFake(64, 8, 64, 256)
	e := newEngine(t, f, Options{})
	r := rand.New(rand.NewPCG(4, 4))
	var prompt []int32
	var ref []int32
	for { // a prompt whose greedy answer is 40 tokens without EOS
		prompt = randPrompt(r, 12, 64)
		ref = refGenerate(f, prompt, 40, sample.Params{}, 0, isEOS)
		if len(ref) == 40 && !slices.Contains(ref, 0) {
			break
		}
	}
	text := letters(ref)
	firstIdx := func(id int32) int { return slices.Index(ref, id) }
	cases := []struct {
		name       string
		req        Request
		wantText   string
		wantTokens []int32
		finish     string
	}{
		{"max-tokens", Request{MaxTokens: 7}, text[:7], ref[:7], FinishLength},
		{"stop-id", Request{MaxTokens: 40, StopIDs: []int32{ref[10]}}, text[:firstIdx(ref[10])], ref[:firstIdx(ref[10])+1], FinishStop},
		{"eos-option", Request{MaxTokens: 40}, text, ref, FinishLength},
		{"stop-string-across-tokens", Request{MaxTokens: 40, StopStrings: []string{text[20:24]}}, text[:strings.Index(text, text[20:24])], nil, FinishStop},
		{"two-stop-strings-earliest-wins", Request{MaxTokens: 40, StopStrings: []string{text[30:33], text[5:7]}}, text[:strings.Index(text, text[5:7])], nil, FinishStop},
		{"stop-string-never-seen", Request{MaxTokens: 40, StopStrings: []string{"!!"}}, text, ref, FinishLength},
		{"stop-string-at-max-tokens", Request{MaxTokens: 12, StopStrings: []string{text[10:12]}}, text[:strings.Index(text, text[10:12])], nil, FinishStop},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Prompt = prompt
			ch, err := e.Submit(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got result
			for ev := range ch {
				// no event ever carries text past the stop point
				got.text += ev.Text
				if !strings.HasPrefix(tc.wantText, got.text) {
					t.Fatalf("emitted %q, not a prefix of %q", got.text, tc.wantText)
				}
				got.tokens = append(got.tokens, ev.Tokens...)
				got.finish = ev.Finish
			}
			if got.text != tc.wantText || got.finish != tc.finish {
				t.Fatalf("text %q finish %q, want %q %q", got.text, got.finish, tc.wantText, tc.finish)
			}
			if tc.wantTokens != nil && !slices.Equal(got.tokens, tc.wantTokens) {
				t.Fatalf("tokens %v, want %v", got.tokens, tc.wantTokens)
			}
		})
	}
}

func TestEOSFromOptions(t *testing.T) {
	f := newFake(64, 8, 64, 256)
	r := rand.New(rand.NewPCG(5, 5))
	prompt := randPrompt(r, 10, 64)
	ref := refGenerate(f, prompt, 30, sample.Params{}, 0, isEOS)
	e := newEngine(t, f, Options{EOS: []int32{ref[3]}})
	got := run(t, e, Request{Prompt: prompt, MaxTokens: 30})
	n := slices.Index(ref, ref[3])
	if got.finish != FinishStop || !slices.Equal(got.tokens, ref[:n+1]) || got.text != letters(ref[:n]) {
		t.Fatalf("got %+v, want tokens %v", got, ref[:n+1])
	}
}

func TestValidation(t *testing.T) {
	f := newFake(64, 8, 16, 100) // pool holds 128 positions, max_seq_len 100
	e := newEngine(t, f, Options{})
	long := make([]int32, 100)
	cases := []struct {
		name string
		req  Request
		want error
	}{
		{"empty", Request{}, ErrInvalidRequest},
		{"too-long", Request{Prompt: long}, ErrInvalidRequest},
		{"bad-token", Request{Prompt: []int32{1, 64}}, ErrInvalidRequest},
		{"negative-max-tokens", Request{Prompt: []int32{1}, MaxTokens: -1}, ErrInvalidRequest},
		{"top-logprobs", Request{Prompt: []int32{1}, TopLogprobs: 21}, ErrInvalidRequest},
		{"bad-temperature", Request{Prompt: []int32{1}, Sampling: sample.Params{Temperature: -1}}, ErrInvalidRequest},
		{"empty-stop", Request{Prompt: []int32{1}, StopStrings: []string{""}}, ErrInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.Submit(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	var ptl *PromptTooLongError
	if _, err := e.Submit(context.Background(), Request{Prompt: long}); !errors.As(err, &ptl) || ptl.MaxSeqLen != 100 || ptl.PromptTokens != 100 {
		t.Fatalf("err %v", err)
	}
	// Up to max_seq_len: a 97-token prompt without max_tokens ends with "length" at 100.
	got := run(t, e, Request{Prompt: slices.Repeat([]int32{5}, 97)})
	if got.finish == FinishLength && got.usage.CompletionTokens != 3 {
		t.Fatalf("finish %q usage %+v", got.finish, got.usage)
	}
	// Without a detokenizer, stop strings are refused.
	e2, err := New(f, Options{NewTextStream: nil})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if _, err := e2.Submit(context.Background(), Request{Prompt: []int32{1}, StopStrings: []string{"x"}}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("err %v", err)
	}
}

func TestOverloaded(t *testing.T) {
	f := newFake(64, 8, 64, 256)
	f.gate = make(chan struct{})
	e := newEngine(t, f, Options{MaxBatchSize: 1, MaxQueue: 2})
	first, err := e.Submit(context.Background(), Request{Prompt: []int32{1, 2}, MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	for e.Stats().Running != 1 { // the first one holds the only slot
		time.Sleep(time.Millisecond)
	}
	var queued []<-chan Event
	for range 2 {
		ch, err := e.Submit(context.Background(), Request{Prompt: []int32{3}, MaxTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, ch)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{3}}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("err %v, want ErrOverloaded", err)
	}
	if st := e.Stats(); st.QueueLen != 2 {
		t.Fatalf("queue %d", st.QueueLen)
	}
	close(f.gate)
	for _, ch := range append(queued, first) {
		if r := collect(ch); r.finish != FinishLength {
			t.Fatalf("finish %q err %v", r.finish, r.err)
		}
	}
}

func TestCancellationFreesSlotAndBlocks(t *testing.T) {
	f := newFake(64, 8, 64, 512)
	f.gate = make(chan struct{})
	e := newEngine(t, f, Options{MaxBatchSize: 2})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := e.Submit(ctx, Request{Prompt: randPrompt(rand.New(rand.NewPCG(6, 6)), 40, 64), MaxTokens: 400})
	if err != nil {
		t.Fatal(err)
	}
	// a queued request cancelled before it ever runs
	ctx2, cancel2 := context.WithCancel(context.Background())
	ch2, _ := e.Submit(ctx2, Request{Prompt: []int32{1}, MaxTokens: 5})
	cancel2()
	f.gate <- struct{}{} // prefill
	f.gate <- struct{}{} // first decode
	cancel()
	calls := f.calls.Load()
	r := collect(ch)
	// It ends before another step runs (at most the one already waiting at the gate).
	if r.finish != FinishCancelled || f.calls.Load() > calls+1 {
		t.Fatalf("finish %q after %d more steps", r.finish, f.calls.Load()-calls)
	}
	if r2 := collect(ch2); r2.finish != FinishCancelled {
		t.Fatalf("queued: %q", r2.finish)
	}
	close(f.gate)
	if st := waitIdle(t, e); st.KVBlocksUsed != 0 || st.Finished[FinishCancelled] != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseEndsInFlight(t *testing.T) {
	f := newFake(64, 8, 64, 512)
	f.gate = make(chan struct{})
	e, err := New(f, Options{MaxBatchSize: 1, NewTextStream: func() TextStream { return letterStream{} }})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.Submit(context.Background(), Request{Prompt: []int32{1, 2}, MaxTokens: 100})
	b, _ := e.Submit(context.Background(), Request{Prompt: []int32{3}, MaxTokens: 100})
	_ = e.Close()
	for _, ch := range []<-chan Event{a, b} {
		if r := collect(ch); r.finish != FinishError || !errors.Is(r.err, ErrClosed) {
			t.Fatalf("finish %q err %v", r.finish, r.err)
		}
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
	_ = e.Close()
}

func TestModelFailuresDoNotCrash(t *testing.T) {
	cases := []struct {
		name string
		fail func([]Seq) error
	}{
		{"error", func([]Seq) error { return errInjected }},
		{"panic", func([]Seq) error { panic("boom") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(64, 8, 64, 256)
			var on atomic.Bool
			on.Store(true)
			f.fail = func(s []Seq) error {
				if on.Load() {
					return tc.fail(s)
				}
				return nil
			}
			e := newEngine(t, f, Options{})
			r := run(t, e, Request{Prompt: []int32{1, 2, 3}, MaxTokens: 3})
			if r.finish != FinishError || r.err == nil {
				t.Fatalf("finish %q err %v", r.finish, r.err)
			}
			on.Store(false)
			if r := run(t, e, Request{Prompt: []int32{1, 2, 3}, MaxTokens: 3}); r.finish != FinishLength {
				t.Fatalf("after failure: %q %v", r.finish, r.err)
			}
			if st := waitIdle(t, e); st.KVBlocksUsed != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestLogprobs(t *testing.T) {
	f := newFake(64, 8, 64, 256)
	e := newEngine(t, f, Options{})
	prompt := []int32{5, 6, 7}
	got := run(t, e, Request{Prompt: prompt, MaxTokens: 5, Logprobs: true, TopLogprobs: 3})
	if len(got.logprobs) != len(got.tokens) {
		t.Fatalf("%d logprobs for %d tokens", len(got.logprobs), len(got.tokens))
	}
	h := uint64(rootHash)
	for _, id := range prompt {
		h = mix(h, uint64(id))
	}
	for i, id := range got.tokens {
		want := sample.Logprobs(f.logits(h), id, 3)
		lp := got.logprobs[i]
		if lp.ID != id || lp.Logprob != want.Logprob || len(lp.Top) != 3 || lp.Top[2].ID != want.Top[2].ID || lp.Top[2].Logprob != want.Top[2].Logprob || lp.Top[0].ID != id {
			t.Fatalf("token %d: %+v, want %+v", i, lp, want)
		}
		h = mix(h, uint64(id))
	}
}

// secondBest is a Policy that always picks the second candidate.
type secondBest struct {
	closed atomic.Int32
	steps  []int
}

func (p *secondBest) Next(_ context.Context, step int, _ []int32, c []sample.Candidate) (int32, bool, error) {
	p.steps = append(p.steps, step)
	if step == 6 {
		return 0, true, nil
	}
	return c[1].ID, false, nil
}
func (p *secondBest) Close() error { p.closed.Add(1); return nil }

func TestPolicyHook(t *testing.T) {
	f := newFake(64, 8, 64, 256)
	e := newEngine(t, f, Options{})
	pol := &secondBest{}
	prompt := []int32{9, 8, 7}
	got := run(t, e, Request{Prompt: prompt, MaxTokens: 20, Policy: pol, PolicyTopN: 4})
	h := uint64(rootHash)
	for _, id := range prompt {
		h = mix(h, uint64(id))
	}
	var want []int32
	for range 6 {
		id := sample.TopN(f.logits(h), 2)[1].ID
		want = append(want, id)
		h = mix(h, uint64(id))
	}
	if got.finish != FinishStop || !slices.Equal(got.tokens, want) || pol.closed.Load() != 1 {
		t.Fatalf("got %v %q closed %d, want %v", got.tokens, got.finish, pol.closed.Load(), want)
	}
}

// A slow consumer never blocks the scheduler and loses nothing.
func TestSlowConsumerGetsMergedEvents(t *testing.T) {
	f := newFake(64, 8, 64, 512)
	e := newEngine(t, f, Options{})
	prompt := []int32{4, 4, 4}
	ch, err := e.Submit(context.Background(), Request{Prompt: prompt, MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	waitIdle(t, e) // finished without anyone reading
	got := collect(ch)
	want := refGenerate(f, prompt, 100, sample.Params{}, 0, isEOS)
	if !slices.Equal(got.tokens, want) || got.events > eventBuffer+2 {
		t.Fatalf("%d events, tokens %v want %v", got.events, got.tokens, want)
	}
}

// Stress: a few hundred requests with random lengths, sampling settings and
// cancellations over a KV pool far too small for all of them, with preemption.
func TestStress(t *testing.T) {
	const vocab, bs = 64, 8
	f := newFake(vocab, bs, 48, 300) // 384 positions: a handful of sequences at a time
	e := newEngine(t, f, Options{MaxBatchSize: 12, MaxQueue: 1000, TokenBudget: 48})
	r := rand.New(rand.NewPCG(7, 7))
	type job struct {
		req    Request
		cancel context.CancelFunc
		after  int // cancel after this many events (-1: never)
		res    result
	}
	const n = 300
	shared := randPrompt(r, 40, vocab) // many requests share a prefix
	jobs := make([]*job, n)
	for i := range jobs {
		var prompt []int32
		if r.IntN(3) == 0 {
			prompt = append(slices.Clone(shared[:8+r.IntN(32)]), randPrompt(r, 1+r.IntN(40), vocab)...)
		} else {
			prompt = randPrompt(r, 1+r.IntN(120), vocab)
		}
		q := Request{Prompt: prompt, MaxTokens: 1 + r.IntN(80), Tenant: []string{"a", "b"}[r.IntN(2)]}
		if r.IntN(20) == 0 {
			q.MaxTokens = 0 // up to max_seq_len (or EOS)
		}
		if r.IntN(2) == 0 {
			q.Sampling = sample.Params{Temperature: 0.8, TopP: 0.9, Seed: u64(uint64(i))}
		}
		j := &job{req: q, after: -1}
		if r.IntN(5) == 0 {
			j.after = r.IntN(4)
		}
		jobs[i] = j
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		ctx, cancel := context.WithCancel(context.Background())
		j.cancel = cancel
		ch, err := e.Submit(ctx, j.req)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer cancel()
			for ev := range ch {
				if j.res.events == j.after {
					j.cancel()
				}
				j.res.events++
				j.res.tokens = append(j.res.tokens, ev.Tokens...)
				j.res.text += ev.Text
				if ev.Finish != "" {
					j.res.finish, j.res.err, j.res.usage = ev.Finish, ev.Err, ev.Usage
				}
			}
		})
	}
	wg.Wait()
	cancelled := 0
	for i, j := range jobs {
		var seed uint64
		if j.req.Sampling.Seed != nil {
			seed = *j.req.Sampling.Seed
		}
		maxTok := j.req.MaxTokens
		if maxTok == 0 {
			maxTok = f.maxLen
		}
		want := refGenerate(f, j.req.Prompt, maxTok, j.req.Sampling, seed, isEOS)
		switch j.res.finish {
		case FinishCancelled:
			if j.after < 0 {
				t.Fatalf("job %d cancelled without a cancel", i)
			}
			cancelled++
			if !slices.Equal(j.res.tokens, want[:len(j.res.tokens)]) {
				t.Fatalf("job %d (cancelled): tokens %v, want a prefix of %v", i, j.res.tokens, want)
			}
		case FinishStop, FinishLength:
			if !slices.Equal(j.res.tokens, want) {
				t.Fatalf("job %d: tokens %v, want %v", i, j.res.tokens, want)
			}
			if j.res.usage.CompletionTokens != len(want) || j.res.usage.PromptTokens != len(j.req.Prompt) {
				t.Fatalf("job %d: usage %+v", i, j.res.usage)
			}
		default:
			t.Fatalf("job %d: finish %q err %v", i, j.res.finish, j.res.err)
		}
	}
	if cancelled == 0 {
		t.Fatal("no request was cancelled")
	}
	st := waitIdle(t, e)
	if st.KVBlocksUsed != 0 || st.KVBlocksFree != f.nb {
		t.Fatalf("blocks left in use: %+v", st)
	}
	if st.Preemptions == 0 {
		t.Fatalf("the pool never ran out (no preemption): %+v", st)
	}
	t.Logf("stats: %+v", st)
}

// startRecorder wraps a fake and records the step in which each prompt (keyed by its
// first token) first reaches the model.
type startRecorder struct {
	*fakeModel
	mu    sync.Mutex
	steps int
	first map[int32]int
}

func (r *startRecorder) Forward(ctx context.Context, seqs []Seq) ([][]float32, error) {
	r.mu.Lock()
	r.steps++
	for _, s := range seqs {
		if _, ok := r.first[s.Tokens[0]]; !ok && s.Pos == 0 {
			r.first[s.Tokens[0]] = r.steps
		}
	}
	r.mu.Unlock()
	return r.fakeModel.Forward(ctx, seqs)
}

// FCFS: a long prompt that has to wait for memory is not overtaken by the short
// requests that arrive after it (which would fit), and it does get served.
func TestFCFSNoOvertaking(t *testing.T) {
	f := newFake(64, 4, 16, 64) // 64 positions
	rec := &startRecorder{fakeModel: f, first: map[int32]int{}}
	e := newEngine(t, rec, Options{MaxBatchSize: 8})
	f.gate = make(chan struct{}) // hold the model until everything is queued
	prompt := func(first int32, n int) []int32 {
		return append([]int32{first}, slices.Repeat([]int32{5}, n-1)...)
	}
	reqs := []Request{{Prompt: prompt(1, 30), MaxTokens: 30}} // 8 blocks, growing to 15
	var chans []<-chan Event
	submit := func(q Request) {
		ch, err := e.Submit(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	submit(reqs[0])
	for e.Stats().Running == 0 {
		time.Sleep(time.Millisecond)
	}
	submit(Request{Prompt: prompt(2, 40), MaxTokens: 5}) // 10 blocks: must wait for the first
	for i := range 5 {
		submit(Request{Prompt: prompt(int32(10+i), 3), MaxTokens: 3}) // would fit at once
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case f.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	for _, ch := range chans {
		if r := collect(ch); r.finish != FinishLength && r.finish != FinishStop {
			t.Fatalf("finish %q err %v", r.finish, r.err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.first[2] <= rec.first[1] {
		t.Fatalf("the long prompt started in step %d, with the first request (step %d): the test does not exercise waiting", rec.first[2], rec.first[1])
	}
	for i := range 5 {
		if rec.first[int32(10+i)] < rec.first[2] {
			t.Fatalf("short request %d started in step %d, before the long prompt (step %d)", i, rec.first[int32(10+i)], rec.first[2])
		}
	}
}

// Cancelling every request of a step abandons the step itself: a long forward pass
// nobody waits for any more does not hold the engine.
func TestCancelAbandonsStep(t *testing.T) {
	f := newFake(64, 8, 64, 512)
	f.gate = make(chan struct{}) // never opened: the forward pass would block forever
	e := newEngine(t, f, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := e.Submit(ctx, Request{Prompt: []int32{1, 2, 3}, MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	for f.inForward.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if r := collect(ch); r.finish != FinishCancelled || r.err != nil {
		t.Fatalf("finish %q err %v", r.finish, r.err)
	}
	if st := waitIdle(t, e); st.KVBlocksUsed != 0 {
		t.Fatalf("stats %+v", st)
	}
}
