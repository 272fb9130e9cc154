package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dsgate/dsgate/core/sample"
)

// fakeTok is a byte-level tokenizer: byte b is id b+2, "<bos>" is 0, "<eos>" is 1. Its
// template mimics DeepSeek-V3's shape: <bos>system<U>user<A>assistant<eos>...<A>.
type fakeTok struct{}

func (fakeTok) Encode(text string, addBOS bool) []int32 {
	var ids []int32
	if addBOS {
		ids = append(ids, 0)
	}
	for len(text) > 0 {
		switch {
		case strings.HasPrefix(text, "<bos>"):
			ids, text = append(ids, 0), text[5:]
		case strings.HasPrefix(text, "<eos>"):
			ids, text = append(ids, 1), text[5:]
		default:
			ids, text = append(ids, int32(text[0])+2), text[1:]
		}
	}
	return ids
}

func (fakeTok) Decode(ids []int32, skipSpecial bool) string {
	var sb strings.Builder
	for _, id := range ids {
		switch {
		case id == 0 && !skipSpecial:
			sb.WriteString("<bos>")
		case id == 1 && !skipSpecial:
			sb.WriteString("<eos>")
		case id >= 2 && id < 258:
			sb.WriteByte(byte(id - 2))
		}
	}
	return sb.String()
}

func (fakeTok) ApplyChatTemplate(msgs []Message, addGen bool) (string, error) {
	var sb strings.Builder
	sb.WriteString("<bos>")
	for _, m := range msgs {
		switch m.Role {
		case "system":
			sb.WriteString(m.Content)
		case "user":
			sb.WriteString("<U>" + m.Content)
		case "assistant":
			sb.WriteString("<A>" + m.Content + "<eos>")
		case "tool":
			sb.WriteString("<T>" + m.Content)
		default:
			return "", fmt.Errorf("role %q", m.Role)
		}
	}
	if addGen {
		sb.WriteString("<A>")
	}
	return sb.String(), nil
}

func (fakeTok) BOS() int32 { return 0 }
func (fakeTok) EOS() int32 { return 1 }
func (f fakeTok) TokenText(id int32) string {
	return f.Decode([]int32{id}, false)
}

// fakeEngine generates letters derived from the seed and the prompt, EOS after
// stopAfter tokens (0 = never), one token per event with an optional delay.
type fakeEngine struct {
	mu         sync.Mutex // guards the fields below
	maxSeqLen  int
	stopAfter  int
	delay      time.Duration
	overloaded bool
	failAt     int // emit Finish error at this token index (0 = never)
	failErr    error
	block      chan struct{} // if set, generation waits for it to close
	requests   []GenRequest
	cancelled  int
	started    chan struct{} // if set, receives once per started generation
}

func newFakeEngine() *fakeEngine { return &fakeEngine{maxSeqLen: 256} }

func (f *fakeEngine) Stats() EngineStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return EngineStats{QueueLen: 0, Running: 0, KVBlocksUsed: 3, KVBlocksFree: 5, PromptTokens: 42, GeneratedTokens: 7, Steps: 9, StepSeconds: 0.5}
}

func (f *fakeEngine) lastRequest() GenRequest { return f.request(-1) }

// request returns the i-th submitted request; negative i counts from the end.
func (f *fakeEngine) request(i int) GenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i < 0 {
		i += len(f.requests)
	}
	return f.requests[i]
}

