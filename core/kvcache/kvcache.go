// Package kvcache manages the paged latent KV cache of the engine: a pool of NumBlocks
// fixed-size blocks (BlockSize token positions each, in every layer), a block table per
// sequence, and a prefix index that keeps the full blocks of finished sequences so that
// a later request with the same prefix reuses them instead of prefilling them again.
//
// The pool only does the bookkeeping; the KV data itself lives in the model, which
// reads and writes positions through the block tables handed to it.
//
// # Sharing rules
//
// Only full blocks are shared, and a block is shared only after every one of its
// positions has been written. A sequence writes only positions at or after the end of
// its matched prefix, which is block-aligned, so it writes only blocks it owns
// exclusively. Match always leaves at least one token of the prompt to prefill, so
// that the forward pass returns logits for the last prompt token.
//
// # Prefix index
//
// Full blocks are keyed by a hash chain: h(0) = salt(tenant), h(i+1) = H(h(i), tokens
// of block i). The salt keeps tenants apart: a tenant can never hit (and so never time)
// another tenant's cached prompts. Every lookup also checks the stored parent hash and
// the block's tokens, so a hash collision cannot hand out a wrong block.
// Unreferenced cached blocks sit in an LRU list and are evicted, least recently used
// first, when the free list is empty. Blocks are released last to first, so a chain's
// tail is evicted before its head.
//
// A Pool is not safe for concurrent use: the engine's scheduler goroutine owns it.
package kvcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
)

// ErrNoSpace reports that not enough blocks are free or evictable.
var ErrNoSpace = errors.New("kvcache: out of KV blocks")

const none = -1

// Pool is the block allocator and prefix index over NumBlocks blocks of BlockSize
// positions.
type Pool struct {
	blockSize int
	numBlocks int
	seed      maphash.Seed

	refs []int32 // per block: number of tables holding it
	// per block, valid while cached[b]: chain hash, parent hash and tokens of the block.
	cached []bool
	hash   []uint64
	parent []uint64
	tokens []int32 // numBlocks*blockSize

	index map[uint64]int32 // chain hash -> cached block
	free  []int32          // blocks neither referenced nor cached (a stack)
	// LRU of cached blocks with refs == 0: head = most recently released.
	prev, next []int32
	head, tail int32
	lruLen     int

	hashBuf []byte
}

// New returns a pool of numBlocks blocks of blockSize positions, all free.
func New(numBlocks, blockSize int) (*Pool, error) {
	if numBlocks <= 0 || blockSize <= 0 {
		return nil, fmt.Errorf("kvcache: need positive block count and size, got %d blocks of %d", numBlocks, blockSize)
	}
	p := &Pool{
		blockSize: blockSize,
		numBlocks: numBlocks,
		seed:      maphash.MakeSeed(),
		refs:      make([]int32, numBlocks),
		cached:    make([]bool, numBlocks),
		hash:      make([]uint64, numBlocks),
		parent:    make([]uint64, numBlocks),
		tokens:    make([]int32, numBlocks*blockSize),
		index:     map[uint64]int32{},
		free:      make([]int32, numBlocks),
		prev:      make([]int32, numBlocks),
		next:      make([]int32, numBlocks),
		head:      none,
		tail:      none,
	}
	for i := range p.free {
		// pop from the end gives block 0 first
		p.free[i] = int32(numBlocks - 1 - i)
	}
	return p, nil
}

// BlockSize returns the number of token positions per block.
func (p *Pool) BlockSize() int { return p.blockSize }

// NumBlocks returns the number of blocks in the pool.
func (p *Pool) NumBlocks() int { return p.numBlocks }

// Stats is a snapshot of the pool's block accounting. Used + Cached + Free = NumBlocks.
type Stats struct {
	// Used counts blocks referenced by at least one table.
	Used int
	// Cached counts unreferenced blocks kept for prefix reuse (evictable).
	Cached int
	// Free counts blocks holding nothing.
	Free int
}

// Stats returns the current block accounting.
func (p *Pool) Stats() Stats {
	return Stats{Used: p.numBlocks - len(p.free) - p.lruLen, Cached: p.lruLen, Free: len(p.free)}
}

// Available returns how many blocks an allocation can obtain now (free + evictable).
func (p *Pool) Available() int { return len(p.free) + p.lruLen }

// BlocksFor returns the number of blocks that cover n positions.
func (p *Pool) BlocksFor(n int) int { return (n + p.blockSize - 1) / p.blockSize }

// Table is one sequence's block table: Blocks[i] holds positions
// [i*BlockSize, (i+1)*BlockSize). The zero value is not usable; get one from NewTable.
type Table struct {
	// Blocks is the block table to hand to the model. Do not modify it.
	Blocks []int32
	salt   uint64
	// chain hashes of the leading full blocks that were matched or committed.
	hashes []uint64
}

// NewTable returns an empty block table whose prefix keys are salted with tenant.
func (p *Pool) NewTable(tenant string) *Table {
	return &Table{salt: maphash.String(p.seed, "dsgate-tenant\x00"+tenant)}
}

