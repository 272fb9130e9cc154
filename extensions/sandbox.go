package extensions

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// seededRand is the instance's random source (WASI random_get). It starts from a fixed seed, so
// instantiation is reproducible, and is re-seeded with the request's seed when the instance is
// handed to a request.
type seededRand struct {
	mu  sync.Mutex // guards rng; Read runs on the guest's calling goroutine, Seed on the host's
	rng *rand.ChaCha8
}

func newSeededRand(seed uint64) *seededRand {
	r := &seededRand{}
	r.Seed(seed)
	return r
}

// Seed restarts the stream from seed.
func (r *seededRand) Seed(seed uint64) {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	copy(key[8:], "dsgate-extensions-random-source")
	r.mu.Lock()
	r.rng = rand.NewChaCha8(key)
	r.mu.Unlock()
}

// Read fills p with the next bytes of the stream; it never fails.
func (r *seededRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.Read(p)
}

// fakeClock is the guest's only notion of time: the wall clock is fixed at 2025-01-01 UTC and
// the monotonic clock advances 1 µs per reading; sleeping returns at once (the per-call deadline,
// measured on the host's real clock, still bounds a guest that sleeps in a loop).
type fakeClock struct {
	mu   sync.Mutex // guards mono
	mono int64
}

var fixedWalltime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) walltime() (int64, int32) { return fixedWalltime.Unix(), 0 }

func (c *fakeClock) nanotime() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mono += int64(time.Microsecond)
	return c.mono
}

func (c *fakeClock) nanosleep(ns int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ns > 0 {
		c.mono += ns
	}
}

// tailBuffer keeps the last max bytes written to it (a guest's stderr, e.g. a Go panic).
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// suffix renders the captured stderr for an error message ("" when empty).
func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(t.b), "?"))
	if s == "" {
		return ""
	}
	return " (stderr: " + strings.Join(strings.Fields(s), " ") + ")"
}
