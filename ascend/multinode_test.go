//go:build cgo

package ascend

import (
	"sync"
	"testing"
)

func TestRootInfoGroup(t *testing.T) {
	opt := Options{CANNHome: emuHome}
	root, err := NewRootInfo(opt)
	if err != nil {
		t.Fatal(err)
	}
	const world = 3
	ranks := make([]*Backend, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opt
			o.Devices = []int{r}
			ranks[r], errs[r] = NewRank(o, r, world, root)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	outs := make([][]float32, world)
	for r, b := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := tensor(t, b, 1, 2, []float32{float32(r), 1})
			if err := b.AllReduce(x); err != nil {
				t.Error(err)
				return
			}
			outs[r] = read(t, b, x)
		}()
	}
	wg.Wait()
	for r, o := range outs {
		if len(o) != 2 || o[0] != 3 || o[1] != 3 {
			t.Errorf("rank %d got %v, want [3 3]", r, o)
		}
	}
	for _, b := range ranks {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}
}