// chain returns H(parent, toks).
func (p *Pool) chain(parent uint64, toks []int32) uint64 {
	b := binary.LittleEndian.AppendUint64(p.hashBuf[:0], parent)
	for _, t := range toks {
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
	}
	p.hashBuf = b
	return maphash.Bytes(p.seed, b)
}

func (p *Pool) blockTokens(b int32) []int32 {
	return p.tokens[int(b)*p.blockSize : (int(b)+1)*p.blockSize]
}

// Match looks up the longest cached prefix of tokens on an empty table t, takes a
// reference on each matched block and appends them to t.Blocks. It returns the number
// of positions covered (a multiple of BlockSize, at most len(tokens)-1, so at least one
// token is left to prefill).
func (p *Pool) Match(t *Table, tokens []int32) int {
	if len(t.Blocks) != 0 {
		return 0
	}
	h := t.salt
	maxBlocks := (len(tokens) - 1) / p.blockSize
	for i := 0; i < maxBlocks; i++ {
		toks := tokens[i*p.blockSize : (i+1)*p.blockSize]
		nh := p.chain(h, toks)
		b, ok := p.index[nh]
		if !ok || p.parent[b] != h || !slices.Equal(p.blockTokens(b), toks) {
			break
		}
		if p.refs[b] == 0 {
			p.lruRemove(b)
		}
		p.refs[b]++
		t.Blocks = append(t.Blocks, b)
		t.hashes = append(t.hashes, nh)
		h = nh
	}
	return len(t.Blocks) * p.blockSize
}

// Reserve grows t so that it covers n positions, allocating fresh blocks (evicting
// least recently used cached blocks if the free list runs out). It is all or nothing:
// on ErrNoSpace t is unchanged.
func (p *Pool) Reserve(t *Table, n int) error {
	need := p.BlocksFor(n) - len(t.Blocks)
	if need <= 0 {
		return nil
	}
	if need > p.Available() {
		return fmt.Errorf("%w: need %d more blocks, %d available", ErrNoSpace, need, p.Available())
	}
	for range need {
		var b int32
		if len(p.free) > 0 {
			b = p.free[len(p.free)-1]
			p.free = p.free[:len(p.free)-1]
		} else {
			b = p.tail
			p.lruRemove(b)
			p.uncache(b)
		}
		p.refs[b] = 1
		t.Blocks = append(t.Blocks, b)
	}
	return nil
}

// Commit adds to the prefix index every full block of t that holds only positions
// below written, whose tokens are tokens[:written]. A block whose prefix is already
// indexed (another sequence computed the same prefix) stays private to t.
func (p *Pool) Commit(t *Table, tokens []int32, written int) {
	for i := len(t.hashes); (i+1)*p.blockSize <= written && i < len(t.Blocks); i++ {
		parent := t.salt
		if i > 0 {
			parent = t.hashes[i-1]
		}
		toks := tokens[i*p.blockSize : (i+1)*p.blockSize]
		h := p.chain(parent, toks)
		t.hashes = append(t.hashes, h)
		b := t.Blocks[i]
		if _, dup := p.index[h]; dup || p.cached[b] {
			continue
		}
		p.index[h] = b
		p.cached[b] = true
		p.hash[b] = h
		p.parent[b] = parent
		copy(p.blockTokens(b), toks)
	}
}

// Release drops t's reference on each of its blocks, last to first, and empties t. A
// block nobody references goes to the LRU list if it is indexed, else to the free list.
func (p *Pool) Release(t *Table) {
	for i := len(t.Blocks) - 1; i >= 0; i-- {
		b := t.Blocks[i]
		p.refs[b]--
		switch {
		case p.refs[b] < 0:
			panic(fmt.Sprintf("kvcache: block %d released more often than referenced", b))
		case p.refs[b] > 0:
		case p.cached[b]:
			p.lruPush(b)
		default:
			p.free = append(p.free, b)
		}
	}
	t.Blocks, t.hashes = t.Blocks[:0], t.hashes[:0]
}

func (p *Pool) uncache(b int32) {
	delete(p.index, p.hash[b])
	p.cached[b] = false
}

func (p *Pool) lruPush(b int32) {
	p.prev[b], p.next[b] = none, p.head
	if p.head != none {
		p.prev[p.head] = b
	}
	p.head = b
	if p.tail == none {
		p.tail = b
	}
	p.lruLen++
}

func (p *Pool) lruRemove(b int32) {
	if p.prev[b] != none {
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] != none {
		p.prev[p.next[b]] = p.prev[b]
	} else {
		p.tail = p.prev[b]
	}
	p.prev[b], p.next[b] = none, none
	p.lruLen--
}

// Flush evicts every unreferenced cached block (they become free).
func (p *Pool) Flush() {
	for p.tail != none {
		b := p.tail
		p.lruRemove(b)
		p.uncache(b)
		p.free = append(p.free, b)
	}
}
