package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dsgate/dsgate/core/kvcache"
	"github.com/dsgate/dsgate/core/sample"
)

// seq is one request's state. After Submit it belongs to the scheduler goroutine.
type seq struct {
	id        uint64
	req       Request
	ctx       context.Context
	stopWake  func() bool
	box       *outbox
	tokens    []int32 // prompt + generated
	promptLen int
	limit     int // finish "length" when len(tokens) reaches it
	stopIDs   map[int32]bool
	text      TextStream
	held      string // text held back because it may start a stop string

	table    *kvcache.Table // nil while waiting
	pos      int            // positions [0, pos) are in the KV cache
	admitted bool           // admitted at least once
	cached   int            // prompt tokens from the prefix cache at first admission
	sampler  *sample.Sampler
	decoding bool  // the next step feeds the last sampled token (not a prefill)
	pending  Event // delta of the current step
	chunk    int   // tokens scheduled in the current step
}

func (s *seq) generated() int { return len(s.tokens) - s.promptLen }

// parallelSampling is the number of logits (sequences × vocabulary) from which a step
// samples its sequences on several goroutines.
const parallelSampling = 1 << 18

// loop is the scheduler goroutine.
func (e *Engine) loop() {
	defer close(e.done)
	for {
		if e.ctx.Err() != nil {
			e.shutdown()
			return
		}
		e.reapCancelled()
		e.admit()
		e.publish(0, 0)
		if len(e.running) == 0 {
			select {
			case <-e.wake:
			case <-e.ctx.Done():
			}
			continue
		}
		e.step()
	}
}

// shutdown ends every request with ErrClosed.
func (e *Engine) shutdown() {
	e.mu.Lock()
	e.closed = true
	waiting := e.waiting
	e.waiting = nil
	e.mu.Unlock()
	for _, s := range e.running {
		e.finish(s, FinishError, ErrClosed)
	}
	e.running = nil
	for _, s := range waiting {
		e.finish(s, FinishError, ErrClosed)
	}
	e.publish(0, 0)
}

// reapCancelled ends running and waiting requests whose context is done.
func (e *Engine) reapCancelled() {
	e.running = slices.DeleteFunc(e.running, func(s *seq) bool {
		if s.ctx.Err() != nil {
			e.finish(s, FinishCancelled, nil)
			return true
		}
		return false
	})
	var gone []*seq
	e.mu.Lock()
	e.waiting = slices.DeleteFunc(e.waiting, func(s *seq) bool {
		if s.ctx.Err() != nil {
			gone = append(gone, s)
			return true
		}
		return false
	})
	e.mu.Unlock()
	for _, s := range gone {
		e.finish(s, FinishCancelled, nil)
	}
}

