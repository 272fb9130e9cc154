package extensions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/sample"
	"go.uber.org/goleak"
)

// cands returns n candidates with ids base, base+1, ... and descending logits.
func cands(n int, base int32) []sample.Candidate {
	out := make([]sample.Candidate, n)
	for i := range out {
		out[i] = sample.Candidate{ID: base + int32(i), Logit: 10 - float32(i)*0.25}
	}
	return out
}

func TestUploadValidation(t *testing.T) {
	h := newHost(t, Options{MaxModuleBytes: 8 << 20, CallTimeout: 100 * time.Millisecond, MemoryLimitPages: 256})
	mustAdd(t, h, "taken", KindSampler, fixtures.wat["greedy"])
	big := append([]byte{0, 'a', 's', 'm', 1, 0, 0, 0}, make([]byte, 8<<20)...)
	tests := []struct {
		name, mod, kind string
		bin             []byte
		want            error
		msg             string
	}{
		{"not wasm", "x", KindSampler, []byte("#!/bin/sh\nrm -rf /\n"), ErrInvalidModule, "not a WebAssembly binary"},
		{"empty", "x", KindSampler, nil, ErrInvalidModule, "not a WebAssembly binary"},
		{"bad binary version", "x", KindSampler, []byte{0, 'a', 's', 'm', 2, 0, 0, 0}, ErrInvalidModule, "binary version"},
		{"truncated", "x", KindSampler, fixtures.wat["greedy"][:40], ErrInvalidModule, "compile"},
		{"too large", "x", KindSampler, big, ErrTooLarge, "limit"},
		{"wrong ABI version", "x", KindSampler, fixtures.wat["badabi"], ErrInvalidModule, "returned ABI version 2"},
		{"missing exports", "x", KindSampler, fixtures.wat["noexports"], ErrInvalidModule, "missing export dsgate_sampler_next"},
		{"template exports missing", "x", KindTemplate, fixtures.wat["greedy"], ErrInvalidModule, "missing export dsgate_template_render"},
		{"wrong signature", "x", KindSampler, fixtures.wat["badsig"], ErrInvalidModule, "export dsgate_sampler_next has type (i32) -> (i32), want (i32, i32) -> (i32)"},
		{"no memory", "x", KindSampler, fixtures.wat["nomemory"], ErrInvalidModule, `missing export "memory"`},
		{"WASI path_open", "x", KindSampler, fixtures.wat["pathopen"], ErrInvalidModule, "import wasi_snapshot_preview1.path_open is not allowed"},
		{"WASI sock_accept", "x", KindSampler, fixtures.wat["sock"], ErrInvalidModule, "import wasi_snapshot_preview1.sock_accept is not allowed"},
		{"host import", "x", KindSampler, fixtures.wat["envimport"], ErrInvalidModule, "import env.host_exec is not allowed"},
		{"start loops forever", "x", KindSampler, fixtures.wat["startloop"], ErrInvalidModule, "did not finish"},
		{"memory above limit", "x", KindSampler, fixtures.wat["hugememory"], ErrInvalidModule, "compile"},
		{"bad name", "../etc/passwd", KindSampler, fixtures.wat["greedy"], ErrInvalidModule, "name"},
		{"bad kind", "x", "tokenizer", fixtures.wat["greedy"], ErrInvalidModule, "kind"},
		{"name taken", "taken", KindSampler, fixtures.wat["greedy"], ErrExists, "taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Add(context.Background(), tt.mod, tt.kind, tt.bin)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Add: got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Add: message %q does not say %q", err, tt.msg)
			}
		})
	}
	if got := h.List(); len(got) != 1 || got[0].Name != "taken" {
		t.Errorf("List after refused uploads = %+v, want only \"taken\"", got)
	}
	entries, _ := os.ReadDir(h.opt.Dir)
	if len(entries) != 2 { // taken.wasm + taken.json
		t.Errorf("Dir holds %d entries after refused uploads, want 2", len(entries))
	}
}

