package kvcache

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func seqTokens(n int, base int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = base + int32(i)
	}
	return out
}

func mustNew(t *testing.T, n, bs int) *Pool {
	t.Helper()
	p, err := New(n, bs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewRejectsBadSizes(t *testing.T) {
	for _, c := range [][2]int{{0, 16}, {4, 0}, {-1, 4}} {
		if _, err := New(c[0], c[1]); err == nil {
			t.Errorf("New(%d, %d) succeeded", c[0], c[1])
		}
	}
}

func TestPrefixReuse(t *testing.T) {
	cases := []struct {
		name      string
		first     int // prompt length of the first sequence (all written and committed)
		second    []int32
		tenant2   string
		wantMatch int
	}{
		{"same-prompt-leaves-one-token", 32, seqTokens(32, 0), "a", 16},
		{"longer", 32, seqTokens(40, 0), "a", 32},
		{"partial-block-not-shared", 30, seqTokens(40, 0), "a", 16},
		{"diverges-in-block-2", 48, append(seqTokens(20, 0), seqTokens(20, 500)...), "a", 16},
		{"other-tenant", 32, seqTokens(40, 0), "b", 0},
		{"diverges-first-token", 32, seqTokens(40, 1), "a", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, 16, 16)
			toks := seqTokens(tc.first, 0)
			a := p.NewTable("a")
			if err := p.Reserve(a, tc.first); err != nil {
				t.Fatal(err)
			}
			p.Commit(a, toks, tc.first)
			p.Release(a)
			b := p.NewTable(tc.tenant2)
			got := p.Match(b, tc.second)
			if got != tc.wantMatch {
				t.Fatalf("matched %d positions, want %d", got, tc.wantMatch)
			}
			if err := p.Reserve(b, len(tc.second)); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Used != p.BlocksFor(len(tc.second)) || st.Used+st.Cached+st.Free != 16 {
				t.Fatalf("stats %+v", st)
			}
			p.Release(b)
			if st := p.Stats(); st.Used != 0 {
				t.Fatalf("after release: %+v", st)
			}
		})
	}
}

func TestSharedBlocksAreRefcounted(t *testing.T) {
	p := mustNew(t, 8, 4)
	toks := seqTokens(9, 0)
	a := p.NewTable("")
	_ = p.Reserve(a, 9)
	p.Commit(a, toks, 8)
	b := p.NewTable("")
	if n := p.Match(b, toks); n != 8 {
		t.Fatalf("matched %d while a still runs, want 8", n)
	}
	if !slices.Equal(b.Blocks, a.Blocks[:2]) {
		t.Fatalf("b %v does not share a's blocks %v", b.Blocks, a.Blocks)
	}
	_ = p.Reserve(b, 9)
	if b.Blocks[2] == a.Blocks[2] {
		t.Fatal("partial block shared")
	}
	p.Release(a)
	if st := p.Stats(); st.Used != 3 || st.Cached != 0 {
		t.Fatalf("after releasing a: %+v", st)
	}
	p.Release(b)
	if st := p.Stats(); st.Used != 0 || st.Cached != 2 || st.Free != 6 {
		t.Fatalf("after releasing both: %+v", st)
	}
	p.Flush()
	if st := p.Stats(); st.Free != 8 {
		t.Fatalf("after flush: %+v", st)
	}
}