func (f *fakeEngine) Submit(ctx context.Context, req GenRequest) (<-chan GenEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.overloaded {
		return nil, fmt.Errorf("engine queue: %w", ErrOverloaded)
	}
	if len(req.Prompt)+req.MaxTokens > f.maxSeqLen {
		return nil, fmt.Errorf("%w: %d + %d > %d", ErrContextLength, len(req.Prompt), req.MaxTokens, f.maxSeqLen)
	}
	if req.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: max tokens %d", ErrInvalidRequest, req.MaxTokens)
	}
	f.requests = append(f.requests, req)
	stopAfter, delay, block, failAt, failErr, started := f.stopAfter, f.delay, f.block, f.failAt, f.failErr, f.started
	ch := make(chan GenEvent)
	var seed uint64 = 7
	if req.Sampling.Seed != nil {
		seed = *req.Sampling.Seed
	}
	go func() {
		defer close(ch)
		if req.Policy != nil {
			defer req.Policy.Close()
		}
		if started != nil {
			started <- struct{}{}
		}
		usage := Usage{PromptTokens: len(req.Prompt)}
		send := func(ev GenEvent) bool {
			select {
			case ch <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		cancelled := func() {
			f.mu.Lock()
			f.cancelled++
			f.mu.Unlock()
			usage.CompletionTokens = 0
			ch <- GenEvent{Finish: FinishCancelled, Usage: usage}
		}
		if block != nil {
			select {
			case <-block:
			case <-ctx.Done():
				cancelled()
				return
			}
		}
		for i := 0; ; i++ {
			if ctx.Err() != nil {
				cancelled()
				return
			}
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					cancelled()
					return
				}
			}
			if failAt > 0 && i == failAt {
				ch <- GenEvent{Finish: FinishError, Err: failErr, Usage: usage}
				return
			}
			if stopAfter > 0 && i == stopAfter {
				usage.CompletionTokens++
				ch <- GenEvent{Tokens: []int32{1}, Finish: FinishStop, Usage: usage}
				return
			}
			id := int32('a'+(seed+uint64(i)+uint64(len(req.Prompt)))%26) + 2
			if req.Policy != nil {
				got, stop, err := req.Policy.Next(ctx, i, nil, []sample.Candidate{{ID: id, Logit: 1}})
				if err != nil {
					ch <- GenEvent{Finish: FinishError, Err: err, Usage: usage}
					return
				}
				if stop {
					ch <- GenEvent{Finish: FinishStop, Usage: usage}
					return
				}
				id = got
			}
			usage.CompletionTokens++
			ev := GenEvent{Text: fakeTok{}.Decode([]int32{id}, true), Tokens: []int32{id}}
			if req.Logprobs {
				lp := TokenLogprob{ID: id, Logprob: -0.5}
				for k := 0; k < req.TopLogprobs; k++ {
					lp.Top = append(lp.Top, TopLogprob{ID: id + int32(k), Logprob: -0.5 - float64(k)})
				}
				ev.Logprobs = []TokenLogprob{lp}
			}
			if i+1 == req.MaxTokens {
				ev.Finish, ev.Usage = FinishLength, usage
				send(ev)
				return
			}
			if !send(ev) {
				cancelled()
				return
			}
		}
	}()
	return ch, nil
}

// fakeStore is an in-memory SessionStore whose availability can be switched off.
type fakeStore struct {
	mu    sync.Mutex // guards the fields below
	down  bool
	items map[string]*Session
	busy  map[string]bool
	now   time.Time
}

func newFakeStore() *fakeStore {
	return &fakeStore{items: map[string]*Session{}, busy: map[string]bool{}, now: time.Unix(1700000000, 0)}
}

func (f *fakeStore) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func (f *fakeStore) check() error {
	if f.down {
		return fmt.Errorf("dial: %w", ErrSessionStoreUnavailable)
	}
	return nil
}

func (f *fakeStore) tick() time.Time { f.now = f.now.Add(time.Second); return f.now }

func (f *fakeStore) get(owner, id string) (*Session, error) {
	s, ok := f.items[id]
	if !ok || s.Owner != owner {
		return nil, ErrSessionNotFound
	}
	return s, nil
}

func clone(s *Session) *Session {
	c := *s
	c.Turns = append([]Turn(nil), s.Turns...)
	c.Metadata = map[string]string{}
	for k, v := range s.Metadata {
		c.Metadata[k] = v
	}
	c.NumTurns = len(s.Turns)
	return &c
}

func (f *fakeStore) Create(ctx context.Context, owner, system string, md map[string]string) (*Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	now := f.tick()
	s := &Session{ID: "s_" + hex.EncodeToString(b[:]), Owner: owner, Created: now, Updated: now, System: system, Metadata: md}
	f.items[s.ID] = s
	return clone(s), nil
}

func (f *fakeStore) Get(ctx context.Context, owner, id string) (*Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, err
	}
	s, err := f.get(owner, id)
	if err != nil {
		return nil, err
	}
	return clone(s), nil
}

func (f *fakeStore) List(ctx context.Context, owner string, limit, offset int) ([]*Session, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, 0, err
	}
	var all []*Session
	for _, s := range f.items {
		if s.Owner == owner {
			all = append(all, clone(s))
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Updated.After(all[j].Updated) })
	total := len(all)
	if offset > total {
		offset = total
	}
	all = all[offset:]
	if len(all) > limit {
		all = all[:limit]
	}
	return all, total, nil
}

func (f *fakeStore) Delete(ctx context.Context, owner, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if _, err := f.get(owner, id); err != nil {
		return err
	}
	delete(f.items, id)
	return nil
}

