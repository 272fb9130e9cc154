package tokenizer

import (
	"container/heap"
	"sync"
)

// pairTable maps a pair of adjacent token ids to its merge: an open-addressing hash table
// (linear probing) keyed by left<<32|right, read-only after Load.
type pairTable struct {
	keys  []uint64 // emptyKey marks a free slot
	vals  []uint64 // rank<<32 | merged id
	shift uint
}

const emptyKey = ^uint64(0)

func newPairTable(n int) *pairTable {
	size := 1
	bits := uint(0)
	for size < 2*n {
		size <<= 1
		bits++
	}
	p := &pairTable{keys: make([]uint64, size), vals: make([]uint64, size), shift: 64 - bits}
	for i := range p.keys {
		p.keys[i] = emptyKey
	}
	return p
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (p *pairTable) slot(k uint64) uint64 { return (k * 0x9E3779B97F4A7C15) >> p.shift }

// put inserts a merge; the first insertion of a pair wins (a repeated merge keeps its lowest rank).
func (p *pairTable) put(a, b int32, rank uint32, merged int32) {
	k := pairKey(a, b)
	mask := uint64(len(p.keys) - 1)
	for i := p.slot(k); ; i = (i + 1) & mask {
		switch p.keys[i] {
		case emptyKey:
			p.keys[i] = k
			p.vals[i] = uint64(rank)<<32 | uint64(uint32(merged))
			return
		case k:
			return
		}
	}
}

// get returns the merge rank and merged id of a pair; ok is false when the pair never merges.
func (p *pairTable) get(a, b int32) (rank uint32, merged int32, ok bool) {
	k := pairKey(a, b)
	mask := uint64(len(p.keys) - 1)
	for i := p.slot(k); ; i = (i + 1) & mask {
		switch p.keys[i] {
		case k:
			v := p.vals[i]
			return uint32(v >> 32), int32(uint32(v)), true
		case emptyKey:
			return 0, 0, false
		}
	}
}

const noMerge = ^uint32(0)

// smallBPE is the piece length (bytes) up to which the quadratic in-place merge is used; longer
// pieces use the heap (O(n log n)), as HF tokenizers does for every word.
const smallBPE = 128

// bpe appends the ids of one pre-token to out: classic BPE, repeatedly merging the adjacent pair
// with the lowest rank, leftmost first (spec §2.2 step 4).
func (t *Tokenizer) bpe(piece string, out []int32) []int32 {
	if len(piece) == 1 {
		return append(out, t.byteID[piece[0]])
	}
	if len(piece) > smallBPE {
		return t.bpeHeap(piece, out)
	}
	var symBuf [smallBPE]int32
	var rankBuf [smallBPE]uint32
	var mergedBuf [smallBPE]int32
	n := len(piece)
	syms := symBuf[:n]
	ranks := rankBuf[:n-1]    // ranks[k]: rank of the pair (syms[k], syms[k+1])
	merged := mergedBuf[:n-1] // merged[k]: its merged id
	for k := 0; k < n; k++ {
		syms[k] = t.byteID[piece[k]]
	}
	for k := 0; k < n-1; k++ {
		ranks[k], merged[k] = t.rankOf(syms[k], syms[k+1])
	}
	for n > 1 {
		best := 0
		for k := 1; k < n-1; k++ {
			if ranks[k] < ranks[best] {
				best = k
			}
		}
		if ranks[best] == noMerge {
			break
		}
		syms[best] = merged[best]
		copy(syms[best+1:n-1], syms[best+2:n])
		copy(ranks[best:n-2], ranks[best+1:n-1])
		copy(merged[best:n-2], merged[best+1:n-1])
		n--
		syms, ranks, merged = syms[:n], ranks[:n-1], merged[:n-1]
		if best > 0 {
			ranks[best-1], merged[best-1] = t.rankOf(syms[best-1], syms[best])
		}
		if best < n-1 {
			ranks[best], merged[best] = t.rankOf(syms[best], syms[best+1])
		}
	}
	return append(out, syms...)
}

func (t *Tokenizer) rankOf(a, b int32) (uint32, int32) {
	r, m, ok := t.pairs.get(a, b)
	if !ok {
		return noMerge, 0
	}
	return r, m
}

// mergeCand is a candidate merge in bpeHeap: the pair starting at symbol pos, valid while the
// symbols there still hold left and right.
type mergeCand struct {
	rank        uint32
	pos         int32
	left, right int32 // ids the pair had when pushed
	merged      int32
}

type mergeHeap []mergeCand

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeCand)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bpeHeap is bpe for long pieces: symbols in a linked list, candidate merges in a min-heap
// ordered by (rank, position) — the algorithm of HF tokenizers' Word::merge_all.
func (t *Tokenizer) bpeHeap(piece string, out []int32) []int32 {
	n := len(piece)
	id := make([]int32, n)
	prev := make([]int32, n)
	next := make([]int32, n)
	for k := 0; k < n; k++ {
		id[k] = t.byteID[piece[k]]
		prev[k] = int32(k - 1)
		next[k] = int32(k + 1)
	}
	next[n-1] = -1
	h := make(mergeHeap, 0, n)
	for k := 0; k < n-1; k++ {
		if r, m, ok := t.pairs.get(id[k], id[k+1]); ok {
			h = append(h, mergeCand{rank: r, pos: int32(k), left: id[k], right: id[k+1], merged: m})
		}
	}
	heap.Init(&h)
	for h.Len() > 0 {
		c := heap.Pop(&h).(mergeCand)
		p := c.pos
		q := next[p]
		if id[p] != c.left || q < 0 || id[q] != c.right {
			continue // stale: one of the two symbols has changed since
		}
		id[p] = c.merged
		id[q] = -1
		nq := next[q]
		next[p] = nq
		if nq >= 0 {
			prev[nq] = p
		}
		if pp := prev[p]; pp >= 0 {
			if r, m, ok := t.pairs.get(id[pp], id[p]); ok {
				heap.Push(&h, mergeCand{rank: r, pos: pp, left: id[pp], right: id[p], merged: m})
			}
		}
		if nq >= 0 {
			if r, m, ok := t.pairs.get(id[p], id[nq]); ok {
				heap.Push(&h, mergeCand{rank: r, pos: p, left: id[p], right: id[nq], merged: m})
			}
		}
	}
	for k := int32(0); k >= 0; k = next[k] {
		out = append(out, id[k])
	}
	return out
}

// wordCache remembers the ids of frequent pre-tokens. It is bounded: once it holds maxEntries
// words it stops growing (like HF tokenizers' BPE cache), so memory stays fixed whatever the input.
type wordCache struct {
	mu sync.RWMutex
	// m maps a pre-token to its ids; guarded by mu.
	m map[string][]int32
}

const (
	cacheMaxEntries = 1 << 16
	cacheMaxWord    = 32 // bytes; longer pre-tokens are rare and not cached
)