// TestHostileModules: each misbehaving module fails only its own call with ErrFailed, within
// deadline + 100 ms for the infinite loop, while a healthy sampler on the same host keeps
// answering correctly throughout.
func TestHostileModules(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newHost(t, Options{CallTimeout: timeout, MemoryLimitPages: 64})
	mustAdd(t, h, "greedy", KindSampler, fixtures.wat["greedy"])
	for _, name := range []string{"loop", "grow", "trap", "outside", "errcode"} {
		mustAdd(t, h, name, KindSampler, fixtures.wat[name])
	}
	for _, name := range []string{"bigout", "badalloc", "tmplloop"} {
		mustAdd(t, h, name, KindTemplate, fixtures.wat[name])
	}

	// A healthy neighbour runs all along.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var neighbourErr error
	var neighbourSteps int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			p, err := h.NewSampler(context.Background(), "greedy", nil, 1)
			if err != nil {
				neighbourErr = err
				return
			}
			for i := range 50 {
				id, stop, err := p.Next(context.Background(), i, nil, cands(64, 100))
				if err != nil || stop || id != 100 {
					neighbourErr = errors.Join(err, errors.New("healthy sampler answered wrongly"))
					return
				}
				neighbourSteps++
			}
			_ = p.Close()
		}
	}()

	samplerTests := []struct{ name, msg string }{
		{"loop", "deadline"},
		{"grow", ""}, // traps at the memory limit, or runs out of time growing

		{"trap", "integer divide by zero"},
		{"outside", "id 999999, which is not among the 64 candidates"},
		{"errcode", "returned error -7: no good candidate"},
	}
	for _, tt := range samplerTests {
		t.Run(tt.name, func(t *testing.T) {
			// The machine is shared and noisy: a timing bound gets three tries.
			var tries []time.Duration
			for range 3 {
				p, err := h.NewSampler(context.Background(), tt.name, nil, 7)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				_, _, err = p.Next(context.Background(), 0, []int32{5, 6}, cands(64, 100))
				tries = append(tries, time.Since(start))
				if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("Next: got %v, want ErrFailed saying %q", err, tt.msg)
				}
				// The policy stays failed; the host stays usable.
				if _, _, err2 := p.Next(context.Background(), 1, nil, cands(64, 100)); !errors.Is(err2, ErrFailed) {
					t.Errorf("second Next after failure: %v, want ErrFailed", err2)
				}
				_ = p.Close()
				if tt.name != "loop" || tries[len(tries)-1] <= timeout+100*time.Millisecond {
					break
				}
			}
			if tt.name == "loop" {
				if best := slices.Min(tries); best > timeout+100*time.Millisecond {
					t.Errorf("Next failed after %v, want within %v", tries, timeout+100*time.Millisecond)
				}
				t.Logf("infinite loop failed after %v (deadline %v)", tries, timeout)
			}
		})
	}
	templateTests := []struct{ name, msg string }{
		{"bigout", "output of 2097152 bytes exceeds the limit"},
		{"badalloc", "outside its"},
		{"tmplloop", "deadline"},
	}
	for _, tt := range templateTests {
		t.Run(tt.name, func(t *testing.T) {
			var tries []time.Duration
			for range 3 { // a timing bound gets three tries on this shared machine
				start := time.Now()
				_, err := h.RenderTemplate(context.Background(), tt.name, TemplateInput{Messages: []Message{{Role: "user", Content: "hi"}}})
				tries = append(tries, time.Since(start))
				if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("RenderTemplate: got %v, want ErrFailed saying %q", err, tt.msg)
				}
				if tt.name != "tmplloop" || tries[len(tries)-1] <= timeout+100*time.Millisecond {
					break
				}
			}
			if tt.name == "tmplloop" {
				if best := slices.Min(tries); best > timeout+100*time.Millisecond {
					t.Errorf("RenderTemplate failed after %v, want within %v", tries, timeout+100*time.Millisecond)
				}
				t.Logf("infinite loop failed after %v (deadline %v)", tries, timeout)
			}
		})
	}
	stop()
	wg.Wait()
	if neighbourErr != nil || neighbourSteps == 0 {
		t.Fatalf("healthy neighbour: %v after %d steps", neighbourErr, neighbourSteps)
	}
	// Every hostile module can be called again (fresh instance) and fails the same way.
	if _, err := h.NewSampler(context.Background(), "loop", nil, 0); err != nil {
		t.Fatalf("a new request on a module whose last call timed out: %v", err)
	}
}

