package backend

import (
	"fmt"
	"sync"
)

// Comm is a shared-memory communicator for the goroutine ranks of one process: the
// all-reduce and all-gather of Reference and the CPU backend. Each rank calls the
// collectives from its own goroutine; they block until every rank has arrived. If one
// rank fails, Abort wakes the others with ErrAborted; Reset makes the Comm usable again
// once every rank has returned.
type Comm struct {
	world int

	// mu guards everything below.
	mu      sync.Mutex
	cond    *sync.Cond
	arrived int
	gen     uint64
	abort   error
	slots   [][]float32
	result  []float32
}

// NewComm returns a communicator for world ranks.
func NewComm(world int) *Comm {
	c := &Comm{world: world, slots: make([][]float32, world)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// World returns the number of ranks.
func (c *Comm) World() int { return c.world }

// Abort makes every waiting and future collective return an error wrapping ErrAborted
// and cause, until Reset.
func (c *Comm) Abort(cause error) {
	c.mu.Lock()
	if c.abort == nil {
		c.abort = fmt.Errorf("%w: %v", ErrAborted, cause)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Reset clears an abort and the barrier state; call it only when no rank is inside a
// collective.
func (c *Comm) Reset() {
	c.mu.Lock()
	c.abort = nil
	c.arrived = 0
	c.gen++
	c.mu.Unlock()
}

// barrier blocks until all ranks arrive; c.mu must be held.
func (c *Comm) barrierLocked() error {
	if c.abort != nil {
		return c.abort
	}
	gen := c.gen
	c.arrived++
	if c.arrived == c.world {
		c.arrived = 0
		c.gen++
		c.cond.Broadcast()
		return nil
	}
	for gen == c.gen && c.abort == nil {
		c.cond.Wait()
	}
	if gen == c.gen {
		return c.abort
	}
	return nil
}

func (c *Comm) barrier() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.barrierLocked()
}

// AllReduce sums data (the same length on every rank) over the ranks in rank order;
// every rank ends with the identical sum. Rank r computes the elements of chunk r.
func (c *Comm) AllReduce(rank int, data []float32) error {
	if c.world == 1 {
		return nil
	}
	c.mu.Lock()
	c.slots[rank] = data
	if rank == 0 && len(c.result) < len(data) {
		c.result = make([]float32, len(data))
	}
	err := c.barrierLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for r := range c.slots {
		if len(c.slots[r]) != len(data) {
			c.Abort(fmt.Errorf("all-reduce: rank %d has %d values, rank %d has %d", r, len(c.slots[r]), rank, len(data)))
			return c.barrier()
		}
	}
	n := len(data)
	lo, hi := rank*n/c.world, (rank+1)*n/c.world
	res := c.result[lo:hi]
	copy(res, c.slots[0][lo:hi])
	for r := 1; r < c.world; r++ {
		s := c.slots[r][lo:hi]
		for i := range res {
			res[i] += s[i]
		}
	}
	if err := c.barrier(); err != nil {
		return err
	}
	copy(data, c.result[:n])
	return c.barrier()
}

// AllGather copies every rank's part (parts must have equal length) into out, in rank
// order: out = part_0 ‖ part_1 ‖ … .
func (c *Comm) AllGather(rank int, part, out []float32) error {
	if len(out) != len(part)*c.world {
		return fmt.Errorf("all-gather: out has %d values, want %d", len(out), len(part)*c.world)
	}
	if c.world == 1 {
		copy(out, part)
		return nil
	}
	c.mu.Lock()
	c.slots[rank] = part
	err := c.barrierLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for r := range c.slots {
		if len(c.slots[r]) != len(part) {
			c.Abort(fmt.Errorf("all-gather: rank %d has %d values, rank %d has %d", r, len(c.slots[r]), rank, len(part)))
			return c.barrier()
		}
		copy(out[r*len(part):], c.slots[r])
	}
	return c.barrier()
}
