package tokenizer

import "sync"

// pairTable maps a pair of adjacent token ids to its merge: an open-addressing hash table
// (linear probing) keyed by left<<32|right, read-only after Load.
type pairTable struct {
	slots []pairSlot
	shift uint
}

type pairSlot struct {
	key uint64 // left<<32 | right; emptyKey marks a free slot
	val uint64 // rank<<32 | merged id
}

const emptyKey = ^uint64(0)

func newPairTable(n int) *pairTable {
	size := 1
	bits := uint(0)
	for size < 2*n {
		size <<= 1
		bits++
	}
	p := &pairTable{slots: make([]pairSlot, size), shift: 64 - bits}
	for i := range p.slots {
		p.slots[i].key = emptyKey
	}
	return p
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (p *pairTable) slot(k uint64) uint64 { return (k * 0x9E3779B97F4A7C15) >> p.shift }

// put inserts a merge; the first insertion of a pair wins (a repeated merge keeps its lowest rank).
func (p *pairTable) put(a, b int32, rank uint32, merged int32) {
	k := pairKey(a, b)
	mask := uint64(len(p.slots) - 1)
	for i := p.slot(k); ; i = (i + 1) & mask {
		switch p.slots[i].key {
		case emptyKey:
			p.slots[i] = pairSlot{k, uint64(rank)<<32 | uint64(uint32(merged))}
			return
		case k:
			return
		}
	}
}

// get returns the merge rank and merged id of a pair; ok is false when the pair never merges.
func (p *pairTable) get(a, b int32) (rank uint32, merged int32, ok bool) {
	k := pairKey(a, b)
	mask := uint64(len(p.slots) - 1)
	for i := p.slot(k); ; i = (i + 1) & mask {
		switch p.slots[i].key {
		case k:
			v := p.slots[i].val
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

// bpeHeap is bpe for long pieces: symbols in a linked list, candidate merges in a min-heap
// ordered by (rank, position) — the algorithm of HF tokenizers' Word::merge_all. A heap entry is
// rank<<32|pos; it is stale when the pair now at pos has another rank (symbols only grow, and a
// rank names one pair), which is the check HF makes.
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
	h := make(minHeap, 0, n)
	for k := 0; k < n-1; k++ {
		if r, _, ok := t.pairs.get(id[k], id[k+1]); ok {
			h = append(h, uint64(r)<<32|uint64(k))
		}
	}
	h.init()
	for len(h) > 0 {
		top := h.pop()
		rank, p := uint32(top>>32), int32(uint32(top))
		q := next[p]
		if id[p] < 0 || q < 0 {
			continue
		}
		r, merged, ok := t.pairs.get(id[p], id[q])
		if !ok || r != rank {
			continue // stale: one of the two symbols has changed since
		}
		id[p] = merged
		id[q] = -1
		nq := next[q]
		next[p] = nq
		if nq >= 0 {
			prev[nq] = p
		}
		if pp := prev[p]; pp >= 0 {
			if r, _, ok := t.pairs.get(id[pp], id[p]); ok {
				h.push(uint64(r)<<32 | uint64(pp))
			}
		}
		if nq >= 0 {
			if r, _, ok := t.pairs.get(id[p], id[nq]); ok {
				h.push(uint64(r)<<32 | uint64(p))
			}
		}
	}
	for k := int32(0); k >= 0; k = next[k] {
		out = append(out, id[k])
	}
	return out
}

// minHeap is a binary min-heap of uint64 keys.
type minHeap []uint64

func (h minHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *minHeap) push(x uint64) {
	*h = append(*h, x)
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if s[parent] <= s[i] {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

func (h *minHeap) pop() uint64 {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	*h = s[:last]
	h.down(0)
	return top
}

func (h minHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r] < h[l] {
			m = r
		}
		if h[i] <= h[m] {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
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