// admit moves waiting requests into the running set, in arrival order, while there is
// a slot and the pool has blocks for the rest of the head request's tokens.
func (e *Engine) admit() {
	for len(e.running) < e.opt.MaxBatchSize {
		e.mu.Lock()
		if len(e.waiting) == 0 {
			e.mu.Unlock()
			return
		}
		s := e.waiting[0]
		e.mu.Unlock()

		t := e.pool.NewTable(s.req.Tenant)
		matched := e.pool.Match(t, s.tokens)
		// Keep one block of headroom per running sequence, so that admitting a long
		// prompt does not immediately force the decoders to preempt it again.
		need := e.pool.BlocksFor(len(s.tokens)) - len(t.Blocks)
		if len(e.running) > 0 && e.pool.Available()-need < len(e.running) {
			e.pool.Release(t)
			return // FCFS: the head waits for memory, nobody overtakes it
		}
		if err := e.pool.Reserve(t, len(s.tokens)); err != nil {
			e.pool.Release(t)
			return
		}
		// The request leaves the queue and joins Stats' running count in one critical
		// section, so Stats never shows it in neither (an engine that looks idle
		// while it runs its first step).
		e.mu.Lock()
		e.waiting = e.waiting[1:]
		e.statsMu.Lock()
		e.stats.Running = len(e.running) + 1
		e.statsMu.Unlock()
		e.mu.Unlock()
		s.table, s.pos = t, matched
		if !s.admitted {
			s.admitted = true
			s.cached = matched
			seed := e.rng.Uint64()
			if s.req.Sampling.Seed != nil {
				seed = *s.req.Sampling.Seed
			}
			s.sampler = sample.NewSampler(s.req.Sampling, seed, s.tokens[:s.promptLen])
			e.statsMu.Lock()
			e.stats.PromptTokens += int64(s.promptLen)
			e.stats.PrefixHitTokens += int64(matched)
			e.statsMu.Unlock()
		}
		// running stays in arrival order, so "newest" is well defined for preemption
		i, _ := slices.BinarySearchFunc(e.running, s.id, func(r *seq, id uint64) int { return cmpID(r.id, id) })
		e.running = slices.Insert(e.running, i, s)
	}
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// preemptNewest releases the newest running sequence's blocks and puts it back at the
// front of the waiting queue. It returns the preempted sequence.
func (e *Engine) preemptNewest() *seq {
	v := e.running[len(e.running)-1]
	e.running = e.running[:len(e.running)-1]
	e.pool.Release(v.table)
	v.table, v.pos, v.chunk, v.decoding = nil, 0, 0, false
	e.mu.Lock()
	// back in arrival order: ahead of every request that arrived after it
	i, _ := slices.BinarySearchFunc(e.waiting, v.id, func(r *seq, id uint64) int { return cmpID(r.id, id) })
	e.waiting = slices.Insert(e.waiting, i, v)
	e.mu.Unlock()
	e.statsMu.Lock()
	e.stats.Preemptions++
	e.statsMu.Unlock()
	e.log.Debug("engine: preempted a sequence for KV memory", "tokens", len(v.tokens), "running", len(e.running))
	return v
}

// plan chooses this step's work: one token for every decoding sequence, then prefill
// chunks oldest first within the token budget. It may preempt sequences.
func (e *Engine) plan() []*seq {
	budget := e.opt.TokenBudget
	for i := 0; i < len(e.running); i++ {
		s := e.running[i]
		s.chunk = 0
		if len(s.tokens)-s.pos != 1 {
			continue
		}
		for e.pool.Reserve(s.table, s.pos+1) != nil {
			if e.preemptNewest() == s {
				break
			}
		}
		if s.table != nil {
			s.chunk = 1
			budget--
		}
	}
	var batch []*seq
	for _, s := range e.running {
		if rest := len(s.tokens) - s.pos; rest > 1 && budget > 0 {
			s.chunk = min(rest, budget)
			budget -= s.chunk
		}
		if s.chunk > 0 {
			batch = append(batch, s)
		}
	}
	return batch
}

// step runs one forward pass over the planned batch and handles its results.
func (e *Engine) step() {
	batch := e.plan()
	if len(batch) == 0 {
		return
	}
	seqs := make([]Seq, len(batch))
	prefill := 0
	for i, s := range batch {
		seqs[i] = Seq{Tokens: s.tokens[s.pos : s.pos+s.chunk], Pos: s.pos, Blocks: s.table.Blocks}
		if !s.decoding {
			prefill += s.chunk
		}
	}
	// The step's context ends when the engine closes or when every sequence of the
	// batch is cancelled: a long prefill nobody waits for any more is abandoned.
	stepCtx, cancelStep := context.WithCancel(e.ctx)
	defer cancelStep()
	var live atomic.Int32
	live.Store(int32(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, s := range batch {
		stops[i] = context.AfterFunc(s.ctx, func() {
			if live.Add(-1) == 0 {
				cancelStep()
			}
		})
	}
	start := time.Now()
	logits, err := e.forward(stepCtx, seqs)
	for _, stop := range stops {
		stop()
	}
	failed := FinishError
	switch {
	case err != nil && e.ctx.Err() != nil:
		err = ErrClosed
	case err != nil && stepCtx.Err() != nil:
		failed, err = FinishCancelled, nil
	case err == nil && len(logits) != len(seqs):
		err = fmt.Errorf("model returned %d logit rows for %d sequences", len(logits), len(seqs))
	}
	var ready []*seq // sequences whose logits are to be sampled
	var rows [][]float32
	for i, s := range batch {
		if failed == FinishCancelled {
			e.removeRunning(s)
			e.finish(s, FinishCancelled, nil)
			continue
		}
		if err != nil {
			e.removeRunning(s)
			e.finish(s, FinishError, fmt.Errorf("engine: forward step: %w", err))
			continue
		}
		s.pos += s.chunk
		s.chunk = 0
		e.pool.Commit(s.table, s.tokens, s.pos)
		if s.pos < len(s.tokens) {
			continue // more prefill to do
		}
		if len(logits[i]) < e.vocab {
			e.removeRunning(s)
			e.finish(s, FinishError, fmt.Errorf("engine: model returned %d logits, want %d", len(logits[i]), e.vocab))
			continue
		}
		ready = append(ready, s)
		rows = append(rows, logits[i][:e.vocab])
	}
	reasons := make([]string, len(ready))
	errs := make([]error, len(ready))
	sampleOne := func(i int) { reasons[i], errs[i] = e.next(ready[i], rows[i]) }
	if workers := min(len(ready), runtime.GOMAXPROCS(0)); workers > 1 && len(ready)*e.vocab >= parallelSampling {
		// Sequences sample independently (own sampler, detokenizer, policy), so a big
		// vocabulary is sampled on several cores.
		var wg sync.WaitGroup
		var next atomic.Int64
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < len(ready); i = int(next.Add(1)) - 1 {
					sampleOne(i)
				}
			})
		}
		wg.Wait()
	} else {
		for i := range ready {
			sampleOne(i)
		}
	}
	for i, s := range ready {
		if reasons[i] != "" {
			e.removeRunning(s)
			e.finish(s, reasons[i], errs[i])
			continue
		}
		s.decoding = true
		e.send(s)
	}
	generated := len(ready)
	e.publish(time.Since(start), generated)
	e.statsMu.Lock()
	e.stats.PrefillTokens += int64(prefill)
	e.statsMu.Unlock()
}