func TestCallCancelled(t *testing.T) {
	h := newHost(t, Options{CallTimeout: 5 * time.Second})
	mustAdd(t, h, "loop", KindSampler, fixtures.wat["loop"])
	p, err := h.NewSampler(context.Background(), "loop", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = p.Next(ctx, 0, nil, cands(4, 0))
	if !errors.Is(err, ErrFailed) || time.Since(start) > time.Second {
		t.Fatalf("Next under a cancelled request: %v after %v", err, time.Since(start))
	}
}

// TestTenantIsolation: two tenants' requests on the same stateful sampler never see each other's
// state, interleaved or one after the other (every request gets a fresh instance).
func TestTenantIsolation(t *testing.T) {
	h := newHost(t, Options{PoolSize: 1})
	mustAdd(t, h, "counter", KindSampler, fixtures.wat["counter"])
	mustAdd(t, h, "banned", KindSampler, fixtures.examples["bannedwords"])
	ctx := context.Background()

	a, err := h.NewSampler(ctx, "counter", json.RawMessage(`"A"`), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.NewSampler(ctx, "counter", json.RawMessage(`"B"`), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		for _, p := range []sample.Policy{a, b} {
			id, _, err := p.Next(ctx, i, nil, cands(16, 0))
			if err != nil || id != int32(i) {
				t.Fatalf("step %d: id %d err %v, want candidate %d (its own call count)", i, id, err, i)
			}
		}
	}
	_ = a.Close()
	_ = b.Close()
	c, err := h.NewSampler(ctx, "counter", json.RawMessage(`"C"`), 3)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := c.Next(ctx, 0, nil, cands(16, 0)); err != nil || id != 0 {
		t.Fatalf("a later request saw earlier state: id %d err %v", id, err)
	}
	_ = c.Close()

	// Tenant A bans token 100 (the best candidate); tenant B bans nothing.
	pa, err := h.NewSampler(ctx, "banned", json.RawMessage(`{"banned":[[100]]}`), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := h.NewSampler(ctx, "banned", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for i := range 3 {
		ida, _, erra := pa.Next(ctx, i, nil, cands(8, 100))
		idb, _, errb := pb.Next(ctx, i, nil, cands(8, 100))
		if erra != nil || errb != nil || ida != 101 || idb != 100 {
			t.Fatalf("step %d: tenant A chose %d (%v), want 101; tenant B chose %d (%v), want 100", i, ida, erra, idb, errb)
		}
	}
}

func TestExampleSamplers(t *testing.T) {
	h := newHost(t, Options{})
	for _, name := range []string{"topp", "minp", "bannedwords"} {
		mustAdd(t, h, name, KindSampler, fixtures.examples[name])
	}
	mustAdd(t, h, "greedy", KindSampler, fixtures.wat["greedy"])
	mustAdd(t, h, "wasi", KindSampler, fixtures.wat["wasi"])
	ctx := context.Background()
	// Candidates 0..63; candidate 0 far ahead of the rest for "peaked".
	peaked := cands(64, 0)
	peaked[0].Logit = 100
	flat := cands(64, 0)
	for i := range flat {
		flat[i].Logit = 1
	}
	run := func(t *testing.T, name, args string, seed uint64, steps int, c []sample.Candidate) []int32 {
		t.Helper()
		var raw json.RawMessage
		if args != "" {
			raw = json.RawMessage(args)
		}
		p, err := h.NewSampler(ctx, name, raw, seed)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var ids []int32
		for i := range steps {
			id, stop, err := p.Next(ctx, i, ids, c)
			if err != nil {
				t.Fatal(err)
			}
			if stop {
				break
			}
			ids = append(ids, id)
		}
		return ids
	}
	distinct := func(ids []int32) int {
		m := map[int32]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return len(m)
	}
	t.Run("top-p peaked is greedy", func(t *testing.T) {
		for _, id := range run(t, "topp", `{"top_p":0.9}`, 1, 20, peaked) {
			if id != 0 {
				t.Fatalf("chose %d, want 0", id)
			}
		}
	})
	t.Run("top-p flat cuts the tail", func(t *testing.T) {
		ids := run(t, "topp", `{"top_p":0.25}`, 1, 200, flat)
		for _, id := range ids {
			if id >= 16 { // 16 of 64 equal candidates reach p = 0.25
				t.Fatalf("chose %d outside the nucleus", id)
			}
		}
		if distinct(ids) < 8 {
			t.Errorf("only %d distinct ids in 200 draws from 16", distinct(ids))
		}
	})
	t.Run("seeded and reproducible", func(t *testing.T) {
		a := run(t, "topp", `{"top_p":1}`, 42, 50, flat)
		b := run(t, "topp", `{"top_p":1}`, 42, 50, flat)
		c := run(t, "topp", `{"top_p":1}`, 43, 50, flat)
		if !slicesEqual(a, b) || slicesEqual(a, c) {
			t.Fatalf("same seed %v vs %v; other seed %v", a, b, c)
		}
	})
	t.Run("top-p stop id", func(t *testing.T) {
		if ids := run(t, "topp", `{"temperature":0,"stop_ids":[0]}`, 1, 5, peaked); len(ids) != 0 {
			t.Fatalf("got %v, want an immediate stop", ids)
		}
	})
	t.Run("top-p bad args", func(t *testing.T) {
		_, err := h.NewSampler(ctx, "topp", json.RawMessage(`{"top_p":7}`), 1)
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "need 0 < top_p <= 1") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("min-p", func(t *testing.T) {
		c := cands(64, 0) // logits 10, 9.75, ...: p_i/p_0 = exp(-0.25 i) >= 0.5 for i <= 2
		ids := run(t, "minp", `{"min_p":0.5}`, 3, 200, c)
		for _, id := range ids {
			if id > 2 {
				t.Fatalf("chose %d below min_p", id)
			}
		}
		if distinct(ids) != 3 {
			t.Errorf("%d distinct ids, want 3", distinct(ids))
		}
	})
	t.Run("banned words", func(t *testing.T) {
		// Ban the two-token word [0 0]: after a 0, the best candidate 0 is skipped.
		ids := run(t, "bannedwords", `{"banned":[[0,0],[5]]}`, 1, 6, peaked)
		want := []int32{0, 1, 0, 1, 0, 1}
		if !slicesEqual(ids, want) {
			t.Fatalf("got %v, want %v", ids, want)
		}
	})
	t.Run("Go template uploaded as a sampler", func(t *testing.T) {
		mustAdd(t, h, "tmpl-as-sampler", KindSampler, fixtures.examples["dsv3template"])
		_, err := h.NewSampler(ctx, "tmpl-as-sampler", nil, 1)
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "no handler registered") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("hand-written WAT greedy", func(t *testing.T) {
		c := cands(64, 7)
		if ids := run(t, "greedy", "", 1, 3, c); !slicesEqual(ids, []int32{7, 7, 7}) {
			t.Fatalf("got %v", ids)
		}
		if ids := run(t, "greedy", "", 1, 3, cands(4, 1)); len(ids) != 0 {
			t.Fatalf("got %v, want a stop on id 1", ids)
		}
	})
	t.Run("WASI clock fixed, random seeded", func(t *testing.T) {
		a := run(t, "wasi", "", 11, 30, flat)
		b := run(t, "wasi", "", 11, 30, flat)
		c := run(t, "wasi", "", 12, 30, flat)
		if len(a) != 30 || !slicesEqual(a, b) || slicesEqual(a, c) {
			t.Fatalf("seed 11: %v and %v; seed 12: %v", a, b, c)
		}
	})
}

func slicesEqual(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPersistenceAndDelete(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	h, err := Open(ctx, Options{Dir: dir, CacheDir: fixtures.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	info := mustAdd(t, h, "dsv3", KindTemplate, fixtures.examples["dsv3template"])
	mustAdd(t, h, "greedy", KindSampler, fixtures.wat["greedy"])
	mustAdd(t, h, "gone", KindSampler, fixtures.wat["first"])
	if err := h.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	if err := h.Delete("gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.NewSampler(ctx, "greedy", nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewSampler after Close: %v", err)
	}
	// A corrupt module on disk is skipped, the rest reload.
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"name":"broken","kind":"sampler","sha256":"00"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.wasm"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := newHost(t, Options{Dir: dir})
	list := h2.List()
	if len(list) != 2 || list[0] != info || list[1].Name != "greedy" {
		t.Fatalf("after reopen List = %+v", list)
	}
	got, ok := h2.Get("dsv3")
	if !ok || got.SHA256 != info.SHA256 || got.Size != int64(len(fixtures.examples["dsv3template"])) || got.ABIVersion != 1 {
		t.Fatalf("Get = %+v %v", got, ok)
	}
	out, err := h2.RenderTemplate(ctx, "dsv3", TemplateInput{BOSToken: "<s>", Messages: []Message{{Role: "user", Content: "Hi"}}, AddGenerationPrompt: true})
	if err != nil || out != "<s><｜User｜>Hi<｜Assistant｜>" {
		t.Fatalf("render after reopen: %q %v", out, err)
	}
	if _, err := h2.RenderTemplate(ctx, "greedy", TemplateInput{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a sampler used as a template: %v, want ErrNotFound", err)
	}
	if _, err := h2.NewSampler(ctx, "nope", nil, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown sampler: %v, want ErrNotFound", err)
	}
	b, _ := json.Marshal(info)
	for _, key := range []string{`"name"`, `"kind"`, `"sha256"`, `"size"`, `"abi_version"`, `"created"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("Info JSON %s lacks %s", b, key)
		}
	}
}

func TestNoLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h, err := Open(context.Background(), Options{CacheDir: fixtures.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, h, "greedy", KindSampler, fixtures.wat["greedy"])
	p, err := h.NewSampler(context.Background(), "greedy", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Next(context.Background(), 0, nil, cands(64, 5)); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestBounds: the host hands a sampler at most TopN candidates and MaxRecent recent ids.
func TestBounds(t *testing.T) {
	h := newHost(t, Options{TopN: 64, MaxRecent: 16})
	mustAdd(t, h, "lastcand", KindSampler, fixtures.wat["lastcand"])
	mustAdd(t, h, "nrecent", KindSampler, fixtures.wat["nrecent"])
	ctx := context.Background()
	recent := make([]int32, 100)
	tests := []struct {
		name   string
		recent []int32
		n      int
		want   int32
	}{
		{"lastcand", nil, 100, 63}, // 100 candidates cut to 64
		{"lastcand", nil, 5, 4},
		{"nrecent", recent, 128, 16}, // 100 recent ids cut to 16
		{"nrecent", recent[:3], 128, 3},
	}
	for _, tt := range tests {
		p, err := h.NewSampler(ctx, tt.name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := p.Next(ctx, 0, tt.recent, cands(tt.n, 0))
		_ = p.Close()
		if err != nil || id != tt.want {
			t.Errorf("%s with %d recent, %d candidates: id %d err %v, want %d", tt.name, len(tt.recent), tt.n, id, err, tt.want)
		}
	}
	p, err := h.NewSampler(ctx, "lastcand", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, _, err := p.Next(ctx, 0, nil, nil); !errors.Is(err, ErrFailed) {
		t.Errorf("no candidates: %v, want ErrFailed", err)
	}
}

// TestHammer: many sequences at once on shared modules, while modules come and go.
func TestHammer(t *testing.T) {
	h := newHost(t, Options{PoolSize: 2})
	mustAdd(t, h, "greedy", KindSampler, fixtures.wat["greedy"])
	mustAdd(t, h, "counter", KindSampler, fixtures.wat["counter"])
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				name := []string{"greedy", "counter"}[(g+i)%2]
				p, err := h.NewSampler(ctx, name, json.RawMessage(`"x"`), uint64(i))
				if err != nil {
					errs <- err
					return
				}
				for step := range 5 {
					want := int32(10)
					if name == "counter" {
						want = int32(10 + step)
					}
					if id, _, err := p.Next(ctx, step, nil, cands(8, 10)); err != nil || id != want {
						errs <- fmt.Errorf("%s step %d: id %d err %v, want %d", name, step, id, err, want)
						return
					}
				}
				_ = p.Close()
			}
		}()
	}
	wg.Add(1)
	go func() { // churn the registry meanwhile
		defer wg.Done()
		for i := range 10 {
			name := fmt.Sprintf("churn%d", i)
			if _, err := h.Add(ctx, name, KindSampler, fixtures.wat["first"]); err != nil {
				errs <- err
				return
			}
			_ = h.List()
			if err := h.Delete(name); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestDeleteWhileRefilling deletes modules (all with the same bytes) while the refill
// goroutine is filling their pools, then closes the host, which waits for that
// goroutine. Two races lived here: a drain that checked the pool's length and then
// waited for an instance blocked forever when Delete emptied the pool in between
// (TestHammer hung under qemu-aarch64), and an instantiation of a deleted module read
// the half-built code of the next module with the same bytes (a data race and a panic
// under -race, in about one run of 30 in six). Both are timing-dependent: this test
// can pass on broken code; it fails when either shows up.
func TestDeleteWhileRefilling(t *testing.T) {
	h, err := Open(context.Background(), Options{Dir: t.TempDir(), CacheDir: fixtures.cacheDir, PoolSize: 8,
		CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		name := fmt.Sprintf("m%d", i)
		mustAdd(t, h, name, KindSampler, fixtures.wat["first"])
		if err := h.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- h.Close(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute: the refill goroutine is stuck")
	}
}