func TestLRUEviction(t *testing.T) {
	p := mustNew(t, 4, 2)
	// Two cached chains of 2 blocks: x (older) and y (newer).
	for _, base := range []int32{100, 200} {
		tb := p.NewTable("")
		toks := seqTokens(4, base)
		_ = p.Reserve(tb, 4)
		p.Commit(tb, toks, 4)
		p.Release(tb)
	}
	if st := p.Stats(); st.Cached != 4 || st.Free != 0 {
		t.Fatalf("%+v", st)
	}
	// Allocating one block evicts the tail of the older chain x first.
	n := p.NewTable("")
	if err := p.Reserve(n, 1); err != nil {
		t.Fatal(err)
	}
	probe := p.NewTable("")
	if got := p.Match(probe, seqTokens(5, 100)); got != 2 {
		t.Fatalf("x matched %d, want its head block only (2)", got)
	}
	p.Release(probe)
	probe = p.NewTable("")
	if got := p.Match(probe, seqTokens(5, 200)); got != 4 {
		t.Fatalf("y matched %d, want 4", got)
	}
	// y is referenced now: 1 block free-able (x head) + 0 free => asking for 2 fails.
	if err := p.Reserve(n, 6); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("err %v, want ErrNoSpace", err)
	}
	if len(n.Blocks) != 1 {
		t.Fatalf("failed reserve changed the table: %v", n.Blocks)
	}
	p.Release(probe)
	p.Release(n)
	if st := p.Stats(); st.Used != 0 || st.Used+st.Cached+st.Free != 4 {
		t.Fatalf("%+v", st)
	}
}

func TestDuplicatePrefixStaysPrivate(t *testing.T) {
	p := mustNew(t, 8, 2)
	toks := seqTokens(4, 7)
	a, b := p.NewTable(""), p.NewTable("")
	_ = p.Reserve(a, 4)
	_ = p.Reserve(b, 4)
	p.Commit(a, toks, 4)
	p.Commit(b, toks, 4)
	p.Release(a)
	p.Release(b)
	if st := p.Stats(); st.Cached != 2 || st.Free != 6 {
		t.Fatalf("%+v", st)
	}
}

// TestRandomOperations drives the pool with random sequences and checks its invariants
// against a shadow model of who holds which block.
func TestRandomOperations(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const nb, bs = 24, 4
	p := mustNew(t, nb, bs)
	type live struct {
		t    *Table
		toks []int32
	}
	var lives []live
	check := func() {
		refs := make([]int32, nb)
		for _, l := range lives {
			for i, b := range l.t.Blocks {
				refs[b]++
				// a block held by two tables must be full and indexed with equal tokens
				if p.refs[b] > 1 && (!p.cached[b] || !slices.Equal(p.blockTokens(b), l.toks[i*bs:(i+1)*bs])) {
					t.Fatalf("shared block %d is not a committed full block of this sequence", b)
				}
			}
		}
		if !slices.Equal(refs, p.refs) {
			t.Fatalf("refs %v, shadow %v", p.refs, refs)
		}
		st := p.Stats()
		if st.Used+st.Cached+st.Free != nb {
			t.Fatalf("stats %+v", st)
		}
	}
	for step := 0; step < 5000; step++ {
		switch op := r.IntN(3); {
		case op == 0 || len(lives) == 0:
			// new sequence over a small alphabet so that prefixes repeat
			toks := make([]int32, 1+r.IntN(20))
			for i := range toks {
				toks[i] = int32(r.IntN(2))
			}
			tb := p.NewTable([]string{"a", "b"}[r.IntN(2)])
			m := p.Match(tb, toks)
			if m%bs != 0 || m > len(toks)-1 {
				t.Fatalf("matched %d of %d", m, len(toks))
			}
			if err := p.Reserve(tb, len(toks)); err != nil {
				p.Release(tb)
				continue
			}
			p.Commit(tb, toks, len(toks))
			lives = append(lives, live{tb, toks})
		case op == 1:
			i := r.IntN(len(lives))
			p.Release(lives[i].t)
			lives = slices.Delete(lives, i, i+1)
		default:
			// grow a sequence by one token
			l := &lives[r.IntN(len(lives))]
			l.toks = append(l.toks, int32(r.IntN(2)))
			if err := p.Reserve(l.t, len(l.toks)); err != nil {
				l.toks = l.toks[:len(l.toks)-1]
				continue
			}
			p.Commit(l.t, l.toks, len(l.toks))
		}
		check()
	}
	for _, l := range lives {
		p.Release(l.t)
	}
	if st := p.Stats(); st.Used != 0 {
		t.Fatalf("leaked blocks: %+v", st)
	}
}