// forward calls the model, turning a panic into an error: a broken model must not
// take every user down with it.
func (e *Engine) forward(ctx context.Context, seqs []Seq) (out [][]float32, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("model panicked: %v", r)
		}
	}()
	return e.m.Forward(ctx, seqs)
}

func (e *Engine) removeRunning(s *seq) {
	if i := slices.Index(e.running, s); i >= 0 {
		e.running = slices.Delete(e.running, i, i+1)
	}
}

// next samples s's next token from logits and appends it. It returns a finish reason
// when the sequence ends.
func (e *Engine) next(s *seq, logits []float32) (reason string, err error) {
	var raw []float32
	if s.req.Logprobs {
		raw = slices.Clone(logits) // the samplers penalise logits in place
	}
	var id int32
	if s.req.Policy != nil {
		var stop bool
		id, stop, err = e.callPolicy(s, logits)
		if err != nil {
			if s.ctx.Err() != nil {
				return FinishCancelled, nil // the policy call was cut short by the client
			}
			return FinishError, err
		}
		if stop {
			s.endText()
			return FinishStop, nil
		}
	} else {
		id = s.sampler.Sample(logits)
	}
	s.tokens = append(s.tokens, id)
	s.pending.Tokens = append(s.pending.Tokens, id)
	if raw != nil {
		s.pending.Logprobs = append(s.pending.Logprobs, sample.Logprobs(raw, id, s.req.TopLogprobs))
	}
	e.statsMu.Lock()
	e.stats.GeneratedTokens++
	e.statsMu.Unlock()
	if e.eos[id] || s.stopIDs[id] {
		s.endText()
		return FinishStop, nil
	}
	if s.text != nil && s.addText(s.text.Push(id)) {
		return FinishStop, nil
	}
	if len(s.tokens) >= s.limit {
		if s.endText() {
			return FinishStop, nil
		}
		return FinishLength, nil
	}
	return "", nil
}

func (e *Engine) callPolicy(s *seq, logits []float32) (id int32, stop bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine: sampler policy panicked: %v", r)
		}
	}()
	return s.sampler.SampleWith(s.ctx, s.req.Policy, s.req.PolicyTopN, logits)
}

// addText adds a detokenized delta. It reports true when the text now contains a stop
// string: the text before it goes to the pending event and the rest is dropped.
// Otherwise everything that cannot be the start of a stop string goes to the pending
// event, and the rest is held back until later text decides.
func (s *seq) addText(delta string) bool {
	s.held += delta
	if s.cutStop() {
		return true
	}
	keep := 0
	for _, stop := range s.req.StopStrings {
		// the longest suffix of held that is a proper prefix of stop
		for n := min(len(stop)-1, len(s.held)); n > keep; n-- {
			if strings.HasSuffix(s.held, stop[:n]) {
				keep = n
				break
			}
		}
	}
	s.pending.Text += s.held[:len(s.held)-keep]
	s.held = s.held[len(s.held)-keep:]
	return false
}

// endText drains the detokenizer at the end of the sequence and releases the held
// text; it reports true when that completed a stop string.
func (s *seq) endText() bool {
	if s.text != nil {
		s.held += s.text.Flush()
	}
	if s.cutStop() {
		return true
	}
	s.pending.Text += s.held
	s.held = ""
	return false
}

