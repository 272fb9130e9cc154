package sessions

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentTurns: many goroutines append turns to a few sessions at once, each turn
// read-modify-write with the expected turn count and retried on ErrConflict. Every session
// ends with exactly the turns sent to it, each a clean user/assistant pair, every writer's
// turns in the order it committed them, and no turn twice.
func TestConcurrentTurns(t *testing.T) {
	const sessionsN, writers, turnsEach = 3, 12, 6
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e := b.open(t, Options{})
			ctx := t.Context()
			var sess []string
			for range sessionsN {
				s, err := e.store.Create(ctx, "alice", "sys", nil)
				wantErr(t, "create", err, nil)
				sess = append(sess, s.ID)
			}
			var conflicts atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, writers*turnsEach*2)
			for w := range writers {
				wg.Go(func() {
					id := sess[w%sessionsN]
					for k := range turnsEach {
						tag := fmt.Sprintf("w%d-k%d", w, k)
						for {
							s, err := e.store.Get(ctx, "alice", id)
							if err != nil {
								errs <- err
								return
							}
							err = e.store.AppendTurn(ctx, "alice", id, len(s.Turns), mkTurn(tag, int32(w*100+k)))
							if errors.Is(err, ErrConflict) {
								conflicts.Add(1)
								continue
							}
							if err != nil {
								errs <- err
								return
							}
							break
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i, id := range sess {
				s, err := e.store.Get(ctx, "alice", id)
				wantErr(t, "get", err, nil)
				checkInterleaving(t, s, writers/sessionsN*turnsEach, func(w int) bool { return w%sessionsN == i })
			}
			t.Logf("%d conflicts retried", conflicts.Load())
		})
	}
}

// checkInterleaving fails unless s has n turns, each a user/assistant pair tagged
// "w<W>-k<K>" for a writer W that belongs to it, each writer's K increasing by one.
func checkInterleaving(t *testing.T, s *Session, n int, belongs func(w int) bool) {
	t.Helper()
	if len(s.Turns) != n {
		t.Fatalf("session %s: %d turns, want %d", s.ID, len(s.Turns), n)
	}
	next := map[int]int{}
	for i, tr := range s.Turns {
		if len(tr.Messages) != 2 || tr.Messages[0].Role != "user" || tr.Messages[1].Role != "assistant" {
			t.Fatalf("turn %d is not a user/assistant pair: %+v", i, tr.Messages)
		}
		tag := strings.TrimPrefix(tr.Messages[0].Content, "q ")
		if tr.Messages[1].Content != "a "+tag {
			t.Fatalf("turn %d: reply %q to %q", i, tr.Messages[1].Content, tag)
		}
		var w, k int
		if _, err := fmt.Sscanf(tag, "w%d-k%d", &w, &k); err != nil || !belongs(w) {
			t.Fatalf("turn %d: tag %q", i, tag)
		}
		if k != next[w] {
			t.Fatalf("turn %d: writer %d turn %d, want %d (lost, duplicated or reordered)", i, w, k, next[w])
		}
		next[w]++
		if want := int32(w*100 + k); !slices.Equal(tr.PromptIDs, []int32{0, want, want + 1}) {
			t.Fatalf("turn %d: prompt ids %v of another turn", i, tr.PromptIDs)
		}
	}
}

// TestConcurrentAcquire: writers that take the busy mark before their turn never overlap on
// a session and never see a conflict, as the gateway runs turns.
func TestConcurrentAcquire(t *testing.T) {
	const sessionsN, writers, turnsEach = 2, 8, 4
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e := b.open(t, Options{})
			ctx := t.Context()
			var sess []string
			for range sessionsN {
				s, _ := e.store.Create(ctx, "alice", "", nil)
				sess = append(sess, s.ID)
			}
			inside := make([]atomic.Int32, sessionsN)
			var busy atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, writers*turnsEach*2)
			for w := range writers {
				wg.Go(func() {
					si := w % sessionsN
					for k := 0; k < turnsEach; {
						release, err := e.store.Acquire(ctx, "alice", sess[si])
						if errors.Is(err, ErrBusy) {
							busy.Add(1)
							time.Sleep(time.Millisecond)
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						if n := inside[si].Add(1); n != 1 {
							errs <- fmt.Errorf("%d holders of session %d at once", n, si)
						}
						s, err := e.store.Get(ctx, "alice", sess[si])
						if err == nil {
							err = e.store.AppendTurn(ctx, "alice", sess[si], len(s.Turns), mkTurn("w"+strconv.Itoa(w)+"-k"+strconv.Itoa(k), int32(w*100+k)))
						}
						inside[si].Add(-1)
						release()
						if err != nil {
							errs <- fmt.Errorf("turn under the busy mark: %w", err)
							return
						}
						k++
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i, id := range sess {
				s, _ := e.store.Get(ctx, "alice", id)
				checkInterleaving(t, s, writers/sessionsN*turnsEach, func(w int) bool { return w%sessionsN == i })
			}
			t.Logf("%d busy answers retried", busy.Load())
		})
	}
}