func (f *fakeStore) SetMetadata(ctx context.Context, owner, id string, md map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	s, err := f.get(owner, id)
	if err != nil {
		return err
	}
	s.Metadata = md
	s.Updated = f.tick()
	return nil
}

func (f *fakeStore) Acquire(ctx context.Context, owner, id string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, err
	}
	if _, err := f.get(owner, id); err != nil {
		return nil, err
	}
	if f.busy[id] {
		return nil, ErrSessionBusy
	}
	f.busy[id] = true
	return func() { f.mu.Lock(); delete(f.busy, id); f.mu.Unlock() }, nil
}

func (f *fakeStore) AppendTurn(ctx context.Context, owner, id string, expected int, t Turn) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	s, err := f.get(owner, id)
	if err != nil {
		return err
	}
	if len(s.Turns) != expected {
		return ErrSessionConflict
	}
	s.Turns = append(s.Turns, t)
	s.Updated = f.tick()
	return nil
}

func (f *fakeStore) Ping(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.check()
}

// fakeExt is an extension host with a template "echo" (renders like the built-in one),
// a sampler "first" (picks the first candidate), a sampler "trap" (fails).
type fakeExt struct {
	mu    sync.Mutex // guards items
	items map[string]ExtensionInfo
	limit int64
}

func newFakeExt() *fakeExt {
	return &fakeExt{limit: 1024, items: map[string]ExtensionInfo{
		"echo":  {Name: "echo", Kind: "template", ABIVersion: 1},
		"first": {Name: "first", Kind: "sampler", ABIVersion: 1},
		"trap":  {Name: "trap", Kind: "sampler", ABIVersion: 1},
	}}
}

func (f *fakeExt) MaxModuleBytes() int64 { return f.limit }

func (f *fakeExt) Add(ctx context.Context, name, kind string, module []byte) (ExtensionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.items[name]; ok {
		return ExtensionInfo{}, fmt.Errorf("%w: %s", ErrExtensionExists, name)
	}
	if string(module[:min(4, len(module))]) != "\x00asm" {
		return ExtensionInfo{}, fmt.Errorf("%w: not a WebAssembly module", ErrInvalidModule)
	}
	info := ExtensionInfo{Name: name, Kind: kind, Size: int64(len(module)), ABIVersion: 1, SHA256: "x"}
	f.items[name] = info
	return info, nil
}

func (f *fakeExt) List() []ExtensionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ExtensionInfo
	for _, v := range f.items {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeExt) Get(name string) (ExtensionInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.items[name]
	return i, ok
}

func (f *fakeExt) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.items[name]; !ok {
		return ErrExtensionNotFound
	}
	delete(f.items, name)
	return nil
}

func (f *fakeExt) kind(name, kind string) error {
	i, ok := f.Get(name)
	if !ok {
		return fmt.Errorf("%w: %s", ErrExtensionNotFound, name)
	}
	if i.Kind != kind {
		return fmt.Errorf("%w: %s is a %s", ErrInvalidRequest, name, i.Kind)
	}
	return nil
}

func (f *fakeExt) RenderTemplate(ctx context.Context, name string, in TemplateInput) (string, error) {
	if err := f.kind(name, "template"); err != nil {
		return "", err
	}
	if in.BOSToken != "<bos>" || in.EOSToken != "<eos>" {
		return "", fmt.Errorf("%w: bad input %+v", ErrExtensionFailed, in)
	}
	s, _ := fakeTok{}.ApplyChatTemplate(in.Messages, in.AddGenerationPrompt)
	return s, nil
}

func (f *fakeExt) NewSampler(ctx context.Context, name string, args json.RawMessage, seed uint64) (sample.Policy, error) {
	if err := f.kind(name, "sampler"); err != nil {
		return nil, err
	}
	return &fakePolicy{trap: name == "trap"}, nil
}

type fakePolicy struct{ trap bool }

func (p *fakePolicy) Next(ctx context.Context, step int, recent []int32, c []sample.Candidate) (int32, bool, error) {
	if p.trap {
		return 0, false, fmt.Errorf("wasm trap: unreachable: %w", ErrExtensionFailed)
	}
	if step >= 3 {
		return 0, true, nil
	}
	return int32('Z') + 2, false, nil
}

func (p *fakePolicy) Close() error { return nil }

// set changes the fake's knobs under its lock.
func (f *fakeEngine) set(fn func(f *fakeEngine)) { f.mu.Lock(); fn(f); f.mu.Unlock() }