// cutStop looks for a stop string in the held text. On a match it emits the text
// before the earliest one and reports true.
func (s *seq) cutStop() bool {
	best := -1
	for _, stop := range s.req.StopStrings {
		if i := strings.Index(s.held, stop); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	if best < 0 {
		return false
	}
	s.pending.Text += s.held[:best]
	s.held = ""
	return true
}

// finish ends s: it releases its blocks and policy, sends the final event and closes
// its channel. s must no longer be in running or waiting.
func (e *Engine) finish(s *seq, reason string, err error) {
	if s.table != nil {
		e.pool.Release(s.table)
		s.table = nil
	}
	if s.stopWake != nil {
		s.stopWake()
	}
	if s.req.Policy != nil {
		if cerr := s.req.Policy.Close(); cerr != nil {
			e.log.Warn("engine: closing a sampler policy", "err", cerr)
		}
	}
	if reason == FinishError && err == nil {
		err = errors.New("engine: unknown error")
	}
	s.pending.Finish = reason
	s.pending.Err = err
	s.pending.Usage = Usage{PromptTokens: s.promptLen, CachedPromptTokens: s.cached, CompletionTokens: max(0, s.generated())}
	e.send(s)
	e.statsMu.Lock()
	e.stats.Finished[reason]++
	e.statsMu.Unlock()
}

// send hands s's pending delta to its outbox; it never blocks the scheduler.
func (e *Engine) send(s *seq) {
	ev := s.pending
	s.pending = Event{}
	if ev.Finish == "" && ev.Text == "" && len(ev.Tokens) == 0 {
		return
	}
	s.box.put(ev)
}

// outbox holds the not yet delivered events of one request, merged into one, between
// the scheduler (put) and the request's forwarder goroutine (deliver).
type outbox struct {
	notify chan struct{} // capacity 1: something was put
	// mu guards ev and final.
	mu    sync.Mutex
	ev    Event
	final bool
}

func newOutbox() *outbox { return &outbox{notify: make(chan struct{}, 1)} }

func (o *outbox) put(ev Event) {
	o.mu.Lock()
	o.ev = mergeEvents(o.ev, ev)
	o.final = o.final || ev.Finish != ""
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *outbox) take() (Event, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ev, final := o.ev, o.final
	o.ev = Event{}
	return ev, final
}

// putBack returns an undelivered event ahead of whatever was put since.
func (o *outbox) putBack(ev Event) {
	o.mu.Lock()
	o.ev = mergeEvents(ev, o.ev)
	o.mu.Unlock()
	o.signal()
}

// deliver is the forwarder goroutine of one request: it sends the outbox's events to
// out, merging them while the consumer lags, and closes out after the final event.
// Every accepted request gets a final event from the scheduler (cancellation ends it
// within a step, Close ends all), so deliver always returns. Once the request's
// context or the engine is done, the consumer may be gone: the final event is then
// delivered only if out has room, and out is closed regardless.
func (e *Engine) deliver(ctx context.Context, o *outbox, out chan<- Event) {
	defer close(out)
	for {
		<-o.notify
		ev, final := o.take()
		if !final && ev.Text == "" && len(ev.Tokens) == 0 {
			continue
		}
		if ctx.Err() != nil || e.ctx.Err() != nil {
			if !final {
				o.mu.Lock()
				o.ev = mergeEvents(ev, o.ev)
				o.mu.Unlock()
				continue // wait for the final event, then try once
			}
			select {
			case out <- ev:
			default:
			}
			return
		}
		select {
		case out <- ev:
			if final {
				return
			}
		case <-ctx.Done():
			o.putBack(ev)
		case <-e.ctx.Done():
			o.putBack(ev)
		}
	}
}

func mergeEvents(a, b Event) Event {
	a.Text += b.Text
	a.Tokens = append(a.Tokens, b.Tokens...)
	a.Logprobs = append(a.Logprobs, b.Logprobs...)
	a.Finish, a.Usage, a.Err = b.Finish, b.Usage, b.Err
	return a
}

// publish refreshes the gauges after a step of duration d that sampled gen tokens.
func (e *Engine) publish(d time.Duration, gen int) {
	ps := e.pool.Stats()
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	st := &e.stats
	st.Running = len(e.running)
	st.KVBlocksUsed = ps.Used
	st.KVBlocksCached = ps.Cached
	st.KVBlocksFree = ps.Free + ps.Cached
	if d > 0 {
		sec := d.Seconds()
		st.Steps++
		st.StepSeconds += sec
		st.LastStepSeconds = sec
		rate := float64(gen) / sec
		if st.TokensPerSecond == 0 {
			st.TokensPerSecond = rate
		} else {
			st.TokensPerSecond += 0.1 * (rate - st.TokensPerSecond)
		}
	}
}
